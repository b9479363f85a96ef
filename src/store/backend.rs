//! The persistence contract behind the store, true for one process on SQLite and for several
//! replicas on one PostgreSQL:
//!
//! - **Preconditions are checked inside the writing transaction.** A commit starts with
//!   [`Backend::begin`], which for a shared database takes the store-wide write lock and returns
//!   what other replicas committed since this one last looked. The writer applies that to its
//!   cache before it checks the batch's preconditions, so they are checked against the
//!   database's current state, under the lock that [`Backend::commit`] releases.
//! - **One global order.** Writers hold that lock from reading the newest resourceVersion to
//!   committing, so resourceVersions are allocated in commit order, without gaps, across
//!   replicas. A reader that sees version N+1 has already been able to see N: followers never
//!   skip a change that commits late with a lower number (there is none).
//! - **Followers.** Between writes, a replica reads what others committed
//!   ([`Backend::follow`]), woken by [`Backend::remote_commits`] (PostgreSQL's LISTEN/NOTIFY)
//!   and by a periodic look, since a notification can be lost with its connection.

use std::sync::Arc;

use super::{EventType, Rv, Stored};

/// One row of a commit: a change and the object version it produced.
pub struct Row {
    pub type_: EventType,
    pub stored: Arc<Stored>,
    pub committed_at: i64,
}

/// What a backend holds at start-up.
#[derive(Default)]
pub struct Loaded {
    pub objects: Vec<Stored>,
    /// The retained change log, oldest first: (type, object version, commit time). A version
    /// that is also in `objects` (the object's current one) may come with empty JSON: the
    /// store shares the one in `objects`.
    pub log: Vec<(EventType, Stored, i64)>,
    /// The highest resourceVersion ever committed.
    pub last_rv: Rv,
}

/// What other replicas committed after the version a replica knows.
pub enum CatchUp {
    /// The changes, oldest first, with no gap after the known version.
    Changes(Vec<(EventType, Stored, i64)>),
    /// The changes right after the known version were compacted: everything, read afresh.
    Reload(Loaded),
}

impl CatchUp {
    pub fn nothing() -> Self {
        CatchUp::Changes(Vec::new())
    }
}

/// The database's newest committed resourceVersion, asked outside the writer: a replica waits
/// until its cache has reached it before it answers a read that must be current.
#[async_trait::async_trait]
pub trait Head: Send + Sync {
    async fn current_rv(&self) -> anyhow::Result<Rv>;
}

#[async_trait::async_trait]
pub trait Backend: Send {
    /// Reads every object and the retained change log.
    async fn load(&mut self) -> anyhow::Result<Loaded>;

    /// Starts a commit: takes the write lock of a shared database and returns what others
    /// committed after `known` (see the module docs). A backend of one process has nothing to
    /// return.
    async fn begin(&mut self, _known: Rv) -> anyhow::Result<CatchUp> {
        Ok(CatchUp::nothing())
    }

    /// Makes `rows` durable in one transaction (objects upserted or deleted, changes
    /// appended) and ends what [`Backend::begin`] started. `rows` may be empty: every write of
    /// the batch failed its preconditions. Returns only once the transaction is on stable
    /// storage; after an error nothing of it was applied, or (a lost answer to COMMIT) all of
    /// it, which the next catch-up then reads back.
    async fn commit(&mut self, rows: &[Row]) -> anyhow::Result<()>;

    /// What other replicas committed after `known`, read without the write lock.
    async fn follow(&mut self, _known: Rv) -> anyhow::Result<CatchUp> {
        Ok(CatchUp::nothing())
    }

    /// Notified when another replica may have committed; `None` when no other writer exists.
    fn remote_commits(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }

    /// Asks the database's newest version from outside the writer; `None` when the cache is
    /// the only writer's and so always current.
    fn head(&self) -> Option<Arc<dyn Head>> {
        None
    }

    /// Drops change-log rows at or below `up_to` (never the newest row): the log no longer
    /// holds them. `released` lists the versions at or below `up_to` that are not current
    /// either (replaced or deleted since), for a backend that keeps each version once, as the
    /// object's current version and as its change row together: it drops exactly those, and
    /// keeps every other version at or below `up_to` as the current one of its object.
    async fn compact(&mut self, up_to: Rv, released: &[Rv]) -> anyhow::Result<()>;

    /// Whether this backend keeps each version once, as the object's current version and as
    /// its change row together, and so needs `released` in [`Backend::compact`].
    fn keeps_versions_once(&self) -> bool {
        false
    }
}
