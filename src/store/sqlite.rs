//! The SQLite backend: one file in WAL mode with `synchronous=FULL`, so an acknowledged commit
//! survives a crash or power loss. Each object version is one row of `versions`, keyed by its
//! resourceVersion: a commit only appends, and start-up replays the rows in order (migration
//! `0004` says why).
//!
//! The store's writer owns two connections. Commits go through a rusqlite one, called on the
//! writer's own thread: sqlx hands every statement to a thread of its own and back, two thread
//! switches per commit (4% of the server's CPU under a create load, and 5-10% of throughput at
//! 8-16 clients). Start-up and compaction, rare, go through sqlx's. A third connection
//! checkpoints the WAL into the database file in the background, so the copying and the
//! database file's fsync stay off the writer's path (SQLite would otherwise checkpoint inside
//! whichever commit crosses the threshold, stalling every request in it).
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

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Row as _, SqliteConnection};

use super::backend::{Backend, Loaded, Row};
use super::{EventType, Kind, Rv, Stored, decode};

/// Rows per multi-row INSERT (and DELETE). Each size of each statement is prepared once and
/// cached, on the connection that runs it: [`STATEMENTS_CACHED`] each, enough for every size
/// of the committer's lone `INSERT`s and of compaction's `DELETE`s (a commit of more rows,
/// rare, may re-prepare its `INSERT OR FAIL`). Each holds a compiled program of up to a few
/// hundred KiB, so the caches are kept no larger.
pub(super) const CHUNK: usize = 128;
const STATEMENTS_CACHED: usize = CHUNK + 16;

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
    /// Commits, and the checkpoints that bound the WAL between them.
    committer: rusqlite::Connection,
    /// For the second connection start-up reads with.
    options: SqliteConnectOptions,
    checkpointer: tokio::task::AbortHandle,
    /// Frames in the WAL, as the last checkpoint reported them.
    wal_frames: Arc<AtomicI64>,
    /// Commits so far; the checkpointer tells an idle store by it.
    commits: Arc<AtomicU64>,
    page_size: i64,
    commits_since_look: u32,
    /// The change log's start on disk: rows at or below it are current versions only.
    compacted_rv: Rv,
    /// Rows of kinds this version does not know, already replaced or deleted, that are still
    /// in the log's range: they leave when compaction passes them (see [`settle_unknown`]).
    unknown_released: Vec<Rv>,
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
        // The path as it is, not through a URL (which would read `%` escapes and cut at `?`):
        // the committer below opens exactly this file.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(5))
            .statement_cache_capacity(STATEMENTS_CACHED)
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
        // Before the checkpointer starts: a failure here leaves no task behind.
        let committer = open_committer(path)
            .with_context(|| format!("opening {} for commits", path.display()))?;
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
            committer,
            options,
            checkpointer,
            wal_frames,
            commits,
            page_size: page_size.max(512),
            commits_since_look: 0,
            compacted_rv: 0,
            unknown_released: Vec::new(),
        })
    }

    /// Checkpoints from the committing connection when the WAL has grown, so that the next
    /// commit starts it over (see the module docs). The size that counts is the frames in use
    /// (as the last checkpoint reported them), not the file, which stays at its high-water mark.
    fn bound_wal(&mut self) {
        self.commits_since_look += 1;
        if self.commits_since_look < WAL_LOOK_EVERY {
            return;
        }
        self.commits_since_look = 0;
        let in_use = self.wal_frames.load(Ordering::Relaxed).max(0) as u64 * self.page_size as u64;
        if in_use < WAL_RESTART_BYTES {
            return;
        }
        let checkpoint = self
            .committer
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1));
        match checkpoint {
            // Everything is copied: the next commit starts the WAL over.
            Ok(_) => self.wal_frames.store(0, Ordering::Relaxed),
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint by the writer failed"),
        }
    }
}

/// The connection commits go through, set up as sqlx sets up its own (see `open`): after the
/// migrations, so the file is in WAL mode (which it keeps) with its tables.
fn open_committer(path: &Path) -> anyhow::Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    anyhow::ensure!(
        mode.eq_ignore_ascii_case("wal"),
        "the database is not in WAL mode ({mode})"
    );
    for (pragma, value) in [
        ("synchronous", "FULL".to_string()),
        ("secure_delete", "FAST".to_string()),
        ("cache_size", "-8192".to_string()),
        ("wal_autocheckpoint", "0".to_string()),
        ("journal_size_limit", WAL_KEEP_BYTES.to_string()),
    ] {
        conn.pragma_update(None, pragma, value)?;
    }
    let synchronous: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    anyhow::ensure!(
        synchronous == 2,
        "synchronous is {synchronous}, not FULL (2)"
    );
    conn.set_prepared_statement_cache_capacity(STATEMENTS_CACHED);
    Ok(conn)
}

/// A PASSIVE checkpoint; returns the frames the WAL holds (`log` in SQLite's answer).
async fn checkpoint(conn: &mut SqliteConnection) -> anyhow::Result<i64> {
    let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(conn)
        .await?;
    Ok(row.try_get::<i64, _>(1).unwrap_or(0))
}

/// One row of `versions`, as read at start-up.
struct VersionRow {
    type_: EventType,
    stored: Stored,
    created_at: i64,
}

/// A row of a kind this version does not know (written by a newer one): never decoded or
/// served, but kept, and released like any other once replaced or deleted.
struct UnknownRow {
    rv: Rv,
    key: (String, String, String),
    type_: EventType,
}

/// The rows of `versions` in `range` of resourceVersions, oldest first (see [`decode`]), and
/// apart from them the rows of kinds this version does not know.
async fn read_versions(
    conn: &mut SqliteConnection,
    after: i64,
    up_to: i64,
) -> anyhow::Result<(Vec<VersionRow>, Vec<UnknownRow>)> {
    use futures::TryStreamExt as _;
    let mut versions = Vec::new();
    let mut unknown = Vec::new();
    let mut rows = sqlx::query(
        "SELECT rv, kind, namespace, name, type, data, created_at FROM versions \
         WHERE rv > ? AND rv <= ? ORDER BY rv",
    )
    .bind(after)
    .bind(up_to)
    .fetch(conn);
    while let Some(r) = rows.try_next().await? {
        let type_ = EventType::parse(&r.get::<String, _>(4)).context("unknown change type")?;
        let kind: String = r.get(1);
        match decode(&kind, r.get(2), r.get(3), r.get(0), r.get(5)) {
            Some(stored) => versions.push(VersionRow {
                type_,
                stored,
                created_at: r.get(6),
            }),
            None => unknown.push(UnknownRow {
                rv: r.get::<i64, _>(0) as Rv,
                key: (kind, r.get(2), r.get(3)),
                type_,
            }),
        }
    }
    Ok((versions, unknown))
}

/// Which rows of unknown kinds nothing needs: every one but the last of its object, and the
/// last too when it is a deletion. This version never writes those kinds, so what it reads is
/// all they will ever be. Returns those at or below `compacted_rv` (to remove now, as
/// [`replay`]'s), then those in the log's range (to remove once compaction passes them),
/// each oldest first. Without this, a newer version's deleted object would come back after
/// a downgrade and an upgrade: start-up takes every row at or below `compacted_rv` for a
/// current version.
fn settle_unknown(rows: Vec<UnknownRow>, compacted_rv: Rv) -> (Vec<Rv>, Vec<Rv>) {
    let mut last: HashMap<&(String, String, String), &UnknownRow> = HashMap::new();
    let mut released = Vec::new();
    for row in &rows {
        if let Some(before) = last.insert(&row.key, row) {
            released.push(before.rv);
        }
    }
    released.extend(
        last.values()
            .filter(|row| row.type_ == EventType::Deleted)
            .map(|row| row.rv),
    );
    released.sort_unstable();
    let later = released.split_off(released.partition_point(|rv| *rv <= compacted_rv));
    (released, later)
}

/// Replays the rows of `versions`, oldest first, into the objects' current versions and the
/// change log (the rows after `compacted_rv`). Below `compacted_rv` every row is the current
/// version of its object, unless a later row in the log replaced or deleted it; only the
/// log's keys need a map, so start-up's extra memory is bounded by the log, not the store.
/// Also returns the rows below `compacted_rv` that nothing needs: a compaction that did not
/// happen (the process stopped first) left them.
fn replay(mut versions: Vec<VersionRow>, compacted_rv: Rv) -> (Loaded, Vec<Rv>) {
    let last_rv = versions.last().map_or(0, |v| v.stored.rv).max(compacted_rv);
    let log_rows = versions.split_off(versions.partition_point(|v| v.stored.rv <= compacted_rv));
    let mut objects = Vec::with_capacity(versions.len());
    let mut unneeded = Vec::new();
    {
        // Each key the log touches, with its last row there.
        let mut last_in_log: HashMap<(Kind, &str, &str), &VersionRow> =
            HashMap::with_capacity(log_rows.len());
        for row in &log_rows {
            let s = &row.stored;
            last_in_log.insert((s.kind, &s.key.namespace, &s.key.name), row);
        }
        for row in versions {
            let s = &row.stored;
            let key = (s.kind, s.key.namespace.as_str(), s.key.name.as_str());
            if row.type_ == EventType::Deleted || last_in_log.contains_key(&key) {
                unneeded.push(s.rv);
            } else {
                objects.push(row.stored);
            }
        }
        objects.extend(
            last_in_log
                .into_values()
                .filter(|row| row.type_ != EventType::Deleted)
                .map(|row| row.stored.share()),
        );
    }
    let log = log_rows
        .into_iter()
        .map(|row| (row.type_, row.stored, row.created_at))
        .collect();
    let loaded = Loaded {
        objects,
        log,
        last_rv,
    };
    (loaded, unneeded)
}

/// Deletes the versions `rvs` (in statements of [`CHUNK`] each).
async fn delete_versions(conn: &mut SqliteConnection, rvs: &[Rv]) -> anyhow::Result<()> {
    for chunk in rvs.chunks(CHUNK) {
        let sql = format!(
            "DELETE FROM versions WHERE rv IN ({})",
            vec!["?"; chunk.len()].join(",")
        );
        // Only "?" placeholders are formatted into the text; every value is bound.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for rv in chunk {
            q = q.bind(*rv as i64);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Appends `rows` to `versions` in one statement (`verb` is `INSERT` or `INSERT OR FAIL`).
fn insert(conn: &rusqlite::Connection, verb: &str, rows: &[Row]) -> rusqlite::Result<()> {
    let sql = format!(
        "{verb} INTO versions (rv, kind, namespace, name, type, data, created_at) VALUES {}",
        placeholders(rows.len(), 7)
    );
    // Only the verb and "?" placeholders are formatted into the text; every value is bound.
    let mut statement = conn.prepare_cached(&sql)?;
    for (i, row) in rows.iter().enumerate() {
        let s = &row.stored;
        let at = i * 7;
        statement.raw_bind_parameter(at + 1, s.rv as i64)?;
        statement.raw_bind_parameter(at + 2, s.kind.info().kind)?;
        statement.raw_bind_parameter(at + 3, s.key.namespace.as_str())?;
        statement.raw_bind_parameter(at + 4, s.key.name.as_str())?;
        statement.raw_bind_parameter(at + 5, row.type_.as_str())?;
        statement.raw_bind_parameter(at + 6, s.json.as_ref())?;
        statement.raw_bind_parameter(at + 7, row.committed_at)?;
    }
    statement.raw_execute()?;
    Ok(())
}

fn placeholders(rows: usize, columns: usize) -> String {
    let one = format!("({})", vec!["?"; columns].join(","));
    vec![one; rows].join(",")
}

#[async_trait::async_trait]
impl Backend for SqliteBackend {
    async fn load(&mut self) -> anyhow::Result<Loaded> {
        let compacted_rv: i64 =
            sqlx::query_scalar("SELECT compacted_rv FROM compaction WHERE id = 0")
                .fetch_one(&mut self.conn)
                .await?;
        let (first, last): (Option<i64>, Option<i64>) =
            sqlx::query_as("SELECT MIN(rv), MAX(rv) FROM versions")
                .fetch_one(&mut self.conn)
                .await?;
        // Start-up time is mostly reading the rows: the two halves of the table are read at
        // once, on two connections (SQLite runs each on a thread of its own). Nothing writes yet.
        let (first, last) = (first.unwrap_or(0), last.unwrap_or(0));
        let middle = first + (last - first) / 2;
        let mut second = SqliteConnection::connect_with(&self.options).await?;
        let ((mut older, mut unknown), (newer, unknown_newer)) = tokio::try_join!(
            read_versions(&mut self.conn, i64::MIN, middle),
            read_versions(&mut second, middle, i64::MAX)
        )?;
        second.close().await?;
        older.extend(newer);
        unknown.extend(unknown_newer);
        let (mut loaded, mut unneeded) = replay(older, compacted_rv as Rv);
        // The newest row may be of a kind this version does not know: the next write's
        // resourceVersion still comes after it.
        loaded.last_rv = loaded.last_rv.max(last as Rv);
        let (unknown_unneeded, unknown_later) = settle_unknown(unknown, compacted_rv as Rv);
        unneeded.extend(unknown_unneeded);
        self.unknown_released = unknown_later;
        if !unneeded.is_empty() {
            tracing::info!(
                versions = unneeded.len(),
                "removing versions an interrupted compaction left"
            );
            let mut tx = self.conn.begin().await?;
            delete_versions(&mut tx, &unneeded).await?;
            tx.commit().await?;
        }
        self.compacted_rv = compacted_rv as Rv;
        Ok(loaded)
    }

    async fn commit(&mut self, rows: &[Row]) -> anyhow::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        // A failed commit's transaction is rolled back when it drops, and an error there is
        // not reported: were it still open, each INSERT below would join it, and be answered
        // as durable without ever being committed.
        anyhow::ensure!(
            self.committer.is_autocommit(),
            "the committing connection is inside a transaction that did not roll back"
        );
        // Every version is appended, in resourceVersion order: the table's only b-tree grows at
        // its end, so a commit dirties few pages however scattered its objects' names are.
        if rows.len() <= CHUNK {
            // One statement outside a transaction is a transaction of its own: one statement
            // instead of three (BEGIN, INSERT, COMMIT). A plain INSERT (`OR
            // ABORT`): in autocommit mode a failing statement undoes itself whole, and needs
            // no statement journal (SQLite keeps one only inside an explicit transaction).
            // `OR FAIL` here would commit the rows before a failing one.
            insert(&self.committer, "INSERT", rows)?;
        } else {
            // `OR FAIL` inside the transaction: a multi-row statement that may abort halfway
            // (`OR ABORT`) makes SQLite copy each page it touches into a statement journal
            // first, to undo just that statement. No constraint fails here unless the store is
            // corrupt, and then the whole transaction is rolled back anyway when `tx` drops.
            let tx = self.committer.unchecked_transaction()?;
            for chunk in rows.chunks(CHUNK) {
                insert(&tx, "INSERT OR FAIL", chunk)?;
            }
            tx.commit()?;
        }
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.bound_wal();
        Ok(())
    }

    async fn compact(&mut self, up_to: Rv, released: &[Rv]) -> anyhow::Result<()> {
        if up_to <= self.compacted_rv && released.is_empty() {
            return Ok(());
        }
        let unknown = self.unknown_released.partition_point(|rv| *rv <= up_to);
        // One transaction: a version leaves exactly when the log's start moves past it, so
        // after a crash every row at or below `compacted_rv` is a current version (or one that
        // start-up finds replaced, see `replay`).
        let mut tx = self.conn.begin().await?;
        delete_versions(&mut tx, released).await?;
        delete_versions(&mut tx, &self.unknown_released[..unknown]).await?;
        sqlx::query("UPDATE compaction SET compacted_rv = MAX(compacted_rv, ?) WHERE id = 0")
            .bind(up_to as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.compacted_rv = self.compacted_rv.max(up_to);
        self.unknown_released.drain(..unknown);
        Ok(())
    }

    fn keeps_versions_once(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commits go through their own connection: it must be set up as durably as sqlx's
    /// (a commit acknowledged before its fsync would be lost to a power cut).
    #[tokio::test]
    async fn the_committing_connection_syncs_every_commit_to_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let backend = SqliteBackend::open(&dir.path().join("stowage.db"))
            .await
            .unwrap();
        let pragma = |name: &str| -> String {
            backend
                .committer
                .query_row(&format!("PRAGMA {name}"), [], |r| {
                    r.get::<_, rusqlite::types::Value>(0)
                })
                .map(|v| match v {
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    rusqlite::types::Value::Text(t) => t,
                    other => format!("{other:?}"),
                })
                .unwrap()
        };
        assert_eq!(pragma("journal_mode"), "wal");
        assert_eq!(pragma("synchronous"), "2", "FULL");
        assert_eq!(pragma("wal_autocheckpoint"), "0");
        assert_eq!(pragma("secure_delete"), "2", "FAST");
        assert_eq!(pragma("journal_size_limit"), WAL_KEEP_BYTES.to_string());
    }
}
