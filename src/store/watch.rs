//! A watcher: the changes after a point, in resourceVersion order, read straight from the
//! store's change log.
//!
//! There is no second buffer per watcher or per channel: the log, bounded in bytes, count and
//! age, is the only copy of history, and a watcher is just a position in it. A writer wakes
//! watchers by publishing the newest resourceVersion; a watcher then takes the next batch of
//! changes from the log. A watcher that falls so far behind that the log has been trimmed past
//! its position is cut off with [`WatchError::Lagged`]; its client resumes from the last
//! resourceVersion it saw (or relists), exactly as after a dropped connection. Writers never
//! wait for watchers.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::watch;

use super::{Inner, Rv, WatchEvent};

/// Changes taken from the log at once; they are shared with the log, not copied.
const BATCH: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    #[error("too old resource version: {requested} ({oldest})")]
    Expired { requested: Rv, oldest: Rv },
    #[error("the watcher fell too far behind and was cut off")]
    Lagged,
    #[error("the store is closed")]
    Closed,
}

pub struct Watcher {
    inner: Arc<Inner>,
    /// Every change up to here has been taken from the log.
    after: Rv,
    backlog: VecDeque<Arc<WatchEvent>>,
    published: watch::Receiver<Rv>,
}

impl Watcher {
    pub(super) fn new(inner: Arc<Inner>, after: Rv) -> Self {
        let published = inner.published.subscribe();
        Watcher {
            inner,
            after,
            backlog: VecDeque::new(),
            published,
        }
    }

    /// The next change. Cancel-safe.
    pub async fn next(&mut self) -> Result<Arc<WatchEvent>, WatchError> {
        loop {
            if let Some(e) = self.try_next() {
                return e;
            }
            if self.published.changed().await.is_err() {
                return Err(WatchError::Closed);
            }
        }
    }

    /// The next change if one is ready now.
    pub fn try_next(&mut self) -> Option<Result<Arc<WatchEvent>, WatchError>> {
        if self.backlog.is_empty() {
            let newest = *self.published.borrow_and_update();
            if newest <= self.after {
                return None;
            }
            if let Err(e) = self.refill() {
                return Some(Err(e));
            }
        }
        self.backlog.pop_front().map(Ok)
    }

    fn refill(&mut self) -> Result<(), WatchError> {
        let state = self.inner.state.read();
        if state.compacted_rv > self.after {
            return Err(WatchError::Lagged);
        }
        let start = state.log.partition_point(|e| e.rv <= self.after);
        self.backlog
            .extend(state.log.range(start..).take(BATCH).cloned());
        if let Some(last) = self.backlog.back() {
            self.after = last.rv;
        }
        Ok(())
    }

    /// Whether no change is waiting: everything committed so far has been delivered.
    pub fn is_idle(&self) -> bool {
        self.backlog.is_empty() && *self.published.borrow() <= self.after
    }

    /// The resourceVersion up to which every change has been delivered (when idle, a bookmark
    /// may say it).
    pub fn position(&self) -> Rv {
        match self.backlog.front() {
            Some(e) => e.rv - 1,
            None => self.after,
        }
    }
}
