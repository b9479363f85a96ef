//! The controller runtime every controller shares, in the shape of kube-runtime.
//!
//! A controller is a [`Reconciler`]: `reconcile(key) -> Action`, plus an `error_policy`. The
//! runtime feeds it keys from the store's change feed (the same feed watches use), from a
//! periodic resync, and from its own requeues; it never tells the reconciler *why* a key came,
//! so every reconcile must read the current state and be idempotent (level-triggered: a missed
//! event is harmless, the resync brings the key back).
//!
//! Guarantees (see [`queue`]): keys are deduplicated, one key never runs twice at once, global
//! concurrency is bounded, and failing keys back off exponentially (5 ms doubling to 2 min).
//! A controller starts reconciling only after it has seen a full snapshot of the kinds it
//! follows.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::{ControllerErrorLabels, ControllerLabels, ControllerResultLabels, Metrics};
use crate::resources::Kind;
use crate::store::{Store, Stored, WatchError, WatchEvent};

pub mod clock;
pub mod error;
pub mod few_set;
pub mod queue;

pub use clock::Clock;
pub use error::Error;
pub use few_set::FewSet;
pub use queue::Queue;

/// What to do with a key after a reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Reconcile again after this long, even if nothing changes.
    Requeue(Duration),
    /// Nothing to do until something changes (or the periodic resync).
    AwaitChange,
}

impl Action {
    pub fn requeue(after: Duration) -> Self {
        Action::Requeue(after)
    }
    pub fn await_change() -> Self {
        Action::AwaitChange
    }
}

/// Exponential backoff for the n-th consecutive failure: 5 ms, 10 ms, ... up to 2 minutes.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    Duration::from_millis(5u64.saturating_mul(1 << exp)).min(Duration::from_secs(120))
}

#[async_trait::async_trait]
pub trait Reconciler: Send + Sync + 'static {
    type Key: Clone + Eq + Hash + Debug + Send + Sync + 'static;

    fn name(&self) -> &'static str;

    /// The kinds whose changes this controller follows: its watcher is woken only by commits
    /// that touch them, and gives only their changes (none listed: every kind, as the store's
    /// `snapshot_and_watch` reads it).
    fn kinds(&self) -> &'static [Kind];

    /// Clears the controller's own indexes before a full snapshot is replayed through `observe`.
    fn reset(&self) {}

    /// Updates the controller's own indexes with an object version (`deleted`: it is gone).
    /// Called for every object of the snapshot, then for every change, before `keys_for`.
    fn observe(&self, _object: &Arc<Stored>, _deleted: bool) {}

    /// The keys a change concerns.
    fn keys_for(&self, event: &WatchEvent) -> Vec<Self::Key>;

    /// The keys an existing object concerns (for the initial snapshot and resyncs).
    fn keys_for_object(&self, object: &Stored) -> Vec<Self::Key>;

    /// Keys reconciled at start and at every resync whether or not any object names them: for
    /// objects a controller keeps in being (a missing one has no event to bring its key).
    fn standing_keys(&self) -> Vec<Self::Key> {
        Vec::new()
    }

    /// Makes one step towards the desired state of `key`.
    async fn reconcile(&self, key: &Self::Key) -> Result<Action, Error>;

    /// What to do after a failed reconcile; `failures` counts consecutive failures of the key.
    /// By default, what the error says (see [`Error::retry_after`]).
    fn error_policy(&self, _key: &Self::Key, error: &Error, failures: u32) -> Action {
        Action::Requeue(error.retry_after(failures))
    }
}

#[derive(Clone, Debug)]
pub struct ControllerOptions {
    /// Reconciles running at once.
    pub concurrency: usize,
    /// Every key is reconciled at least this often.
    pub resync: Duration,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            concurrency: 32,
            resync: Duration::from_secs(60),
        }
    }
}

/// Objects a controller looks at between two yields to the runtime when it walks all of them
/// (start-up, resync): each look decodes the object, and a walk over a million objects must
/// not hold a runtime thread that serves requests.
const WALK_CHUNK: usize = 256;

/// The most objects one controller's periodic resync looks at per second. A resync is a safety
/// net (changes arrive by the watch, and failures requeue themselves), so it may take longer
/// than its period where there are many objects; what it must not do is take the CPU from the
/// requests being served. Unpaced, the resync of a dozen controllers over 300,000 objects held
/// both cores for over ten seconds, and listing one namespace took 527 ms instead of 0.6 ms.
/// At this pace a dozen controllers cost a few percent of a core; a million objects are walked
/// in about 17 minutes.
const RESYNC_OBJECTS_PER_SECOND: u32 = 1_000;

/// Replays the store's current objects into the reconciler's indexes and the queue.
async fn sync_snapshot<R: Reconciler>(r: &R, queue: &Queue<R::Key>, objects: &[Arc<Stored>]) {
    r.reset();
    for chunk in objects.chunks(WALK_CHUNK) {
        for o in chunk {
            r.observe(o, false);
        }
        tokio::task::yield_now().await;
    }
    for k in r.standing_keys() {
        queue.add(k);
    }
    for chunk in objects.chunks(WALK_CHUNK) {
        for o in chunk {
            for k in r.keys_for_object(o) {
                queue.add(k);
            }
        }
        tokio::task::yield_now().await;
    }
}

/// Runs a controller until `shutdown`.
pub async fn run<R: Reconciler>(
    reconciler: Arc<R>,
    store: Store,
    options: ControllerOptions,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let name = reconciler.name();
    let queue = Arc::new(Queue::<R::Key>::new());
    let (snapshot, _, watcher) = store.snapshot_and_watch(reconciler.kinds());
    sync_snapshot(reconciler.as_ref(), &queue, &snapshot).await;
    drop(snapshot);
    tracing::debug!(controller = name, "caches synced; starting");

    tokio::spawn(follow_changes(
        reconciler.clone(),
        store.clone(),
        watcher,
        queue.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(resync(
        reconciler.clone(),
        store.clone(),
        queue.clone(),
        options.resync,
        shutdown.clone(),
    ));

    let labels = ControllerLabels {
        controller: name.to_string(),
    };
    let failures: Arc<Mutex<HashMap<R::Key, u32>>> = Arc::default();
    let slots = Arc::new(Semaphore::new(options.concurrency.max(1)));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let key = tokio::select! {
            _ = shutdown.cancelled() => break,
            k = queue.next() => match k { Some(k) => k, None => break },
        };
        metrics
            .queue_depth
            .get_or_create(&labels)
            .set(queue.len() as i64);
        let reconciler = reconciler.clone();
        let queue = queue.clone();
        let metrics = metrics.clone();
        let failures = failures.clone();
        let labels = labels.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = reconciler.reconcile(&key).await;
            metrics
                .reconcile_duration
                .get_or_create(&labels)
                .observe(started.elapsed().as_secs_f64());
            let (outcome, retry) = match result {
                Ok(action) => {
                    failures.lock().remove(&key);
                    match action {
                        Action::Requeue(d) => ("requeue", Some(d)),
                        Action::AwaitChange => ("ok", None),
                    }
                }
                Err(e) => {
                    let n = {
                        let mut f = failures.lock();
                        let n = f.entry(key.clone()).or_insert(0);
                        *n += 1;
                        *n
                    };
                    tracing::debug!(controller = labels.controller, key = ?key, failures = n, error = %e, "reconcile failed");
                    metrics
                        .reconcile_errors
                        .get_or_create(&ControllerErrorLabels {
                            controller: labels.controller.clone(),
                            error: e.metric_label().to_string(),
                        })
                        .inc();
                    let retry = match reconciler.error_policy(&key, &e, n) {
                        Action::Requeue(d) => Some(d),
                        Action::AwaitChange => None,
                    };
                    ("error", retry)
                }
            };
            metrics
                .reconciles
                .get_or_create(&ControllerResultLabels {
                    controller: labels.controller.clone(),
                    result: outcome.to_string(),
                })
                .inc();
            queue.done(&key, retry);
            drop(permit);
        });
    }
    queue.close();
}

async fn follow_changes<R: Reconciler>(
    reconciler: Arc<R>,
    store: Store,
    mut watcher: crate::store::Watcher,
    queue: Arc<Queue<R::Key>>,
    shutdown: CancellationToken,
) {
    let kinds = reconciler.kinds();
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = watcher.next() => e,
        };
        match event {
            // The watcher gives only changes of the kinds it was started for.
            Ok(e) => {
                reconciler.observe(&e.object, e.type_ == crate::store::EventType::Deleted);
                for k in reconciler.keys_for(&e) {
                    queue.add(k);
                }
            }
            Err(WatchError::Lagged) => {
                // Fell behind the change feed: start over from a fresh snapshot. Nothing is
                // lost, because reconciles read current state anyway.
                tracing::warn!(
                    controller = reconciler.name(),
                    "fell behind the change feed; resyncing"
                );
                let (snapshot, _, w) = store.snapshot_and_watch(kinds);
                watcher = w;
                sync_snapshot(reconciler.as_ref(), &queue, &snapshot).await;
            }
            Err(_) => return,
        }
    }
}

async fn resync<R: Reconciler>(
    reconciler: Arc<R>,
    store: Store,
    queue: Arc<Queue<R::Key>>,
    period: Duration,
    shutdown: CancellationToken,
) {
    // A walk that outlasts the period is followed by the next one at once, and the period
    // counts from there: no burst of missed ticks.
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        for k in reconciler.standing_keys() {
            queue.add(k);
        }
        for kind in reconciler.kinds() {
            // Page by page, in key order, so that a long walk holds no snapshot: versions
            // replaced meanwhile are freed. It looks at as many objects as there were when it
            // began: objects created meanwhile ahead of it would otherwise keep a walk under
            // sustained creates from ever reaching the next kind. The next resync has them.
            let mut after: Option<crate::store::ObjectKey> = None;
            let mut left = store.count(*kind);
            while left > 0 {
                let (page, _, more) =
                    store.list_page(*kind, None, after.as_ref(), WALK_CHUNK.min(left), |_| true);
                left -= page.len();
                for o in &page {
                    for k in reconciler.keys_for_object(o) {
                        queue.add(k);
                    }
                }
                let pause = Duration::from_secs(1) * page.len() as u32 / RESYNC_OBJECTS_PER_SECOND;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                match page.last() {
                    Some(last) if more => after = Some(last.key.clone()),
                    _ => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::resources::{StorageClass, Typed as _};
    use crate::store::{StoreOptions, WriteOp};

    /// Looks at storage classes, and counts the looks.
    #[derive(Default)]
    struct Walker {
        looked: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Reconciler for Walker {
        type Key = String;
        fn name(&self) -> &'static str {
            "walker"
        }
        fn kinds(&self) -> &'static [Kind] {
            &[Kind::StorageClass]
        }
        fn keys_for(&self, _event: &WatchEvent) -> Vec<String> {
            Vec::new()
        }
        fn keys_for_object(&self, object: &Stored) -> Vec<String> {
            self.looked.fetch_add(1, Ordering::SeqCst);
            vec![object.key.name.to_string()]
        }
        async fn reconcile(&self, _key: &String) -> Result<Action, Error> {
            Ok(Action::await_change())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_resync_looks_at_no_more_than_a_thousand_objects_a_second() {
        let store = Store::in_memory(StoreOptions::default()).await;
        let create = |prefix: &'static str, batches: usize| {
            let store = store.clone();
            async move {
                for batch in 0..batches {
                    let ops = (0..100)
                        .map(|i| {
                            let mut sc = StorageClass::default();
                            sc.metadata.name = Some(format!("{prefix}{:04}", batch * 100 + i));
                            sc.provisioner = "example.com/x".into();
                            WriteOp::create(sc.into_any())
                        })
                        .collect();
                    store.write(ops).await.unwrap();
                }
            }
        };
        create("c", 30).await;
        let walker = Arc::new(Walker::default());
        let queue = Arc::new(Queue::<String>::new());
        let shutdown = CancellationToken::new();
        tokio::spawn(resync(
            walker.clone(),
            store.clone(),
            queue.clone(),
            Duration::from_secs(60),
            shutdown.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(59_900)).await;
        assert_eq!(
            walker.looked.load(Ordering::SeqCst),
            0,
            "not before the period"
        );
        // Half a second into the resync: about 500 of the 3,000, a page of 256 at a time.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(walker.looked.load(Ordering::SeqCst), 512);
        // Objects created meanwhile, ahead of the walk, do not lengthen it: under sustained
        // creates it would never end.
        create("d", 10).await;
        // Every object there was within about three seconds, each key queued once.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(walker.looked.load(Ordering::SeqCst), 3000);
        assert_eq!(queue.len(), 3000);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            walker.looked.load(Ordering::SeqCst),
            3000,
            "until the next resync"
        );
        shutdown.cancel();
    }

    #[test]
    fn backoff_doubles_from_five_milliseconds_to_two_minutes() {
        assert_eq!(backoff(1), Duration::from_millis(5));
        assert_eq!(backoff(2), Duration::from_millis(10));
        assert_eq!(backoff(5), Duration::from_millis(80));
        assert_eq!(backoff(30), Duration::from_secs(120));
    }
}
