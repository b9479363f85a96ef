//! Bearer tokens: created, listed and revoked through the API, stored hashed in the store's
//! database (SQLite, or PostgreSQL shared by replicas), and checked against an in-memory table
//! on every request (a revocation takes effect at once).
//!
//! With replicas, each replica's table follows the database: a token made or revoked on one
//! replica is announced (`NOTIFY stowage_tokens`) and every replica re-reads the table, and
//! re-reads it every few seconds anyway, in case a notification was lost with its connection.
//! A revocation is synchronous across replicas: each change bumps a shared epoch, each replica
//! records the epoch its table has reached (`token_replicas`, also a heartbeat), and a revoke
//! answers only once every live replica has reached it, so no replica lets the token through
//! afterwards.
//!
//! A token reads `stw_<id>_<secret>`: the id finds the entry, the secret's SHA-256 is compared in
//! constant time. The secret itself is never stored, logged or returned again after creation.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context as _;
use base64::Engine as _;
use parking_lot::RwLock;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::SqlitePool;
use sqlx::postgres::{PgListener, PgPool};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
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

/// The channel token changes are announced on, with replicas.
const CHANNEL: &str = "stowage_tokens";
/// How often a replica re-reads the token table when no announcement came (and so says it is
/// alive).
const REREAD_EVERY: std::time::Duration = std::time::Duration::from_secs(3);
/// A replica that has not re-read the table for this long is gone (killed, cut off from the
/// database, where it can serve nothing that needs it): a revocation does not wait for it.
/// Past this, a replica also refuses every token itself: cut off from the database, it cannot
/// know what was revoked.
const REPLICA_GONE_AFTER: i64 = 4 * REREAD_EVERY.as_secs() as i64;
/// The longest a revocation waits for the live replicas. Each re-reads within `REREAD_EVERY`
/// even when an announcement is lost, so only one that dies meanwhile makes it wait this long.
const REVOKE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

pub struct Tokens {
    db: Db,
    entries: Arc<RwLock<HashMap<String, Entry>>>,
    /// Bumped on every revocation: long requests (watches) re-check their token then.
    revocations: Arc<tokio::sync::watch::Sender<u64>>,
    follower: Option<tokio::task::AbortHandle>,
    /// This process's name in `token_replicas` (with replicas).
    replica: String,
    /// When the shared table was last read (with replicas).
    synced: Option<Arc<parking_lot::Mutex<std::time::Instant>>>,
}

impl Drop for Tokens {
    fn drop(&mut self) {
        if let Some(f) = &self.follower {
            f.abort();
        }
    }
}

const SELECT_ALL: &str =
    "SELECT id, name, role, secret_hash, created_at, expires_at, revoked_at FROM tokens";

/// A row of the token table: id, name, role, secret hash, created, expires, revoked.
type RawRow = (
    String,
    String,
    String,
    Vec<u8>,
    i64,
    Option<i64>,
    Option<i64>,
);

async fn read_all(db: &Db) -> anyhow::Result<HashMap<String, Entry>> {
    let rows: Vec<RawRow> = match db {
        Db::Sqlite(pool) => sqlx::query_as(SELECT_ALL).fetch_all(pool).await?,
        Db::Postgres(pool) => return Ok(read_shared(pool).await?.0),
    };
    Ok(entries_from(rows))
}

/// The shared table and the epoch it is at, from one snapshot (a revocation committed after
/// the snapshot has a later epoch).
async fn read_shared(pool: &PgPool) -> anyhow::Result<(HashMap<String, Entry>, i64)> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let rows: Vec<RawRow> = sqlx::query_as(SELECT_ALL).fetch_all(&mut *tx).await?;
    let epoch: i64 = sqlx::query_scalar("SELECT epoch FROM token_epoch WHERE id = 1")
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((entries_from(rows), epoch))
}

/// Records that this replica's table has reached `epoch` (and that it is alive).
async fn reached(pool: &PgPool, replica: &str, epoch: i64) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO token_replicas (replica, epoch, seen_at) \
         VALUES ($1, $2, EXTRACT(EPOCH FROM clock_timestamp())::BIGINT) \
         ON CONFLICT (replica) DO UPDATE SET epoch = GREATEST(token_replicas.epoch, EXCLUDED.epoch), seen_at = EXCLUDED.seen_at",
    )
    .bind(replica)
    .bind(epoch)
    .execute(pool)
    .await?;
    Ok(())
}

fn entries_from(rows: Vec<RawRow>) -> HashMap<String, Entry> {
    let mut entries = HashMap::new();
    for (id, name, role, stored, created_at, expires_at, revoked_at) in rows {
        let Ok(role) = role.parse::<Role>() else {
            tracing::warn!(id, "skipping a token with an unknown role");
            continue;
        };
        let Ok(secret_hash) = <[u8; 32]>::try_from(stored.as_slice()) else {
            continue;
        };
        entries.insert(
            id,
            Entry {
                name,
                role,
                secret_hash,
                created_at,
                expires_at,
                revoked: revoked_at.is_some(),
            },
        );
    }
    entries
}

fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn random(bytes: usize) -> Vec<u8> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the operating system's random source works");
    buf
}

/// A token id: `ID_LEN` characters of `ID_ALPHABET`.
const ID_ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
const ID_LEN: usize = 10;

fn token_id() -> String {
    random(ID_LEN)
        .iter()
        .map(|b| ID_ALPHABET[*b as usize % ID_ALPHABET.len()] as char)
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
            .busy_timeout(std::time::Duration::from_secs(5))
            // See the store's connection: no stale process memory in the pages written.
            .pragma("secure_delete", "FAST");
        let db = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .context("opening the token table")?;
        let db = Db::Sqlite(db);
        let entries = read_all(&db).await?;
        Ok(Tokens {
            db,
            entries: Arc::new(RwLock::new(entries)),
            revocations: Arc::new(tokio::sync::watch::channel(0).0),
            follower: None,
            replica: String::new(),
            synced: None,
        })
    }

    /// Opens the token table shared by replicas (migrations already applied), and follows
    /// the changes other replicas make to it.
    pub async fn open_shared(pool: PgPool) -> anyhow::Result<Tokens> {
        let mut listener = PgListener::connect_with(&pool)
            .await
            .context("listening for token changes")?;
        listener.listen(CHANNEL).await?;
        let replica = uuid::Uuid::new_v4().to_string();
        let (table, epoch) = read_shared(&pool).await?;
        reached(&pool, &replica, epoch).await?;
        // Replicas gone for an hour are forgotten.
        sqlx::query("DELETE FROM token_replicas WHERE seen_at < $1")
            .bind(now() - 3600)
            .execute(&pool)
            .await?;
        let entries = Arc::new(RwLock::new(table));
        let revocations = Arc::new(tokio::sync::watch::channel(0).0);
        let synced = Arc::new(parking_lot::Mutex::new(std::time::Instant::now()));
        let follower = tokio::spawn(follow(
            pool.clone(),
            replica.clone(),
            listener,
            entries.clone(),
            revocations.clone(),
            synced.clone(),
        ))
        .abort_handle();
        Ok(Tokens {
            db: Db::Postgres(pool),
            entries,
            revocations,
            follower: Some(follower),
            replica,
            synced: Some(synced),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.read().is_empty()
    }

    /// Like [`Tokens::authenticate`], but a token this replica does not know yet (made a
    /// moment ago on another replica, its announcement still on the way) is looked up in the
    /// shared table before it is refused.
    pub async fn authenticate_current(&self, header: Option<&str>) -> Result<Identity, ApiError> {
        let first = self.authenticate(header);
        let Db::Postgres(pool) = &self.db else {
            return first;
        };
        let id = header
            .and_then(|h| h.split_whitespace().nth(1))
            .and_then(|t| t.strip_prefix("stw_"))
            .and_then(|rest| rest.split_once('_'))
            .map(|(id, _)| id.to_string());
        // Only a well-formed id this replica does not know costs a query: garbage sent by
        // anyone without a token is refused from memory, as before.
        let well_formed =
            |id: &String| id.len() == ID_LEN && id.bytes().all(|b| ID_ALPHABET.contains(&b));
        let Some(id) = id.filter(|id| {
            first.is_err() && well_formed(id) && !self.entries.read().contains_key(id)
        }) else {
            return first;
        };
        let row: Option<RawRow> = sqlx::query_as(
            "SELECT id, name, role, secret_hash, created_at, expires_at, revoked_at FROM tokens WHERE id = $1",
        )
        .bind(&id)
        .fetch_optional(pool)
        .await
        .ok()
        .flatten();
        let Some(row) = row else {
            return first;
        };
        let found = entries_from(vec![row]);
        // Never over what the table already says: a revocation read meanwhile stands.
        let mut entries = self.entries.write();
        for (id, entry) in found {
            entries.entry(id).or_insert(entry);
        }
        drop(entries);
        self.authenticate(header)
    }

    /// Checks an `Authorization` header value. Every failure reads the same to the caller.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Identity, ApiError> {
        let unauthorized = || ApiError::unauthorized("Unauthorized");
        // A replica that has not read the shared table for a while may have missed a
        // revocation (and the others no longer wait for it): it refuses everyone.
        if let Some(synced) = &self.synced
            && synced.lock().elapsed().as_secs() as i64 > REPLICA_GONE_AFTER
        {
            return Err(ApiError::unavailable(
                "this replica has lost its database and cannot check tokens; try another replica",
            ));
        }
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
        // Expiry is kept in whole seconds, rounded up: a token lives at least its TTL (a
        // token made at 12:00:00.9 with a TTL of 1 s would otherwise die 0.1 s later).
        let made = jiff::Timestamp::now();
        let created_at = made.as_second();
        let fraction_started = made.subsec_nanosecond() > 0;
        let expires_at = match ttl_seconds {
            None => None,
            Some(t) => Some(
                created_at
                    .checked_add(t)
                    .and_then(|e| e.checked_add(i64::from(fraction_started)))
                    .filter(|_| t > 0)
                    .ok_or_else(|| {
                        anyhow::anyhow!("a token's lifetime must be positive and finite")
                    })?,
            ),
        };
        let secret_hash = hash(&secret);
        match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query("INSERT INTO tokens (id, name, role, secret_hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)")
                    .bind(&id)
                    .bind(name)
                    .bind(role.to_string())
                    .bind(secret_hash.as_slice())
                    .bind(created_at)
                    .bind(expires_at)
                    .execute(pool)
                    .await?;
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("INSERT INTO tokens (id, name, role, secret_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)")
                    .bind(&id)
                    .bind(name)
                    .bind(role.to_string())
                    .bind(secret_hash.as_slice())
                    .bind(created_at)
                    .bind(expires_at)
                    .execute(&mut *tx)
                    .await?;
                announce(&mut tx).await?;
                tx.commit().await?;
            }
        }
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

    /// Revokes a token at once: with replicas, it answers once every live replica refuses
    /// the token too. `false` if there is no such token.
    pub async fn revoke(&self, id: &str) -> anyhow::Result<bool> {
        let known = self.entries.read().contains_key(id);
        // Refuse first in memory, so no request gets through while the row is written.
        if let Some(e) = self.entries.write().get_mut(id) {
            e.revoked = true;
        }
        if known {
            self.revocations.send_modify(|n| *n += 1);
        }
        match &self.db {
            Db::Sqlite(pool) => {
                if !known {
                    return Ok(false);
                }
                sqlx::query("UPDATE tokens SET revoked_at = ? WHERE id = ?")
                    .bind(now())
                    .bind(id)
                    .execute(pool)
                    .await?;
            }
            Db::Postgres(pool) => {
                // A token made on another replica a moment ago may not be known here yet: the
                // database says whether it exists.
                let mut tx = pool.begin().await?;
                let found = sqlx::query(
                    "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2",
                )
                .bind(now())
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                if !found {
                    return Ok(false);
                }
                let epoch: i64 = sqlx::query_scalar(
                    "UPDATE token_epoch SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch",
                )
                .fetch_one(&mut *tx)
                .await?;
                announce(&mut tx).await?;
                tx.commit().await?;
                self.wait_for_replicas(pool, epoch).await?;
            }
        }
        Ok(true)
    }

    /// Waits until every live replica's table has reached `epoch` (at most [`REVOKE_WAIT`]).
    async fn wait_for_replicas(&self, pool: &PgPool, epoch: i64) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + REVOKE_WAIT;
        loop {
            // This replica too: it refuses the token in memory already, but a re-read that
            // began before the revocation would put the old row back.
            let behind: Vec<String> = sqlx::query_scalar(
                "SELECT replica FROM token_replicas WHERE epoch < $1 \
                 AND (seen_at >= EXTRACT(EPOCH FROM clock_timestamp())::BIGINT - $2 OR replica = $3)",
            )
            .bind(epoch)
            .bind(REPLICA_GONE_AFTER)
            .bind(&self.replica)
            .fetch_all(pool)
            .await?;
            if behind.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "the token is revoked, but {} replica(s) have not confirmed it yet: each re-reads the token table within {} s, and one cut off from the database refuses every token after {REPLICA_GONE_AFTER} s",
                    behind.len(),
                    REREAD_EVERY.as_secs()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}

/// Tells the other replicas that the token table changed (delivered at COMMIT).
async fn announce(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> anyhow::Result<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Keeps a replica's table equal to the database's: re-read on each announcement, and every
/// few seconds, each time recording the epoch reached. A token that stopped working wakes the
/// watches that rely on it.
async fn follow(
    pool: PgPool,
    replica: String,
    mut listener: PgListener,
    entries: Arc<RwLock<HashMap<String, Entry>>>,
    revocations: Arc<tokio::sync::watch::Sender<u64>>,
    synced: Arc<parking_lot::Mutex<std::time::Instant>>,
) {
    loop {
        // An announcement, or the periodic look: re-read either way.
        if let Ok(Err(e)) = tokio::time::timeout(REREAD_EVERY, listener.recv()).await {
            tracing::warn!(error = %e, "listening for token changes");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let read_at = std::time::Instant::now();
        let (fresh, epoch) = match read_shared(&pool).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "re-reading the token table");
                continue;
            }
        };
        let revoked = {
            let old = entries.read();
            old.iter()
                .any(|(id, e)| !e.revoked && fresh.get(id).is_none_or(|f| f.revoked))
        };
        *entries.write() = fresh;
        *synced.lock() = read_at;
        if revoked {
            revocations.send_modify(|n| *n += 1);
        }
        // Only once the table is in use: a revocation waits for exactly this.
        if let Err(e) = reached(&pool, &replica, epoch).await {
            tracing::warn!(error = %e, "recording the token table's epoch");
        }
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
