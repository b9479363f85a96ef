//! Long copies in the background, for providers whose snapshots, restores and clones copy data
//! (the local and NFS providers).
//!
//! A copy of a large tree takes longer than one provider call may: the first call starts the
//! copy, and every later call with the same key (the snapshot's or volume's name) reports how
//! far it got, as [`ErrorKind::InProgress`](crate::ErrorKind::InProgress) or a not-ready
//! snapshot, until one finds it done. The controllers call again on their own, so nothing
//! waits on a copy but the object that needs it.
//!
//! The registry is in memory: a restart forgets running copies, and the provider starts them
//! again from scratch (it copies into a scratch place and moves the result into place only when
//! complete, so a half-done copy is never mistaken for a finished one).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use parking_lot::{Condvar, Mutex};

use crate::{Progress, ProviderError, Result};

/// What one copy reports as it goes, and how it is told to stop.
#[derive(Default)]
pub struct Tracker {
    done: AtomicI64,
    total: AtomicI64,
    cancelled: AtomicBool,
}

impl Tracker {
    /// Sets how many bytes the whole copy moves (known after a first walk of the source).
    pub fn set_total(&self, bytes: i64) {
        self.total.store(bytes, Ordering::Relaxed);
    }

    /// Counts bytes copied.
    pub fn add(&self, bytes: i64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn progress(&self) -> Progress {
        Progress {
            done_bytes: self.done.load(Ordering::Relaxed),
            total_bytes: self.total.load(Ordering::Relaxed),
        }
    }

    /// Asks the copy to stop.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// Whether the copy should stop (its target is being deleted). A copy checks this between
    /// files and fails with [`Tracker::cancelled_error`].
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    pub fn cancelled_error() -> ProviderError {
        ProviderError::temporary("the copy was cancelled")
    }
}

struct Job {
    tracker: Arc<Tracker>,
    /// `Some` once the copy ended.
    outcome: Mutex<Option<Result<()>>>,
    ended: Condvar,
}

/// Where a copy stands, as [`Copies::poll`] sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum CopyState {
    Running(Progress),
    /// Finished well; the job is forgotten, so the caller must now move the result into place.
    Done,
    /// Failed; the job is forgotten, so the next poll starts it again.
    Failed(ProviderError),
}

/// The copies one provider instance is running, by key.
#[derive(Default)]
pub struct Copies {
    jobs: Mutex<HashMap<String, Arc<Job>>>,
}

impl Copies {
    /// Starts copy `key` with `start` (on the Tokio runtime) unless it is already running;
    /// returns where it stands. A finished copy's outcome is returned once.
    pub fn poll<F>(&self, key: &str, start: impl FnOnce(Arc<Tracker>) -> F) -> CopyState
    where
        F: Future<Output = Result<()>> + Send + 'static,
    {
        let mut jobs = self.jobs.lock();
        if let Some(job) = jobs.get(key).cloned() {
            let outcome = job.outcome.lock().take();
            return match outcome {
                None => CopyState::Running(job.tracker.progress()),
                Some(result) => {
                    jobs.remove(key);
                    match result {
                        Ok(()) => CopyState::Done,
                        Err(e) => CopyState::Failed(e),
                    }
                }
            };
        }
        let job = Arc::new(Job {
            tracker: Arc::new(Tracker::default()),
            outcome: Mutex::new(None),
            ended: Condvar::new(),
        });
        jobs.insert(key.to_string(), job.clone());
        let copy = start(job.tracker.clone());
        tokio::spawn(async move {
            let result = copy.await;
            *job.outcome.lock() = Some(result);
            job.ended.notify_all();
        });
        CopyState::Running(Progress::default())
    }

    /// Stops copy `key`, if one runs, and waits (blocking) until it has stopped writing, so
    /// its scratch place can be removed. Returns whether there was one.
    pub fn cancel_blocking(&self, key: &str) -> bool {
        let Some(job) = self.jobs.lock().remove(key) else {
            return false;
        };
        job.tracker.cancel();
        let mut outcome = job.outcome.lock();
        while outcome.is_none() {
            job.ended.wait(&mut outcome);
        }
        true
    }

    /// Whether copy `key` is running now.
    pub fn is_running(&self, key: &str) -> bool {
        self.jobs.lock().contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_copy_runs_once_reports_progress_and_its_outcome_once() {
        let copies = Copies::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let started = copies.poll("a", |t| async move {
            t.set_total(100);
            t.add(40);
            rx.await.ok();
            Ok(())
        });
        assert_eq!(started, CopyState::Running(Progress::default()));
        tokio::time::sleep(Duration::from_millis(20)).await;
        // A second poll does not start a second copy: its start closure is never called.
        let state = copies.poll("a", |_| async { panic!("started twice") });
        assert_eq!(
            state,
            CopyState::Running(Progress {
                done_bytes: 40,
                total_bytes: 100
            })
        );
        tx.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(copies.poll("a", |_| async { Ok(()) }), CopyState::Done);
        assert!(!copies.is_running("a"), "a finished copy is forgotten");
    }

    #[tokio::test]
    async fn a_failed_copy_is_reported_then_started_again() {
        let copies = Copies::default();
        copies.poll("a", |_| async { Err(ProviderError::temporary("disk")) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(matches!(
            copies.poll("a", |_| async { Ok(()) }),
            CopyState::Failed(e) if e.message == "disk"
        ));
        assert!(matches!(
            copies.poll("a", |_| async { Ok(()) }),
            CopyState::Running(_)
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelling_waits_until_the_copy_stopped() {
        let copies = Arc::new(Copies::default());
        let stopped = Arc::new(AtomicBool::new(false));
        let seen = stopped.clone();
        copies.poll("a", move |t| async move {
            while !t.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen.store(true, Ordering::SeqCst);
            Err(Tracker::cancelled_error())
        });
        let c = copies.clone();
        let had = tokio::task::spawn_blocking(move || c.cancel_blocking("a"))
            .await
            .unwrap();
        assert!(had);
        assert!(stopped.load(Ordering::SeqCst));
        assert!(!copies.is_running("a"));
    }
}
