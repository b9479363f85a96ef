//! Events: what controllers tell users about their objects, written as `Event` objects.
//!
//! Recording never blocks a reconcile: records go through a bounded channel to a writer task.
//! Repeats of the same event on the same object are aggregated, as Kubernetes' event
//! correlator does: the first is written at once, repeats increase `count` in memory and are
//! written at most every [`FLUSH_EVERY`], so a controller retrying in a loop cannot flood the
//! store. At most [`REMEMBER_AT_MOST`] events are remembered for that, as Kubernetes does.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::registry::{Registry, WriteOptions};
use crate::resources::{AnyObject, Event, Subresource};

/// How often an aggregated event's new count is written.
const FLUSH_EVERY: Duration = Duration::from_secs(15);
/// How long an event is remembered for aggregation.
const REMEMBER: Duration = Duration::from_secs(600);
/// How many events are remembered for aggregation; beyond this the one least recently seen is
/// forgotten, and its next repeat is written as a new event. Kubernetes' correlator is an LRU
/// cache of 4,096 as well.
/// Without a bound, objects created as fast as a tenant can (each with its own event) grew
/// this by one entry per object for ten minutes: about 300 bytes each, gigabytes under load.
const REMEMBER_AT_MOST: usize = 4096;
/// Records waiting to be written; beyond this, new records are dropped (and logged).
const BUFFER: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

struct Record {
    involved: ObjectReference,
    namespace: String,
    type_: EventType,
    reason: &'static str,
    message: String,
    component: &'static str,
}

/// A handle controllers record events with. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Record>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
}

/// A reference to an object, as events name it.
pub fn reference(obj: &AnyObject) -> ObjectReference {
    let info = obj.kind().info();
    let m = obj.meta();
    ObjectReference {
        api_version: Some(info.api_version.to_string()),
        kind: Some(info.kind.to_string()),
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        field_path: None,
    }
}

impl Recorder {
    /// Starts the writer task; it stops with `shutdown`.
    pub fn start(registry: Registry, shutdown: CancellationToken) -> Recorder {
        let (tx, rx) = mpsc::channel(BUFFER);
        tokio::spawn(writer(registry, rx, shutdown));
        Recorder {
            tx,
            dropped: Arc::default(),
        }
    }

    /// Records an event about `obj` on behalf of `component`.
    pub fn record(
        &self,
        component: &'static str,
        obj: &AnyObject,
        type_: EventType,
        reason: &'static str,
        message: impl Into<String>,
    ) {
        let involved = reference(obj);
        // Events about cluster-scoped objects live in "default", as in Kubernetes (tenants of
        // "default" do not see them: see `auth`).
        let namespace = involved
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| crate::resources::names::CLUSTER_EVENTS_NAMESPACE.to_string());
        let record = Record {
            involved,
            namespace,
            type_,
            reason,
            // Provider errors reach events through here; no account identifiers in them.
            message: stowage_provider::redact::account_identifiers(&message.into()),
            component,
        };
        if self.tx.try_send(record).is_err() {
            // Under a storm, say so once per thousand drops rather than once per event.
            let n = self
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n.is_multiple_of(1000) {
                tracing::warn!(
                    dropped = n + 1,
                    reason,
                    "event buffer full; dropping events"
                );
            }
        }
    }

    pub fn normal(
        &self,
        component: &'static str,
        obj: &AnyObject,
        reason: &'static str,
        message: impl Into<String>,
    ) {
        self.record(component, obj, EventType::Normal, reason, message);
    }

    pub fn warning(
        &self,
        component: &'static str,
        obj: &AnyObject,
        reason: &'static str,
        message: impl Into<String>,
    ) {
        self.record(component, obj, EventType::Warning, reason, message);
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct AggregateKey {
    uid: String,
    reason: &'static str,
    message: String,
}

#[derive(Clone)]
struct Aggregate {
    name: String,
    namespace: String,
    count: i32,
    written_count: i32,
    last_seen: Time,
    last_written: Instant,
    /// When it was last seen, in [`Correlator`]'s own count.
    used: u64,
}

/// The events written recently, to aggregate their repeats: at most [`REMEMBER_AT_MOST`]
/// (forgetting the one least recently seen), for at most [`REMEMBER`].
#[derive(Default)]
struct Correlator {
    /// The key is shared with `order`: an event's uid and message are copied once, not at
    /// every use (copies of them were 2% of the server's CPU under a flood of new claims).
    seen: HashMap<Arc<AggregateKey>, Aggregate>,
    /// Each use of a key, oldest first, with the count it had then. An entry whose count is
    /// not its aggregate's `used` any more is stale: it was seen again since. Rebuilt when
    /// stale entries outnumber live ones, so it stays within twice [`REMEMBER_AT_MOST`].
    order: VecDeque<(u64, Arc<AggregateKey>)>,
    /// Uses so far.
    uses: u64,
}

impl Correlator {
    /// Counts a repeat of a remembered event; false if it is not remembered.
    fn repeat(&mut self, key: &AggregateKey, now: &Time) -> bool {
        // Repeats are rare next to new events: two lookups, to share the remembered key.
        let Some((key, _)) = self.seen.get_key_value(key) else {
            return false;
        };
        let key = key.clone();
        let Some(a) = self.seen.get_mut(&key) else {
            return false;
        };
        a.count += 1;
        a.last_seen = now.clone();
        self.uses += 1;
        a.used = self.uses;
        self.order.push_back((self.uses, key));
        if self.order.len() > 2 * REMEMBER_AT_MOST {
            self.drop_stale();
        }
        true
    }

    /// Remembers a new event. Returns the one forgotten to make room, if its count changed
    /// since it was written (the caller writes it one last time).
    fn remember(&mut self, key: AggregateKey, mut aggregate: Aggregate) -> Option<Aggregate> {
        let mut forgotten = None;
        if self.seen.len() >= REMEMBER_AT_MOST {
            while let Some((used, oldest)) = self.order.pop_front() {
                if let Entry::Occupied(entry) = self.seen.entry(oldest)
                    && entry.get().used == used
                {
                    forgotten = Some(entry.remove()).filter(|a| a.count != a.written_count);
                    break;
                }
            }
        }
        self.uses += 1;
        aggregate.used = self.uses;
        let key = Arc::new(key);
        self.order.push_back((self.uses, key.clone()));
        self.seen.insert(key, aggregate);
        forgotten
    }

    /// The events with repeats not yet written, to write now (each then counts as written),
    /// and forgets those last written longer than [`REMEMBER`] ago. In that order: an event
    /// repeated just before it would be forgotten still has its count written.
    fn flush(&mut self, now: Instant) -> Vec<Aggregate> {
        let mut due = Vec::new();
        for a in self.seen.values_mut() {
            if a.count != a.written_count {
                a.written_count = a.count;
                a.last_written = now;
                due.push(a.clone());
            }
        }
        self.forget_old(now);
        due
    }

    /// Forgets the events last written longer than [`REMEMBER`] ago.
    fn forget_old(&mut self, now: Instant) {
        self.seen
            .retain(|_, a| now.duration_since(a.last_written) < REMEMBER);
        self.drop_stale();
    }

    fn drop_stale(&mut self) {
        let seen = &self.seen;
        self.order
            .retain(|(used, k)| seen.get(k).is_some_and(|a| a.used == *used));
    }
}

async fn writer(registry: Registry, mut rx: mpsc::Receiver<Record>, shutdown: CancellationToken) {
    let mut correlator = Correlator::default();
    let writes = Arc::new(Semaphore::new(64));
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = flush.tick() => {
                for a in correlator.flush(Instant::now()) {
                    spawn_count_update(&registry, &writes, &a).await;
                }
            }
            record = rx.recv() => {
                let Some(r) = record else { return };
                let key = AggregateKey {
                    uid: r.involved.uid.clone().unwrap_or_default(),
                    reason: r.reason,
                    message: r.message.clone(),
                };
                let now = Time(jiff::Timestamp::now());
                if correlator.repeat(&key, &now) {
                    continue;
                }
                let name = format!(
                    "{}.{:x}",
                    r.involved.name.as_deref().unwrap_or("object"),
                    jiff::Timestamp::now().as_nanosecond()
                );
                let forgotten = correlator.remember(key, Aggregate {
                    name: name.clone(),
                    namespace: r.namespace.clone(),
                    count: 1,
                    written_count: 1,
                    last_seen: now.clone(),
                    last_written: Instant::now(),
                    used: 0,
                });
                if let Some(a) = forgotten {
                    spawn_count_update(&registry, &writes, &a).await;
                }
                let event = Event {
                    metadata: ObjectMeta {
                        name: Some(name),
                        namespace: Some(r.namespace.clone()),
                        ..Default::default()
                    },
                    involved_object: r.involved,
                    reason: Some(r.reason.to_string()),
                    message: Some(truncate(r.message)),
                    type_: Some(r.type_.as_str().to_string()),
                    count: Some(1),
                    first_timestamp: Some(now.clone()),
                    last_timestamp: Some(now),
                    source: Some(EventSource { component: Some(r.component.to_string()), host: None }),
                    reporting_component: Some(format!("stowage/{}", r.component)),
                    reporting_instance: Some("stowage".to_string()),
                    ..Default::default()
                };
                let Ok(permit) = writes.clone().acquire_owned().await else { return };
                let registry = registry.clone();
                let namespace = r.namespace;
                tokio::spawn(async move {
                    if let Err(e) = registry.create(&namespace, event, &WriteOptions::default()).await {
                        tracing::debug!(error = %e, "could not write an event");
                    }
                    drop(permit);
                });
            }
        }
    }
}

async fn spawn_count_update(registry: &Registry, writes: &Arc<Semaphore>, a: &Aggregate) {
    let Ok(permit) = writes.clone().acquire_owned().await else {
        return;
    };
    let registry = registry.clone();
    let patch = crate::registry::Patch::Merge(serde_json::json!({
        "count": a.count,
        "lastTimestamp": a.last_seen,
    }));
    let (namespace, name) = (a.namespace.clone(), a.name.clone());
    tokio::spawn(async move {
        let _ = registry
            .patch::<Event>(
                &namespace,
                &name,
                patch,
                Subresource::Main,
                &WriteOptions::default(),
            )
            .await;
        drop(permit);
    });
}

/// Kubernetes truncates event messages at 1 KiB.
fn truncate(mut message: String) -> String {
    const MAX: usize = 1024;
    if message.len() > MAX {
        let mut cut = MAX - 3;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("...");
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> AggregateKey {
        AggregateKey {
            uid: format!("uid-{i}"),
            reason: "FailedBinding",
            message: "no persistent volumes available".to_string(),
        }
    }

    fn written(name: &str) -> Aggregate {
        Aggregate {
            name: name.to_string(),
            namespace: "ns".to_string(),
            count: 1,
            written_count: 1,
            last_seen: Time(jiff::Timestamp::now()),
            last_written: Instant::now(),
            used: 0,
        }
    }

    #[test]
    fn the_event_least_recently_seen_is_forgotten_beyond_the_bound() {
        let mut c = Correlator::default();
        let now = Time(jiff::Timestamp::now());
        // The first has a repeat not yet written.
        let mut unwritten = written("e0");
        unwritten.count = 2;
        assert!(c.remember(key(0), unwritten).is_none());
        for i in 1..REMEMBER_AT_MOST {
            assert!(c.remember(key(i), written(&format!("e{i}"))).is_none());
        }
        // Seen again, the second is now the most recent.
        assert!(c.repeat(&key(1), &now));
        // Room for a new one: the first goes, and is handed back to have its count written.
        let forgotten = c.remember(key(REMEMBER_AT_MOST), written("new"));
        assert_eq!(
            forgotten.map(|a| (a.name, a.count)),
            Some(("e0".to_string(), 2))
        );
        // The next goes without a word (nothing unwritten): the third, not the second.
        assert!(
            c.remember(key(REMEMBER_AT_MOST + 1), written("newer"))
                .is_none()
        );
        assert_eq!(c.seen.len(), REMEMBER_AT_MOST);
        assert!(!c.repeat(&key(0), &now));
        assert!(!c.repeat(&key(2), &now));
        assert!(c.repeat(&key(1), &now));
        assert!(c.repeat(&key(REMEMBER_AT_MOST + 1), &now));
    }

    #[test]
    fn repeats_keep_the_order_bounded() {
        let mut c = Correlator::default();
        let now = Time(jiff::Timestamp::now());
        for i in 0..REMEMBER_AT_MOST {
            c.remember(key(i), written(&format!("e{i}")));
        }
        for _ in 0..10 * REMEMBER_AT_MOST {
            assert!(c.repeat(&key(7), &now));
        }
        assert!(c.order.len() <= 2 * REMEMBER_AT_MOST, "{}", c.order.len());
        assert_eq!(c.seen[&key(7)].count, 1 + 10 * REMEMBER_AT_MOST as i32);
        // The oldest is still the first remembered, and it is the one to go.
        c.remember(key(REMEMBER_AT_MOST), written("new"));
        assert!(!c.repeat(&key(0), &now));
        assert!(c.repeat(&key(1), &now));
    }

    #[test]
    fn a_repeat_is_written_even_when_its_event_is_due_to_be_forgotten() {
        let mut c = Correlator::default();
        let long_ago = Instant::now() - REMEMBER - Duration::from_secs(1);
        let (mut repeated, mut quiet) = (written("repeated"), written("quiet"));
        repeated.last_written = long_ago;
        quiet.last_written = long_ago;
        c.remember(key(0), repeated);
        c.remember(key(1), quiet);
        assert!(c.repeat(&key(0), &Time(jiff::Timestamp::now())));
        let due = c.flush(Instant::now());
        assert_eq!(
            due.iter()
                .map(|a| (a.name.as_str(), a.count))
                .collect::<Vec<_>>(),
            [("repeated", 2)]
        );
        // Written just now, it is remembered; the quiet one is forgotten.
        assert_eq!(c.seen.len(), 1);
        assert!(c.flush(Instant::now()).is_empty(), "written once");
        assert!(c.repeat(&key(0), &Time(jiff::Timestamp::now())));
        assert!(!c.repeat(&key(1), &Time(jiff::Timestamp::now())));
    }

    #[test]
    fn events_last_written_long_ago_are_forgotten() {
        let mut c = Correlator::default();
        let mut old = written("old");
        old.last_written = Instant::now() - REMEMBER - Duration::from_secs(1);
        c.remember(key(0), old);
        c.remember(key(1), written("new"));
        c.forget_old(Instant::now());
        assert_eq!(c.order.len(), 1);
        assert!(!c.repeat(&key(0), &Time(jiff::Timestamp::now())));
        assert!(c.repeat(&key(1), &Time(jiff::Timestamp::now())));
    }
}
