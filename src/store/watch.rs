//! A watcher: the changes after a point, in resourceVersion order, read straight from the
//! store's change log.
//!
//! There is no second buffer per watcher or per channel: the log, bounded in bytes, count and
//! age, is the only copy of history, and a watcher is just a position in it. A watcher is
//! either of every kind (an API watch) or of a few kinds (a controller's). A writer wakes the
//! first by publishing the newest resourceVersion, and the second only when a commit touches
//! one of its kinds: most commits concern a kind or two, and a dozen controllers each woken
//! only to skip every change cost a few percent of the server's CPU under load. A woken
//! watcher takes the next batch of changes from the log.
//!
//! A watcher that falls so far behind that the log has been trimmed past its position (for a
//! watcher of a few kinds: past a change of one of them) is cut off with
//! [`WatchError::Lagged`]; its client resumes from the last resourceVersion it saw (or
//! relists), exactly as after a dropped connection. Writers never wait for watchers.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::{Notify, watch};

use super::{Inner, Rv, WatchEvent};
use crate::resources::Kind;

/// Changes taken from the log at once; they are shared with the log, not copied.
const BATCH: usize = 256;
/// Log entries a watcher of a few kinds looks at under one read of the log, matching or not:
/// a long run of other kinds' changes is skipped in steps that hold the lock briefly.
const SCAN: usize = 4096;

// A kind is a bit of a `KindSet`.
const _: () = assert!(Kind::ALL.len() <= 64);

/// A set of kinds, a bit each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct KindSet(u64);

impl KindSet {
    pub(super) const ALL: KindSet = KindSet(u64::MAX);

    pub(super) fn of(kinds: &[Kind]) -> KindSet {
        let mut set = KindSet::default();
        for k in kinds {
            set.insert(*k);
        }
        set
    }

    pub(super) fn insert(&mut self, kind: Kind) {
        self.0 |= 1 << kind as u32;
    }

    pub(super) fn contains(self, kind: Kind) -> bool {
        self.0 & (1 << kind as u32) != 0
    }

    pub(super) fn intersects(self, other: KindSet) -> bool {
        self.0 & other.0 != 0
    }

    pub(super) fn kinds(self) -> impl Iterator<Item = Kind> {
        Kind::ALL.iter().copied().filter(move |k| self.contains(*k))
    }
}

/// A watcher of a few kinds, as the writer sees it: what to wake it for, and how.
pub(super) struct Subscription {
    pub(super) kinds: KindSet,
    pub(super) wake: Notify,
}

/// Wakes the watchers of a few kinds that follow any kind in `touched`, after the log has
/// their changes. A watcher not waiting finds the wake-up when it next waits.
pub(super) fn wake_followers(inner: &Inner, touched: KindSet) {
    if touched == KindSet::default() {
        return;
    }
    for s in inner.subscriptions.lock().iter() {
        if s.kinds.intersects(touched) {
            s.wake.notify_one();
        }
    }
}

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
    /// Every change up to here has been taken from the log (or, for a watcher of a few kinds,
    /// skipped as another kind's).
    after: Rv,
    backlog: VecDeque<Arc<WatchEvent>>,
    wake: Wake,
}

enum Wake {
    /// A watcher of every kind, woken by every commit.
    Every(watch::Receiver<Rv>),
    /// A watcher of these kinds, woken by commits that touch them.
    Kinds(Arc<Subscription>),
}

impl Watcher {
    /// A watcher of every change after `after`.
    pub(super) fn new(inner: Arc<Inner>, after: Rv) -> Self {
        let published = inner.published.subscribe();
        Watcher {
            inner,
            after,
            backlog: VecDeque::new(),
            wake: Wake::Every(published),
        }
    }

    /// A watcher of the changes to `kinds` after `after`.
    pub(super) fn of_kinds(inner: Arc<Inner>, after: Rv, kinds: KindSet) -> Self {
        let subscription = Arc::new(Subscription {
            kinds,
            wake: Notify::new(),
        });
        inner.subscriptions.lock().push(subscription.clone());
        Watcher {
            inner,
            after,
            backlog: VecDeque::new(),
            wake: Wake::Kinds(subscription),
        }
    }

    /// The next change. Cancel-safe.
    pub async fn next(&mut self) -> Result<Arc<WatchEvent>, WatchError> {
        loop {
            if let Some(e) = self.try_next() {
                return e;
            }
            match &mut self.wake {
                Wake::Every(published) => {
                    if published.changed().await.is_err() {
                        return Err(WatchError::Closed);
                    }
                }
                // A wake-up given while this waited elsewhere (or was cancelled) is kept for
                // the next wait, so none is lost between `try_next` and here.
                Wake::Kinds(s) => s.wake.notified().await,
            }
        }
    }

    /// The next change if one is ready now.
    pub fn try_next(&mut self) -> Option<Result<Arc<WatchEvent>, WatchError>> {
        while self.backlog.is_empty() {
            let newest = match &mut self.wake {
                Wake::Every(published) => *published.borrow_and_update(),
                Wake::Kinds(_) => *self.inner.published.borrow(),
            };
            if newest <= self.after {
                return None;
            }
            let before = self.after;
            if let Err(e) = self.refill() {
                return Some(Err(e));
            }
            if self.after == before {
                // Nothing in the log after this watcher's position (published is never ahead
                // of the log, so this does not happen; never spin if it did).
                return None;
            }
        }
        self.backlog.pop_front().map(Ok)
    }

    fn refill(&mut self) -> Result<(), WatchError> {
        let state = self.inner.state.read();
        let start = state.log.partition_point(|e| e.rv <= self.after);
        match &self.wake {
            Wake::Every(_) => {
                if state.compacted_rv > self.after {
                    return Err(WatchError::Lagged);
                }
                self.backlog
                    .extend(state.log.range(start..).take(BATCH).cloned());
                if let Some(last) = self.backlog.back() {
                    self.after = last.rv;
                }
            }
            Wake::Kinds(s) => {
                // Only a trimmed change of a followed kind is a change missed.
                if s.kinds
                    .kinds()
                    .any(|k| state.trimmed[k as usize] > self.after)
                {
                    return Err(WatchError::Lagged);
                }
                for e in state.log.range(start..).take(SCAN) {
                    self.after = e.rv;
                    if s.kinds.contains(e.kind()) {
                        self.backlog.push_back(e.clone());
                        if self.backlog.len() == BATCH {
                            break;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether no change is waiting: everything committed so far has been delivered. (A
    /// watcher of a few kinds is not woken by other kinds' commits, so it may not know yet
    /// that they were not for it: it says idle only after it has looked.)
    pub fn is_idle(&self) -> bool {
        self.backlog.is_empty() && *self.inner.published.borrow() <= self.after
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

#[cfg(test)]
impl Watcher {
    /// Whether a commit woke this watcher of a few kinds since it last waited (and takes the
    /// wake-up).
    pub(super) fn take_wake_up(&self) -> bool {
        use futures::FutureExt;
        match &self.wake {
            Wake::Kinds(s) => s.wake.notified().now_or_never().is_some(),
            Wake::Every(_) => panic!("a watcher of every kind is woken by every commit"),
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Wake::Kinds(s) = &self.wake {
            self.inner
                .subscriptions
                .lock()
                .retain(|other| !Arc::ptr_eq(other, s));
        }
    }
}
