//! Bearer tokens: created, listed and revoked through the API, stored hashed in SQLite, and
//! checked against an in-memory table on every request (a revocation takes effect at once).
//!
//! A token reads `stw_<id>_<secret>`: the id finds the entry, the secret's SHA-256 is compared in
//! constant time. The secret itself is never stored, logged or returned again after creation.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use anyhow::Context as _;
use base64::Engine as _;
use parking_lot::RwLock;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row as _, SqlitePool};
use subtle::ConstantTimeEq;

use super::Role;
use crate::error::ApiError;

#[derive(Clone, Debug)]
struct Entry {
    name: String,
    role: Role,
    secret_hash: [u8; 32],
    created_at: i64,
    expires_at: Option<i64>,
    revoked: bool,
}

/// What the API shows about a token (never its secret).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: String,
    pub created: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    pub revoked: bool,
}

/// The caller a request was authenticated as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub token_id: String,
    pub name: String,
    pub role: Role,
    /// Unix seconds after which the token no longer works (long requests such as watches end
    /// then too).
    pub expires_at: Option<i64>,
}

pub struct Tokens {
    db: SqlitePool,
    entries: RwLock<HashMap<String, Entry>>,
    /// Bumped on every revocation: long requests (watches) re-check their token then.
    revocations: tokio::sync::watch::Sender<u64>,
}

fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn random(bytes: usize) -> Vec<u8> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the operating system's random source works");
    buf
}

fn token_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    random(10)
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn time(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl Tokens {
    /// Opens the token table (in the store's database file; migrations already applied).
    pub async fn open(db_file: &Path) -> anyhow::Result<Tokens> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", db_file.display()))?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(5));
        let db = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .context("opening the token table")?;
        let rows = sqlx::query(
            "SELECT id, name, role, secret_hash, created_at, expires_at, revoked_at FROM tokens",
        )
        .fetch_all(&db)
        .await?;
        let mut entries = HashMap::new();
        for r in rows {
            let role: String = r.get(2);
            let Ok(role) = role.parse::<Role>() else {
                tracing::warn!(
                    id = r.get::<String, _>(0),
                    "skipping a token with an unknown role"
                );
                continue;
            };
            let stored: Vec<u8> = r.get(3);
            let mut secret_hash = [0u8; 32];
            if stored.len() != 32 {
                continue;
            }
            secret_hash.copy_from_slice(&stored);
            entries.insert(
                r.get::<String, _>(0),
                Entry {
                    name: r.get(1),
                    role,
                    secret_hash,
                    created_at: r.get(4),
                    expires_at: r.get(5),
                    revoked: r.get::<Option<i64>, _>(6).is_some(),
                },
            );
        }
        Ok(Tokens {
            db,
            entries: RwLock::new(entries),
            revocations: tokio::sync::watch::channel(0).0,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.read().is_empty()
    }

    /// Checks an `Authorization` header value. Every failure reads the same to the caller.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Identity, ApiError> {
        let unauthorized = || ApiError::unauthorized("Unauthorized");
        let token = header
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(unauthorized)?;
        let rest = token.strip_prefix("stw_").ok_or_else(unauthorized)?;
        let (id, secret) = rest.split_once('_').ok_or_else(unauthorized)?;
        let entries = self.entries.read();
        let entry = entries.get(id).ok_or_else(unauthorized)?;
        let matches: bool = hash(secret).ct_eq(&entry.secret_hash).into();
        if !matches || entry.revoked || entry.expires_at.is_some_and(|e| e <= now()) {
            return Err(unauthorized());
        }
        Ok(Identity {
            token_id: id.to_string(),
            name: entry.name.clone(),
            role: entry.role.clone(),
            expires_at: entry.expires_at,
        })
    }

    /// Creates a token; returns its description and the token itself (shown only now).
    pub async fn create(
        &self,
        name: &str,
        role: Role,
        ttl_seconds: Option<i64>,
    ) -> anyhow::Result<(TokenInfo, String)> {
        let id = token_id();
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random(32));
        let created_at = now();
        let expires_at = match ttl_seconds {
            None => None,
            Some(t) => Some(created_at.checked_add(t).filter(|_| t > 0).ok_or_else(|| {
                anyhow::anyhow!("a token's lifetime must be positive and finite")
            })?),
        };
        let secret_hash = hash(&secret);
        sqlx::query("INSERT INTO tokens (id, name, role, secret_hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(&id)
            .bind(name)
            .bind(role.to_string())
            .bind(secret_hash.as_slice())
            .bind(created_at)
            .bind(expires_at)
            .execute(&self.db)
            .await?;
        let entry = Entry {
            name: name.to_string(),
            role,
            secret_hash,
            created_at,
            expires_at,
            revoked: false,
        };
        let info = info(&id, &entry);
        self.entries.write().insert(id.clone(), entry);
        Ok((info, format!("stw_{id}_{secret}")))
    }

    /// Whether the token `id` still works (exists, not revoked, not expired).
    pub fn is_valid(&self, id: &str) -> bool {
        self.entries
            .read()
            .get(id)
            .is_some_and(|e| !e.revoked && e.expires_at.is_none_or(|x| x > now()))
    }

    /// Changes whenever a token is revoked.
    pub fn revocations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revocations.subscribe()
    }

    pub fn list(&self) -> Vec<TokenInfo> {
        let mut list: Vec<TokenInfo> = self
            .entries
            .read()
            .iter()
            .map(|(id, e)| info(id, e))
            .collect();
        list.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        list
    }

    pub fn get(&self, id: &str) -> Option<TokenInfo> {
        self.entries.read().get(id).map(|e| info(id, e))
    }

    /// Revokes a token at once. `false` if there is no such token.
    pub async fn revoke(&self, id: &str) -> anyhow::Result<bool> {
        if !self.entries.read().contains_key(id) {
            return Ok(false);
        }
        // Refuse first in memory, so no request gets through while the row is written.
        if let Some(e) = self.entries.write().get_mut(id) {
            e.revoked = true;
        }
        self.revocations.send_modify(|n| *n += 1);
        sqlx::query("UPDATE tokens SET revoked_at = ? WHERE id = ?")
            .bind(now())
            .bind(id)
            .execute(&self.db)
            .await?;
        Ok(true)
    }
}

fn info(id: &str, e: &Entry) -> TokenInfo {
    TokenInfo {
        id: id.to_string(),
        name: e.name.clone(),
        role: e.role.to_string(),
        created: time(e.created_at),
        expires: e.expires_at.map(time),
        revoked: e.revoked,
    }
}
