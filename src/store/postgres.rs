//! The PostgreSQL backend: one database shared by every replica (see [`super::backend`] for the
//! contract).
//!
//! - Every commit holds a transaction-scoped advisory lock ([`WRITE_LOCK`]) from reading what
//!   others committed to its own COMMIT. PostgreSQL makes a transaction visible before it
//!   releases its locks, so the next writer always starts from the newest state and
//!   resourceVersions are allocated in commit order with no gap: a follower that sees N+1 can
//!   already see N.
//! - A commit ends with `NOTIFY stowage_changes`; each replica LISTENs on its own connection and
//!   wakes its writer, which reads the change table from its last version (the truth; the
//!   notification is only a wake-up).
//! - Compaction takes a second advisory lock without waiting: one replica compacts at a time,
//!   and the others skip their turn.
//! - Migrations are applied at start-up under sqlx's migration lock, so replicas that start
//!   together apply them once.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, Postgres};
use sqlx::{Row as _, Transaction};
use tokio::sync::Notify;

use super::backend::{Backend, CatchUp, Head, Loaded, Row};
use super::{EventType, Rv, Stored, decode};

/// The advisory lock every commit holds (an arbitrary constant: "stowage" in ASCII).
const WRITE_LOCK: i64 = 0x73746f77616765;
/// The advisory lock of the replica that compacts the change table.
const COMPACTION_LOCK: i64 = WRITE_LOCK + 1;
/// The channel commits are announced on.
const CHANNEL: &str = "stowage_changes";
/// Changes read per query while following.
const FOLLOW_PAGE: i64 = 4096;

/// How to reach the database, from `--store postgres://...` or the config file's `store:`.
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    pub url: String,
    /// Connections in the pool (the writer, consistent reads and tokens share it; LISTEN has
    /// one of its own).
    pub pool_size: u32,
    /// How long to wait for a connection, and for the database to answer a statement.
    pub timeout: Duration,
    /// Change-log entries older than this are compacted (the store's watch window).
    pub window: Duration,
}

pub struct PostgresBackend {
    pool: PgPool,
    tx: Option<Transaction<'static, Postgres>>,
    remote: Arc<Notify>,
    listener: tokio::task::AbortHandle,
    window: Duration,
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Opens a pool on `options.url`; the URL's password may instead come from `PGPASSWORD`.
pub async fn connect(options: &PostgresOptions) -> anyhow::Result<PgPool> {
    let connect: PgConnectOptions = options
        .url
        .parse()
        .context("reading the PostgreSQL URL (postgres://user@host:port/database)")?;
    let statement_timeout = options.timeout.as_millis().to_string();
    PgPoolOptions::new()
        .max_connections(options.pool_size.max(2))
        .acquire_timeout(options.timeout)
        .connect_with(connect.options([("statement_timeout", statement_timeout.as_str())]))
        .await
        .with_context(|| format!("connecting to PostgreSQL at {}", redacted(&options.url)))
}

/// The URL without its password, for messages.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("****"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(an unreadable URL)".into(),
    }
}

impl PostgresBackend {
    /// Connects, applies migrations (once, whichever replica comes first) and starts
    /// listening for other replicas' commits.
    pub async fn open(pool: PgPool, window: Duration) -> anyhow::Result<Self> {
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .context("applying PostgreSQL migrations")?;
        let remote = Arc::new(Notify::new());
        let mut listener = PgListener::connect_with(&pool)
            .await
            .context("listening for other replicas' commits")?;
        listener.listen(CHANNEL).await?;
        let wake = remote.clone();
        let listener = tokio::spawn(async move {
            loop {
                // `recv` reconnects after a lost connection (notifications sent meanwhile are
                // lost, which the writer's periodic look covers); wake the writer either way.
                match listener.recv().await {
                    Ok(_) => wake.notify_one(),
                    Err(e) => {
                        tracing::warn!(error = %e, "listening for other replicas' commits");
                        wake.notify_one();
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        })
        .abort_handle();
        Ok(PostgresBackend {
            pool,
            tx: None,
            remote,
            listener,
            window,
        })
    }
}

type Change = (EventType, Stored, i64);

/// Changes after `known`, at most `limit` (all of them when `None`).
async fn changes_after<'c, E>(
    executor: E,
    known: Rv,
    limit: Option<i64>,
) -> anyhow::Result<Vec<Change>>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    let rows = sqlx::query(
        "SELECT kind, namespace, name, rv, type, data, created_at FROM changes WHERE rv > $1 ORDER BY rv LIMIT $2",
    )
    .bind(known as i64)
    .bind(limit)
    .fetch_all(executor)
    .await?;
    decode_changes(rows)
}

/// Change rows (kind, namespace, name, rv, type, data, created_at), decoded.
fn decode_changes(rows: Vec<sqlx::postgres::PgRow>) -> anyhow::Result<Vec<Change>> {
    let mut changes = Vec::with_capacity(rows.len());
    for r in rows {
        let (kind, rv, type_, at): (String, i64, String, i64) =
            (r.get(0), r.get(3), r.get(4), r.get(6));
        let type_ = EventType::parse(&type_).context("unknown change type")?;
        match decode(&kind, r.get(1), r.get(2), rv, r.get(5)) {
            Some(stored) => changes.push((type_, stored, at)),
            // A kind this version does not know (a newer replica wrote it): skipping it would
            // leave a gap that looks like a compaction.
            None => {
                anyhow::bail!("a change of unknown kind {kind} at rv {rv}: upgrade this replica")
            }
        }
    }
    Ok(changes)
}

/// What follows `known`: the changes, or everything when some of them were compacted.
fn gap_free(known: Rv, changes: Vec<Change>) -> Option<CatchUp> {
    match changes.first() {
        Some((_, first, _)) if first.rv != known + 1 => None,
        _ => Some(CatchUp::Changes(changes)),
    }
}

struct PgHead(PgPool);

#[async_trait::async_trait]
impl Head for PgHead {
    async fn current_rv(&self) -> anyhow::Result<Rv> {
        let rv: Option<i64> = sqlx::query_scalar("SELECT MAX(rv) FROM changes")
            .fetch_one(&self.0)
            .await?;
        Ok(rv.unwrap_or(0) as Rv)
    }
}

#[async_trait::async_trait]
impl Backend for PostgresBackend {
    async fn load(&mut self) -> anyhow::Result<Loaded> {
        // One snapshot for the objects and the log, without holding up writers.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await?;
        let loaded = load_all(&mut tx).await?;
        tx.commit().await?;
        Ok(loaded)
    }

    async fn begin(&mut self, known: Rv) -> anyhow::Result<CatchUp> {
        // A transaction left over from a failed commit is rolled back by dropping it.
        self.tx = None;
        // The lock is its own statement after BEGIN, not sent with it in one simple query:
        // sqlx does not count a BEGIN whose query then failed (a lock timeout), so nothing would
        // roll that transaction back and its connection would return to the pool aborted.
        // READ COMMITTED whatever the database's default: the read below must take its
        // snapshot after the lock is granted, which a REPEATABLE READ transaction would not
        // (its snapshot is its first statement's). The lock wait and the read share one
        // statement timeout.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await?;
        // The lock and the read of what others committed, in one round trip (see the
        // migration that defines the function for why the read cannot miss a commit).
        let rows = sqlx::query(
            "SELECT kind, namespace, name, rv, type, data, created_at FROM stowage_lock_and_read($1, $2)",
        )
        .bind(WRITE_LOCK)
        .bind(known as i64)
        .fetch_all(&mut *tx)
        .await?;
        let changes = decode_changes(rows)?;
        let caught_up = match gap_free(known, changes) {
            Some(c) => c,
            None => CatchUp::Reload(load_all(&mut tx).await?),
        };
        self.tx = Some(tx);
        Ok(caught_up)
    }

    async fn commit(&mut self, rows: &[Row]) -> anyhow::Result<()> {
        let mut tx = self
            .tx
            .take()
            .context("a commit without a begun transaction")?;
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok(());
        }
        // Each object's last row in the batch is its final state: the one its `objects` row
        // takes (an upsert may not touch a row twice in one statement).
        let mut last = std::collections::HashMap::with_capacity(rows.len());
        for (i, r) in rows.iter().enumerate() {
            last.insert((r.stored.kind, &r.stored.key), i);
        }
        let mut is_final = vec![false; rows.len()];
        for i in last.into_values() {
            is_final[i] = true;
        }
        let mut rv = Vec::with_capacity(rows.len());
        let mut kind = Vec::with_capacity(rows.len());
        let mut namespace = Vec::with_capacity(rows.len());
        let mut name = Vec::with_capacity(rows.len());
        let mut type_ = Vec::with_capacity(rows.len());
        let mut data: Vec<&[u8]> = Vec::with_capacity(rows.len());
        let mut at = Vec::with_capacity(rows.len());
        for r in rows {
            let s = &r.stored;
            rv.push(s.rv as i64);
            kind.push(s.kind.info().kind);
            namespace.push(s.key.namespace.as_str());
            name.push(s.key.name.as_str());
            type_.push(r.type_.as_str());
            data.push(s.json.as_ref());
            at.push(r.committed_at);
        }
        let newest = rv.last().copied().unwrap_or_default();
        // The whole batch in one statement, its documents sent once: the change rows, each
        // object's final state (upserted, or deleted), and the other replicas' wake-up. One
        // round trip instead of four while this replica holds the write lock.
        sqlx::query(
            "WITH batch AS (SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], \
                 $5::text[], $6::bytea[], $7::bigint[], $8::bool[]) \
                 AS b(rv, kind, namespace, name, type, data, created_at, final)), \
             changed AS (INSERT INTO changes (rv, kind, namespace, name, type, data, created_at) \
                 SELECT rv, kind, namespace, name, type, data, created_at FROM batch), \
             put AS (INSERT INTO objects (kind, namespace, name, rv, data) \
                 SELECT kind, namespace, name, rv, data FROM batch WHERE final AND type <> 'DELETED' \
                 ON CONFLICT (kind, namespace, name) DO UPDATE SET rv = excluded.rv, data = excluded.data), \
             gone AS (DELETE FROM objects o USING batch b WHERE b.final AND b.type = 'DELETED' \
                 AND o.kind = b.kind AND o.namespace = b.namespace AND o.name = b.name) \
             SELECT pg_notify($9, $10)",
        )
        .bind(&rv[..])
        .bind(&kind[..])
        .bind(&namespace[..])
        .bind(&name[..])
        .bind(&type_[..])
        .bind(&data[..])
        .bind(&at[..])
        .bind(&is_final[..])
        .bind(CHANNEL)
        .bind(newest.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn follow(&mut self, known: Rv) -> anyhow::Result<CatchUp> {
        let mut all = Vec::new();
        let mut after = known;
        loop {
            let page = changes_after(&self.pool, after, Some(FOLLOW_PAGE)).await?;
            let full = page.len() as i64 == FOLLOW_PAGE;
            if let Some((_, last, _)) = page.last() {
                after = last.rv;
            }
            all.extend(page);
            if !full {
                break;
            }
        }
        match gap_free(known, all) {
            Some(c) => Ok(c),
            None => Ok(CatchUp::Reload(self.load().await?)),
        }
    }

    fn remote_commits(&self) -> Option<Arc<Notify>> {
        Some(self.remote.clone())
    }

    fn head(&self) -> Option<Arc<dyn Head>> {
        Some(Arc::new(PgHead(self.pool.clone())))
    }

    async fn compact(&mut self, up_to: Rv, _released: &[Rv]) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        let mine: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(COMPACTION_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !mine {
            return Ok(());
        }
        // Only what every replica's window let go: entries past this replica's bounds and
        // older than the window. A replica that still needed them reloads (as a watch client
        // relists after 410).
        let horizon = jiff::Timestamp::now().as_second() - self.window.as_secs() as i64;
        sqlx::query(
            "DELETE FROM changes WHERE rv <= $1 AND created_at < $2 \
             AND rv < (SELECT MAX(rv) FROM changes)",
        )
        .bind(up_to as i64)
        .bind(horizon)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Every object and the retained log, in the transaction's snapshot.
async fn load_all(tx: &mut Transaction<'static, Postgres>) -> anyhow::Result<Loaded> {
    let mut objects = Vec::new();
    let mut last_rv = 0;
    for r in sqlx::query("SELECT kind, namespace, name, rv, data FROM objects")
        .fetch_all(&mut **tx)
        .await?
    {
        let rv: i64 = r.get(3);
        last_rv = last_rv.max(rv as Rv);
        objects.extend(decode(
            &r.get::<String, _>(0),
            r.get(1),
            r.get(2),
            rv,
            r.get(4),
        ));
    }
    let log = changes_after(&mut **tx, 0, None).await?;
    if let Some((_, s, _)) = log.last() {
        last_rv = last_rv.max(s.rv);
    }
    Ok(Loaded {
        objects,
        log,
        last_rv,
    })
}

/// A value every replica shares (the CA, the installation's identity): made by the first
/// replica that asks, read by the others. Racing first replicas each make one; the database
/// keeps the first insert, and everyone reads that.
pub async fn shared_value(
    pool: &PgPool,
    name: &str,
    make: impl FnOnce() -> anyhow::Result<Vec<u8>>,
) -> anyhow::Result<Vec<u8>> {
    let select = "SELECT value FROM secrets WHERE name = $1";
    if let Some(v) = sqlx::query_scalar(select)
        .bind(name)
        .fetch_optional(pool)
        .await?
    {
        return Ok(v);
    }
    sqlx::query("INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(make()?)
        .execute(pool)
        .await?;
    Ok(sqlx::query_scalar(select)
        .bind(name)
        .fetch_one(pool)
        .await?)
}
