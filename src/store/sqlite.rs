//! The SQLite backend: one file in WAL mode with `synchronous=FULL`, so an acknowledged commit
//! survives a crash or power loss. One connection, owned by the store's writer task, makes
//! every write; a second one checkpoints the WAL into the database file in the background, so
//! the copying and the database file's fsync stay off the writer's path (SQLite would otherwise
//! checkpoint inside whichever commit crosses the threshold, stalling every request in it).
//!
//! The WAL stays bounded under sustained writes. SQLite starts the WAL over from its beginning
//! only when a writer finds it entirely checkpointed, which a background checkpoint running
//! beside a busy writer never achieves: the WAL would grow for as long as the load lasts (and
//! every commit would extend the file, so the kernel zeroes fresh blocks on the write path).
//! So once the WAL passes [`WAL_RESTART_BYTES`], the writer itself checkpoints between two
//! commits. The background checkpointer has already copied nearly everything, so this is quick;
//! the next commit then restarts the WAL at its beginning, reusing its blocks, and
//! `journal_size_limit` trims a WAL that grew past [`WAL_KEEP_BYTES`]. When writes pause for
//! [`IDLE_BEFORE_TRUNCATE`], the checkpointer truncates the WAL to nothing, so an idle store
//! takes only its database file on disk.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Row as _, SqliteConnection};

use super::backend::{Backend, Loaded, Row};
use super::{EventType, Kind, Rv, Stored, decode};

/// Rows per multi-row INSERT. Fixed sizes keep the prepared-statement cache small.
const CHUNK: usize = 128;

/// How often the background checkpoint runs.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
/// Past this size, the writer checkpoints so that the WAL restarts from its beginning.
const WAL_RESTART_BYTES: u64 = 32 * 1024 * 1024;
/// A restarted WAL file is truncated to this size if it grew larger.
const WAL_KEEP_BYTES: u64 = 64 * 1024 * 1024;
/// Without commits for this long, the WAL is checkpointed and truncated to zero bytes.
const IDLE_BEFORE_TRUNCATE: std::time::Duration = std::time::Duration::from_secs(1);
/// Commits between two looks at the WAL's size.
const WAL_LOOK_EVERY: u32 = 32;

pub struct SqliteBackend {
    conn: SqliteConnection,
    /// For the second connection start-up reads with.
    options: SqliteConnectOptions,
    checkpointer: tokio::task::AbortHandle,
    /// Frames in the WAL, as the last checkpoint reported them.
    wal_frames: Arc<AtomicI64>,
    /// Commits so far; the checkpointer tells an idle store by it.
    commits: Arc<AtomicU64>,
    page_size: i64,
    commits_since_look: u32,
}

impl Drop for SqliteBackend {
    fn drop(&mut self) {
        self.checkpointer.abort();
    }
}

impl SqliteBackend {
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating data directory {}", dir.display()))?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(5))
            .statement_cache_capacity(256)
            .disable_statement_logging()
            // SQLite writes whole pages, and the unused parts of a fresh page buffer hold
            // whatever the process had in that memory before (request headers with bearer
            // tokens, say). FAST zeroes new pages and deleted content without extra I/O, so
            // nothing but the database's own data reaches the disk.
            .pragma("secure_delete", "FAST");
        let mut conn = SqliteConnection::connect_with(&options)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut conn)
            .await
            .context("applying migrations")?;
        // Pages the writer touches stay in memory (the default is 2 MiB). Not more: the
        // objects are served from the store's own cache, the kernel caches the file too, and
        // SQLite scans its whole page-cache hash table at the end of every write transaction
        // (`pcache1TruncateUnsafe`, 6% of the CPU under write load with 64 MiB).
        sqlx::query("PRAGMA cache_size = -8192")
            .execute(&mut conn)
            .await?;
        sqlx::query("PRAGMA wal_autocheckpoint = 0")
            .execute(&mut conn)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA journal_size_limit = {WAL_KEEP_BYTES}"
        )))
        .execute(&mut conn)
        .await?;
        let mut checkpoint_conn = SqliteConnection::connect_with(&options)
            .await
            .with_context(|| format!("opening {} for checkpoints", path.display()))?;
        let wal_frames = Arc::new(AtomicI64::new(0));
        let commits = Arc::new(AtomicU64::new(0));
        let (reported, committed) = (wal_frames.clone(), commits.clone());
        let checkpointer = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(CHECKPOINT_EVERY);
            let (mut seen, mut idle_since) = (0, std::time::Instant::now());
            let mut truncated = false;
            loop {
                ticker.tick().await;
                let now = committed.load(Ordering::Relaxed);
                if now != seen {
                    (seen, idle_since, truncated) = (now, std::time::Instant::now(), false);
                }
                if !truncated && idle_since.elapsed() >= IDLE_BEFORE_TRUNCATE {
                    // Writers have paused: everything is copied and the file cut to nothing.
                    // A commit arriving meanwhile waits for this (busy_timeout), briefly: the
                    // passive checkpoints have already copied nearly everything.
                    match sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                        .fetch_one(&mut checkpoint_conn)
                        .await
                    {
                        Ok(row) if row.try_get::<i64, _>(0).unwrap_or(1) == 0 => {
                            reported.store(0, Ordering::Relaxed);
                            truncated = true;
                        }
                        Ok(_) => {} // busy: a reader or writer was in the way; next tick
                        Err(e) => tracing::warn!(error = %e, "WAL truncation failed"),
                    }
                    continue;
                }
                // PASSIVE never blocks the writer; what it cannot copy now it copies next time.
                match checkpoint(&mut checkpoint_conn).await {
                    Ok(frames) => reported.store(frames, Ordering::Relaxed),
                    Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
                }
            }
        })
        .abort_handle();
        let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&mut conn)
            .await?;
        Ok(SqliteBackend {
            conn,
            options,
            checkpointer,
            wal_frames,
            commits,
            page_size: page_size.max(512),
            commits_since_look: 0,
        })
    }

    /// Checkpoints from the writer's connection when the WAL has grown, so that the next
    /// commit starts it over (see the module docs). The size that counts is the frames in use
    /// (as the last checkpoint reported them), not the file, which stays at its high-water mark.
    async fn bound_wal(&mut self) {
        self.commits_since_look += 1;
        if self.commits_since_look < WAL_LOOK_EVERY {
            return;
        }
        self.commits_since_look = 0;
        let in_use = self.wal_frames.load(Ordering::Relaxed).max(0) as u64 * self.page_size as u64;
        if in_use < WAL_RESTART_BYTES {
            return;
        }
        match checkpoint(&mut self.conn).await {
            // Everything is copied: the next commit starts the WAL over.
            Ok(_) => self.wal_frames.store(0, Ordering::Relaxed),
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint by the writer failed"),
        }
    }
}

/// A PASSIVE checkpoint; returns the frames the WAL holds (`log` in SQLite's answer).
async fn checkpoint(conn: &mut SqliteConnection) -> anyhow::Result<i64> {
    let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(conn)
        .await?;
    Ok(row.try_get::<i64, _>(1).unwrap_or(0))
}

/// Every object, as stored (see [`decode`]).
async fn read_objects(conn: &mut SqliteConnection) -> anyhow::Result<Vec<Stored>> {
    use futures::TryStreamExt as _;
    let mut objects = Vec::new();
    let mut rows = sqlx::query("SELECT kind, namespace, name, rv, data FROM objects").fetch(conn);
    while let Some(r) = rows.try_next().await? {
        objects.extend(decode(
            &r.get::<String, _>(0),
            r.get(1),
            r.get(2),
            r.get(3),
            r.get(4),
        ));
    }
    Ok(objects)
}

/// The retained change log, oldest first. A change that made an object's current version is
/// read without its data: the store shares the version it already has (see `Loaded::log`).
async fn read_log(conn: &mut SqliteConnection) -> anyhow::Result<Vec<(EventType, Stored, i64)>> {
    use futures::TryStreamExt as _;
    let mut log = Vec::new();
    let mut rows = sqlx::query(
        "SELECT c.kind, c.namespace, c.name, c.rv, c.type, \
                CASE WHEN o.rv = c.rv THEN x'' ELSE c.data END, c.created_at \
         FROM changes c LEFT JOIN objects o \
           ON o.kind = c.kind AND o.namespace = c.namespace AND o.name = c.name \
         ORDER BY c.rv",
    )
    .fetch(conn);
    while let Some(r) = rows.try_next().await? {
        let type_ = EventType::parse(&r.get::<String, _>(4)).context("unknown change type")?;
        if let Some(stored) = decode(
            &r.get::<String, _>(0),
            r.get(1),
            r.get(2),
            r.get(3),
            r.get(5),
        ) {
            log.push((type_, stored, r.get(6)));
        }
    }
    Ok(log)
}

/// What a run of changes does to the `objects` table: each object touched ends as its last
/// change left it. Whether it was in the table before the run is told by its first change:
/// the store marks a write ADDED exactly when the object did not exist (and the table holds
/// what the store's cache holds, since both follow only committed writes).
#[derive(Default)]
struct ObjectWrites<'a> {
    inserts: Vec<&'a Stored>,
    updates: Vec<&'a Stored>,
    deletes: Vec<&'a Stored>,
}

impl<'a> ObjectWrites<'a> {
    fn of(rows: &'a [Row]) -> Self {
        let mut last: std::collections::HashMap<(Kind, &str, &str), (bool, &Row)> =
            std::collections::HashMap::with_capacity(rows.len());
        for row in rows {
            let s = &row.stored;
            last.entry((s.kind, s.key.namespace.as_str(), s.key.name.as_str()))
                .and_modify(|(_, r)| *r = row)
                .or_insert((row.type_ != EventType::Added, row));
        }
        let mut writes = Self::default();
        // In the rows' order, so that the statements (and the tests) are deterministic.
        for row in rows {
            let s = &row.stored;
            let Some((existed, last)) =
                last.remove(&(s.kind, s.key.namespace.as_str(), s.key.name.as_str()))
            else {
                continue;
            };
            match (existed, last.type_ == EventType::Deleted) {
                (true, true) => writes.deletes.push(&last.stored),
                (true, false) => writes.updates.push(&last.stored),
                (false, false) => writes.inserts.push(&last.stored),
                (false, true) => {}
            }
        }
        writes
    }
}

/// `sql` with its "?" placeholders bound to each object's kind, namespace, name, rv and data,
/// in that order. Only placeholders are formatted into `sql`; every value is bound.
fn with_objects<'q>(
    sql: String,
    objects: &[&'q Stored],
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for s in objects {
        q = q
            .bind(s.kind.info().kind)
            .bind(s.key.namespace.as_str())
            .bind(s.key.name.as_str())
            .bind(s.rv as i64)
            .bind(s.json.as_ref());
    }
    q
}

fn placeholders(rows: usize, columns: usize) -> String {
    let one = format!("({})", vec!["?"; columns].join(","));
    vec![one; rows].join(",")
}

#[async_trait::async_trait]
impl Backend for SqliteBackend {
    async fn load(&mut self) -> anyhow::Result<Loaded> {
        // Objects and changes are read at once, on two connections (SQLite runs each on a
        // thread of its own): start-up time is mostly these reads. Nothing writes yet.
        let mut second = SqliteConnection::connect_with(&self.options).await?;
        let (objects, log) = tokio::try_join!(read_objects(&mut self.conn), read_log(&mut second))?;
        second.close().await?;
        let last_rv: i64 = sqlx::query_scalar(
            "SELECT MAX(rv) FROM (SELECT MAX(rv) AS rv FROM changes UNION ALL SELECT MAX(rv) FROM objects)",
        )
        .fetch_one(&mut self.conn)
        .await
        .map(|v: Option<i64>| v.unwrap_or(0))?;
        Ok(Loaded {
            objects,
            log,
            last_rv: last_rv as Rv,
        })
    }

    async fn commit(&mut self, rows: &[Row]) -> anyhow::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        // Every statement is `OR FAIL`, and objects are written by plain inserts and updates,
        // never an upsert. A multi-row statement that may abort halfway (the default `OR
        // ABORT`, and an upsert's DO UPDATE always) makes SQLite copy each page it touches
        // into a statement journal first, to undo just that statement: 4% of the CPU under
        // write load. No constraint fails here unless the store is corrupt, and then the whole
        // transaction is rolled back anyway when `tx` drops, so a statement journal would have
        // nothing to undo.
        let mut tx = self.conn.begin().await?;
        for chunk in rows.chunks(CHUNK) {
            let sql = format!(
                "INSERT OR FAIL INTO changes (rv, kind, namespace, name, type, data, created_at) VALUES {}",
                placeholders(chunk.len(), 7)
            );
            // Only "?" placeholders are formatted into the text; every value is bound.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for row in chunk {
                let s = &row.stored;
                q = q
                    .bind(s.rv as i64)
                    .bind(s.kind.info().kind)
                    .bind(s.key.namespace.as_str())
                    .bind(s.key.name.as_str())
                    .bind(row.type_.as_str())
                    .bind(s.json.as_ref())
                    .bind(row.committed_at);
            }
            q.execute(&mut *tx).await?;

            let writes = ObjectWrites::of(chunk);
            if !writes.inserts.is_empty() {
                let sql = format!(
                    "INSERT OR FAIL INTO objects (kind, namespace, name, rv, data) VALUES {}",
                    placeholders(writes.inserts.len(), 5)
                );
                with_objects(sql, &writes.inserts).execute(&mut *tx).await?;
            }
            if !writes.updates.is_empty() {
                // The VALUES rows are joined to their objects through the key's unique index;
                // each key is in them once (`ObjectWrites` keeps an object's last version).
                let sql = format!(
                    "UPDATE OR FAIL objects SET rv = v.column4, data = v.column5 FROM (VALUES {}) AS v \
                     WHERE objects.kind = v.column1 AND objects.namespace = v.column2 AND objects.name = v.column3",
                    placeholders(writes.updates.len(), 5)
                );
                let updated = with_objects(sql, &writes.updates)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                // An update that found no row would lose a write in silence; the table and
                // the cache disagreeing is worth failing the commit (and rolling it back).
                anyhow::ensure!(
                    updated == writes.updates.len() as u64,
                    "{updated} of {} objects to update were in the database",
                    writes.updates.len()
                );
            }
            if !writes.deletes.is_empty() {
                let sql = format!(
                    "DELETE FROM objects WHERE (kind, namespace, name) IN (VALUES {})",
                    placeholders(writes.deletes.len(), 3)
                );
                // Only "?" placeholders are formatted into the text; every value is bound.
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for s in &writes.deletes {
                    q = q
                        .bind(s.kind.info().kind)
                        .bind(s.key.namespace.as_str())
                        .bind(s.key.name.as_str());
                }
                let deleted = q.execute(&mut *tx).await?.rows_affected();
                anyhow::ensure!(
                    deleted == writes.deletes.len() as u64,
                    "{deleted} of {} objects to delete were in the database",
                    writes.deletes.len()
                );
            }
        }
        tx.commit().await?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.bound_wal().await;
        Ok(())
    }

    async fn compact(&mut self, up_to: Rv) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM changes WHERE rv <= ? AND rv < (SELECT MAX(rv) FROM changes)")
            .bind(up_to as i64)
            .execute(&mut self.conn)
            .await?;
        Ok(())
    }
}
