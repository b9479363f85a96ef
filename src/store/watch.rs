//! A watcher: the changes after a point, in resourceVersion order, without blocking writers.
//!
//! Live changes arrive through a bounded broadcast channel. A watcher that falls more than the
//! channel's capacity behind is cut off with [`WatchError::Lagged`]; its client resumes from the
//! last resourceVersion it saw (or relists), exactly as after a dropped connection.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast;

use super::{Rv, WatchEvent};

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
    backlog: VecDeque<Arc<WatchEvent>>,
    rx: broadcast::Receiver<Arc<WatchEvent>>,
}

impl Watcher {
    pub(super) fn new(
        backlog: VecDeque<Arc<WatchEvent>>,
        rx: broadcast::Receiver<Arc<WatchEvent>>,
    ) -> Self {
        Watcher { backlog, rx }
    }

    /// The next change. Cancel-safe.
    pub async fn next(&mut self) -> Result<Arc<WatchEvent>, WatchError> {
        if let Some(e) = self.backlog.pop_front() {
            return Ok(e);
        }
        match self.rx.recv().await {
            Ok(e) => Ok(e),
            Err(broadcast::error::RecvError::Lagged(_)) => Err(WatchError::Lagged),
            Err(broadcast::error::RecvError::Closed) => Err(WatchError::Closed),
        }
    }

    /// The next change if one is ready now.
    pub fn try_next(&mut self) -> Option<Result<Arc<WatchEvent>, WatchError>> {
        if let Some(e) = self.backlog.pop_front() {
            return Some(Ok(e));
        }
        match self.rx.try_recv() {
            Ok(e) => Some(Ok(e)),
            Err(broadcast::error::TryRecvError::Empty) => None,
            Err(broadcast::error::TryRecvError::Lagged(_)) => Some(Err(WatchError::Lagged)),
            Err(broadcast::error::TryRecvError::Closed) => Some(Err(WatchError::Closed)),
        }
    }

    /// Whether no change is waiting.
    pub fn is_idle(&self) -> bool {
        self.backlog.is_empty() && self.rx.is_empty()
    }
}
