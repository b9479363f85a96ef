//! The persistence contract behind the store. SQLite implements it today; a PostgreSQL backend
//! for several replicas would implement the same three calls.

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
    /// The retained change log, oldest first: (type, object version, commit time).
    pub log: Vec<(EventType, Stored, i64)>,
    /// The highest resourceVersion ever committed.
    pub last_rv: Rv,
}

#[async_trait::async_trait]
pub trait Backend: Send {
    /// Reads every object and the retained change log.
    async fn load(&mut self) -> anyhow::Result<Loaded>;

    /// Makes `rows` durable in one transaction: objects upserted or deleted, changes appended.
    /// Returns only once the transaction is on stable storage.
    async fn commit(&mut self, rows: &[Row]) -> anyhow::Result<()>;

    /// Drops change-log rows at or below `up_to` (never the newest row).
    async fn compact(&mut self, up_to: Rv) -> anyhow::Result<()>;
}
