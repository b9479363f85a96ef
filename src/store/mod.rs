//! The store: every object, durable in SQLite (one process) or PostgreSQL (several replicas),
//! served from memory.
//!
//! - **Reads** (get, list, watch) come from an in-memory cache of every object; they never touch
//!   the database. With replicas, each replica's cache follows every replica's commits (see
//!   [`backend`]), and a read that must be current first waits until the cache has reached the
//!   database's newest version ([`Store::sync`]).
//! - **Writes** go to a single writer task (on a thread of its own) that group-commits: every
//!   write waiting when a commit starts goes into the same transaction, so many writes share
//!   one fsync. A write is
//!   acknowledged only after its transaction is durable; only then does it become visible in the
//!   cache and on watches.
//! - A write is a list of operations with preconditions (must not exist / must be at
//!   resourceVersion N); all of them apply or none does. That is what makes a bind of a volume and
//!   a claim one atomic step.
//! - Every write gets its own resourceVersion from a single counter that only grows, across
//!   restarts.
//! - The change log keeps recent writes for watch resume, and is compacted to a bounded window.
//!   In memory, a log entry whose object is still current shares that version with the cache.
//!   On disk, SQLite keeps each version once, in one table: an object's current version and
//!   the log's versions are the same rows, and a version leaves the table once it is neither
//!   (the store tells the backend which, see [`Backend::compact`]).
//!
//! The store knows objects only as [`AnyObject`] plus kind, namespace and name; it applies no API
//! semantics (validation, finalizers, status rules). That is the registry's job.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot, watch as notify};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::resources::{AnyObject, Kind, Typed};
pub use compact_str::CompactString;

pub mod backend;
mod memory;
pub mod postgres;
mod sqlite;
mod watch;

pub use backend::{Backend, CatchUp, Head, Loaded, Row};
pub use postgres::{PostgresBackend, PostgresOptions};
pub use sqlite::SqliteBackend;
use watch::KindSet;
pub use watch::{WatchError, Watcher};

/// A resourceVersion.
pub type Rv = u64;

/// Namespace ('' for cluster-scoped kinds) and name.
///
/// Each is a `CompactString`: up to 24 bytes are kept inline, so most keys own no allocation.
/// The cache's searches then read a version's name from the version itself (one memory access
/// fewer per comparison), and the copies of keys controllers keep in queues and indexes cost
/// no allocation. Longer names and namespaces (up to Kubernetes' 253) go to the heap as before.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: CompactString,
    pub name: CompactString,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<CompactString>, name: impl Into<CompactString>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
    pub fn cluster(name: impl Into<CompactString>) -> Self {
        Self::new("", name)
    }
    pub fn of(obj: &AnyObject) -> Self {
        let m = obj.meta();
        Self::new(
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default(),
        )
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// One version of one object, as committed: its JSON and the keys it is filed under.
///
/// The store holds objects only in their serialized form (as etcd does). A typed copy beside
/// it would take two to five times the JSON's memory for every object and every version in the
/// change log; instead [`Stored::object`] and [`Stored::typed`] decode on demand, and readers
/// that need a field decode the object they look at, when they look. Readers that only look
/// share one decode of a version while it is fresh ([`Stored::decoded`]).
#[derive(Debug)]
pub struct Stored {
    pub kind: Kind,
    pub key: ObjectKey,
    pub rv: Rv,
    /// The object's JSON, as served; its `metadata.resourceVersion` is `rv`.
    pub json: Bytes,
    /// Set by the writer once a later write replaced or deleted this version (or this version
    /// is a deletion): when it leaves the change log, nothing needs it any more. The writer
    /// reads it there rather than looking the key up in the cache again (one of its three
    /// searches of the cache per write). It fits in the padding after `kind`.
    superseded: AtomicBool,
}

// The flag costs no memory: a version is as large as it was without it.
const _: () = assert!(std::mem::size_of::<Stored>() == 96);

impl Stored {
    /// A version of an object from its parts; `json` must carry `rv` as its resourceVersion.
    pub(crate) fn from_parts(kind: Kind, key: ObjectKey, rv: Rv, json: Bytes) -> Stored {
        Stored {
            kind,
            key,
            rv,
            json,
            superseded: AtomicBool::new(false),
        }
    }

    /// Another handle on this version: the key is copied, the JSON shared.
    pub(crate) fn share(&self) -> Stored {
        Stored::from_parts(self.kind, self.key.clone(), self.rv, self.json.clone())
    }

    /// Whether a later write replaced or deleted this version (see `superseded`). Only the
    /// writer sets and reads it.
    fn is_superseded(&self) -> bool {
        self.superseded.load(AtomicOrdering::Relaxed)
    }

    fn supersede(&self) {
        self.superseded.store(true, AtomicOrdering::Relaxed);
    }

    fn new(mut object: AnyObject, rv: Rv) -> Self {
        object.meta_mut().resource_version = Some(rv.to_string());
        let mut json = object.to_json();
        // The serializer grows its buffer by doubling; the store keeps this for as long as the
        // version lives, so it keeps only what the JSON needs.
        json.shrink_to_fit();
        let json = Bytes::from(json);
        Stored::from_parts(object.kind(), ObjectKey::of(&object), rv, json)
    }

    /// The version at `rv` of an object encoded before: the JSON with the number in place of
    /// the placeholder (or serialized afresh where the placeholder was not found once).
    fn from_encoded(encoded: Encoded, rv: Rv) -> Self {
        let (Some(at), kind, key) = (encoded.rv_at, encoded.kind, encoded.key) else {
            let object = encoded
                .object
                .expect("an object without its placeholder keeps it");
            return Stored::new(object, rv);
        };
        let digits = rv.to_string();
        let rest = &encoded.json[at + RV_PLACEHOLDER.len()..];
        let mut json = Vec::with_capacity(at + digits.len() + rest.len());
        json.extend_from_slice(&encoded.json[..at]);
        json.extend_from_slice(digits.as_bytes());
        json.extend_from_slice(rest);
        Stored::from_parts(kind, key, rv, Bytes::from(json))
    }

    /// The object, decoded. The JSON was written by the store from a typed object, so it
    /// always decodes.
    pub fn object(&self) -> AnyObject {
        AnyObject::from_json(self.kind, &self.json)
            .expect("the store holds JSON it serialized itself")
    }

    /// The object, decoded, shared with whoever decodes this same version soon after: every
    /// controller looks at every change, so without sharing one change was decoded a dozen
    /// times over (15% of the server's CPU under create load). For reading; [`Self::object`]
    /// gives an object of one's own to change.
    pub fn decoded(&self) -> Arc<AnyObject> {
        recently_decoded::get_or_decode(self)
    }

    /// [`Self::decoded`], seen as its concrete type (`let c: &PersistentVolumeClaim =
    /// &stored.decoded_as();`).
    pub fn decoded_as<T: Typed>(&self) -> DecodedAs<T> {
        DecodedAs {
            object: self.decoded(),
            kind: std::marker::PhantomData,
        }
    }

    /// The object as its concrete type. Panics only if the store mixed kinds up, which it never does.
    pub fn typed<T: Typed>(&self) -> T {
        T::from_any_owned(self.object()).expect("stored object has the kind it is filed under")
    }

    /// Only the object's metadata, decoded (cheaper than the whole object).
    pub fn meta(&self) -> ObjectMeta {
        #[derive(serde::Deserialize)]
        struct OnlyMeta {
            #[serde(default)]
            metadata: ObjectMeta,
        }
        serde_json::from_slice::<OnlyMeta>(&self.json)
            .expect("the store holds JSON it serialized itself")
            .metadata
    }

    pub fn uid(&self) -> String {
        self.meta().uid.unwrap_or_default()
    }

    /// Whether the JSON has `"field":value` for this string value, anywhere. A prefilter for
    /// scans over many objects: `false` means no field of that name has that value, so the
    /// object need not be decoded; `true` must be confirmed on the decoded object.
    pub fn may_have(&self, field: &str, value: &str) -> bool {
        let needle = format!("\"{field}\":{}", serde_json::Value::from(value));
        memchr::memmem::find(&self.json, needle.as_bytes()).is_some()
    }

    /// Whether the JSON has a field of this name, anywhere: a prefilter as [`Self::may_have`].
    pub fn may_have_field(&self, field: &str) -> bool {
        let needle = format!("\"{field}\":");
        memchr::memmem::find(&self.json, needle.as_bytes()).is_some()
    }
}

/// A shared decoded version as its concrete type: see [`Stored::decoded_as`].
pub struct DecodedAs<T> {
    object: Arc<AnyObject>,
    kind: std::marker::PhantomData<T>,
}

impl<T: Typed> std::ops::Deref for DecodedAs<T> {
    type Target = T;
    fn deref(&self) -> &T {
        T::from_any(&self.object).expect("stored object has the kind it is filed under")
    }
}

/// The last versions [`Stored::decoded`] decoded, newest last. Bounded by count and by the size
/// of their JSON (a tenant's large objects cannot make it hold much), it is a cache of what is
/// being looked at right now, not a second copy of the store.
mod recently_decoded {
    use std::collections::VecDeque;
    use std::sync::Arc;

    use bytes::Bytes;
    use parking_lot::Mutex;

    use super::Stored;
    use crate::resources::AnyObject;

    /// Enough for the versions of one commit batch that every controller is working through.
    const KEPT: usize = 128;
    /// The JSON of the kept versions, at most; decoded, they take a few times that. A larger
    /// version is decoded for each reader, as every version was before this cache.
    const KEPT_BYTES: usize = 4 << 20;

    struct Recent {
        /// Each entry holds its JSON, so an address found here is still that JSON's (never
        /// reused by other bytes): a hit is the same version, whichever store it came from.
        entries: VecDeque<(Bytes, Arc<AnyObject>)>,
        bytes: usize,
    }

    static RECENT: Mutex<Recent> = Mutex::new(Recent {
        entries: VecDeque::new(),
        bytes: 0,
    });

    fn same(a: &Bytes, b: &Bytes) -> bool {
        a.as_ptr() == b.as_ptr() && a.len() == b.len()
    }

    pub(super) fn get_or_decode(stored: &Stored) -> Arc<AnyObject> {
        let found = RECENT
            .lock()
            .entries
            .iter()
            .rev()
            .find(|(j, _)| same(j, &stored.json))
            .map(|(_, hit)| hit.clone());
        if let Some(hit) = found {
            return hit;
        }
        // Decoded outside the lock: two callers may both decode a version; both results are
        // the same object.
        let decoded = Arc::new(stored.object());
        let size = stored.json.len();
        if size <= KEPT_BYTES / 8 {
            let mut recent = RECENT.lock();
            while recent.entries.len() >= KEPT || recent.bytes + size > KEPT_BYTES {
                let Some((old, _)) = recent.entries.pop_front() else {
                    break;
                };
                recent.bytes -= old.len();
            }
            recent.bytes += size;
            recent
                .entries
                .push_back((stored.json.clone(), decoded.clone()));
        }
        decoded
    }

    /// The JSON bytes of the versions kept now.
    #[cfg(test)]
    pub(super) fn kept_bytes() -> usize {
        RECENT.lock().bytes
    }

    #[cfg(test)]
    pub(super) const LIMIT_BYTES: usize = KEPT_BYTES;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "ADDED" => Some(EventType::Added),
            "MODIFIED" => Some(EventType::Modified),
            "DELETED" => Some(EventType::Deleted),
            _ => None,
        }
    }
}

/// One committed change. For `Deleted`, `object` is the last state, at the deletion's rv.
#[derive(Debug)]
pub struct WatchEvent {
    pub rv: Rv,
    pub type_: EventType,
    pub object: Arc<Stored>,
    /// The version this change replaced, when known (it is not, for log entries read back from
    /// disk after a restart whose previous version was compacted).
    pub prev: Option<Arc<Stored>>,
    /// Unix seconds of the commit, for time-based compaction.
    pub committed_at: i64,
}

impl WatchEvent {
    pub fn kind(&self) -> Kind {
        self.object.kind
    }

    /// The memory this entry of the change log holds: the object version's JSON and the
    /// bookkeeping around it (the entry, the version's key and allocation headers). An entry
    /// whose object is still current shares that version with the cache, so this counts it
    /// even when it costs nothing extra. The version it replaced is the previous entry's (or
    /// the cache's), so it is not counted again; an entry whose previous one was trimmed keeps
    /// that version alive too, so the log takes at most twice what it counts.
    pub fn cost(&self) -> usize {
        const OVERHEAD: usize = 160;
        self.object.json.len() + self.object.key.name.len() + OVERHEAD
    }
}

/// An object serialized for the store before its resourceVersion is known: the JSON carries a
/// placeholder where the number goes, and the writer only puts the number in
/// ([`Stored::from_encoded`]). A write is thus serialized once, on the request's thread (where
/// the registry also measures it against the size limits), and not again on the writer's, the
/// one serial step every write passes through.
///
/// The placeholder is drawn at random when the process starts and never leaves it, so no
/// tenant can plant it elsewhere in an object (an annotation named `resourceVersion`, say);
/// should it appear twice anyway, the writer serializes the object afresh.
#[derive(Clone, Debug)]
pub struct Encoded {
    /// Let go of when the write is sent to the writer, if the JSON has its placeholder (see
    /// [`Encoded::shed_object`]); kept otherwise, to be serialized afresh.
    object: Option<AnyObject>,
    kind: Kind,
    key: ObjectKey,
    json: Vec<u8>,
    /// Where the placeholder starts in `json`; `None` if it is not there exactly once.
    rv_at: Option<usize>,
}

static RV_PLACEHOLDER: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("rv-{}", uuid::Uuid::new_v4().simple()));
/// Finds the placeholder as the value of a `resourceVersion` field; built once, as every write
/// looks for it.
static RV_FIELD: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| {
        let field = format!("\"resourceVersion\":\"{}\"", *RV_PLACEHOLDER);
        memchr::memmem::Finder::new(field.as_bytes()).into_owned()
    });

impl Encoded {
    pub fn new(mut object: AnyObject) -> Encoded {
        let placeholder = RV_PLACEHOLDER.as_str();
        let own = object
            .meta_mut()
            .resource_version
            .replace(placeholder.to_string());
        let json = object.to_json();
        object.meta_mut().resource_version = own;
        let field = &*RV_FIELD;
        let len = field.needle().len();
        let rv_at = field
            .find(&json)
            .filter(|at| field.find(&json[at + len..]).is_none())
            .map(|at| at + len - placeholder.len() - 1);
        Encoded {
            kind: object.kind(),
            key: ObjectKey::of(&object),
            object: Some(object),
            json,
            rv_at,
        }
    }

    pub fn object(&self) -> &AnyObject {
        self.object.as_ref().expect(SHED)
    }

    pub fn into_object(self) -> AnyObject {
        self.object.expect(SHED)
    }

    /// Drops the object where the write is made, not on the writer's thread, which needs only
    /// the JSON, kind and key: freeing an object's few dozen allocations there cost the one serial step of
    /// every write 1% of the server's CPU, plus the allocator's work of handing memory back
    /// across threads.
    fn shed_object(&mut self) {
        if self.rv_at.is_some() {
            self.object = None;
        }
    }

    /// The JSON as it will be stored, but for the resourceVersion's value (a placeholder):
    /// for measuring, with [`Self::placeholder_excess`].
    pub fn json(&self) -> &[u8] {
        &self.json
    }

    /// How many bytes longer the placeholder is than the longest resourceVersion (20 digits):
    /// the stored JSON is at most `json().len()` less this.
    pub fn placeholder_excess() -> usize {
        RV_PLACEHOLDER.len() - Rv::MAX.to_string().len()
    }

    /// Sets the object's resourceVersion. The JSON holds a placeholder in its place, so it
    /// stays as it is.
    pub fn set_resource_version(&mut self, rv: Option<String>) {
        self.object
            .as_mut()
            .expect(SHED)
            .meta_mut()
            .resource_version = rv;
    }
}

const SHED: &str = "an encoded object is read only before it is written";

impl From<AnyObject> for Encoded {
    fn from(object: AnyObject) -> Encoded {
        Encoded::new(object)
    }
}

/// What must be true of the current object for an operation to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Nothing.
    None,
    /// The object must not exist (create).
    Absent,
    /// The object must exist at exactly this resourceVersion (optimistic concurrency).
    AtRv(Rv),
}

#[derive(Clone, Debug)]
pub enum Change {
    Put(Encoded),
    Delete,
    /// Nothing is written: only the precondition holds (an object a multi-object write left
    /// as it was, but read at a version that must still be current).
    Check,
}

#[derive(Clone, Debug)]
pub struct WriteOp {
    pub kind: Kind,
    pub key: ObjectKey,
    pub precondition: Precondition,
    pub change: Change,
}

impl WriteOp {
    pub fn create(object: impl Into<Encoded>) -> Self {
        let object = object.into();
        WriteOp {
            kind: object.kind,
            key: object.key.clone(),
            precondition: Precondition::Absent,
            change: Change::Put(object),
        }
    }
    pub fn update(object: impl Into<Encoded>, expected_rv: Rv) -> Self {
        let object = object.into();
        WriteOp {
            kind: object.kind,
            key: object.key.clone(),
            precondition: Precondition::AtRv(expected_rv),
            change: Change::Put(object),
        }
    }
    /// The object must still be at `expected_rv`; nothing is written.
    pub fn check(kind: Kind, key: ObjectKey, expected_rv: Rv) -> Self {
        WriteOp {
            kind,
            key,
            precondition: Precondition::AtRv(expected_rv),
            change: Change::Check,
        }
    }

    pub fn delete(kind: Kind, key: ObjectKey, expected_rv: Rv) -> Self {
        WriteOp {
            kind,
            key,
            precondition: Precondition::AtRv(expected_rv),
            change: Change::Delete,
        }
    }
}

/// Why a write did not apply. `op` is the index of the failing operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("operation {op}: object already exists")]
    AlreadyExists { op: usize },
    #[error("operation {op}: object not found")]
    NotFound { op: usize },
    #[error("operation {op}: object is at resourceVersion {current}, not {expected}")]
    Conflict {
        op: usize,
        expected: Rv,
        current: Rv,
    },
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
}

/// Tunables of the store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Most writes committed in one transaction.
    pub max_batch: usize,
    /// Change-log entries kept for watch resume.
    pub log_max_events: usize,
    /// Memory the change log may take, in bytes (see [`WatchEvent::cost`]). Watchers read the
    /// log itself, so this bounds all watch history and every watcher's backlog together.
    pub log_max_bytes: usize,
    /// Age after which change-log entries are compacted.
    pub log_window: Duration,
    /// How often the writer compacts the database's change log (and once more when closing).
    pub compact_every: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_batch: 1024,
            log_max_events: 100_000,
            log_max_bytes: 64 * 1024 * 1024,
            log_window: Duration::from_secs(600),
            compact_every: Duration::from_secs(5),
        }
    }
}

/// The store handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    state: RwLock<State>,
    /// The newest committed resourceVersion, published after the log has it: wakes watchers.
    published: notify::Sender<Rv>,
    writer: mpsc::Sender<WriterMessage>,
    options: StoreOptions,
    /// Asks the database's newest version, when other replicas write to it too.
    head: Option<HeadQueries>,
    /// Wakes the writer to follow other replicas' commits.
    follow: Arc<tokio::sync::Notify>,
    /// The watchers of a few kinds (controllers'), woken only by commits of those kinds.
    subscriptions: parking_lot::Mutex<Vec<Arc<watch::Subscription>>>,
    /// Objects per kind (indexed by `Kind as usize`), as the cache holds them: set by the
    /// writer under the cache's write lock, read without any lock. Every write asks whether
    /// any quota exists, and waiting behind the writer's lock for that cost a context switch.
    counts: Vec<AtomicUsize>,
}

struct State {
    /// Objects by kind (indexed by `Kind as usize`), ordered by namespace then name.
    objects: Vec<Objects>,
    /// The resourceVersion of the newest committed write.
    rv: Rv,
    /// Recent changes, oldest first.
    log: VecDeque<Arc<WatchEvent>>,
    /// What the log's entries cost, by [`WatchEvent::cost`].
    log_bytes: usize,
    /// Changes at or below this rv are no longer in the log.
    compacted_rv: Rv,
    /// Per kind (indexed by `Kind as usize`), the newest of its changes that left the log: a
    /// watcher of a few kinds behind it missed one.
    trimmed: Vec<Rv>,
    /// Versions at or below `compacted_rv` that are neither in the log nor current any more:
    /// the next compaction removes them from the database (see [`Backend::compact`]). `None`
    /// for a backend that keeps its current objects apart from its log
    /// ([`Backend::keeps_versions_once`] is false): it has no use for the list, and a replica
    /// that only follows others would otherwise collect it forever.
    released: Option<Vec<Rv>>,
}

enum WriterMessage {
    Write {
        ops: Vec<WriteOp>,
        reply: oneshot::Sender<Result<Vec<Arc<Stored>>, WriteError>>,
    },
    Close {
        done: oneshot::Sender<()>,
    },
}

fn kind_by_name(name: &str) -> Option<Kind> {
    Kind::ALL.iter().copied().find(|k| k.info().kind == name)
}

/// An object version read back from a database, as it was written (its JSON already carries
/// `rv`); `None` (and a warning) for a kind this version does not know. Nothing is decoded
/// here: start-up reads rows, and readers decode what they look at.
fn decode(kind: &str, namespace: String, name: String, rv: i64, data: Vec<u8>) -> Option<Stored> {
    let Some(kind) = kind_by_name(kind) else {
        tracing::warn!(
            kind,
            "skipping stored object of a kind this version does not know"
        );
        return None;
    };
    Some(Stored::from_parts(
        kind,
        ObjectKey::new(namespace, name),
        rv as Rv,
        Bytes::from(data),
    ))
}

fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The database's newest version for many concurrent callers, with one query in flight at a
/// time: each caller takes a ticket and gets the answer of a query that started after it
/// asked (so the answer is as new as its own question), while the callers that arrived during
/// a query share the next one. Under load, one query serves a whole batch of requests.
struct HeadQueries {
    asked: Arc<std::sync::atomic::AtomicU64>,
    wake: Arc<tokio::sync::Notify>,
    answers: notify::Receiver<(u64, Result<Rv, String>)>,
}

impl HeadQueries {
    fn start(head: Arc<dyn Head>) -> HeadQueries {
        let asked = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let wake = Arc::new(tokio::sync::Notify::new());
        let (tx, answers) = notify::channel((0, Ok(0)));
        let (asked_, wake_) = (asked.clone(), wake.clone());
        tokio::spawn(async move {
            let mut answered = 0;
            loop {
                let ticket = asked_.load(std::sync::atomic::Ordering::SeqCst);
                if ticket == answered {
                    // A caller that asks after this load finds the permit `notify_one` left.
                    wake_.notified().await;
                    continue;
                }
                let rv = head.current_rv().await.map_err(|e| e.to_string());
                answered = ticket;
                if tx.send((ticket, rv)).is_err() {
                    return; // the store is gone
                }
            }
        });
        HeadQueries {
            asked,
            wake,
            answers,
        }
    }

    async fn current_rv(&self) -> Result<Rv, String> {
        let ticket = self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let mut answers = self.answers.clone();
        self.wake.notify_one();
        let answer = answers
            .wait_for(|(answered, _)| *answered >= ticket)
            .await
            .map_err(|_| "the store is closed".to_string())?;
        answer.1.clone()
    }
}

/// How long a read waits for this replica to catch up before it is refused (503).
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a replica looks for other replicas' commits when no notification came.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

impl State {
    /// The cache and change log for what a backend loaded.
    fn from_loaded(loaded: Loaded, options: &StoreOptions, keeps_versions_once: bool) -> State {
        let mut objects: Vec<Objects> = Kind::ALL.iter().map(|_| Objects::default()).collect();
        for row in loaded.objects {
            let stored = Arc::new(row);
            objects[stored.kind as usize].insert(stored);
        }
        // Rebuild `prev` links inside the retained log where the previous version is in it too.
        let mut last: HashMap<(Kind, ObjectKey), Arc<Stored>> = HashMap::new();
        let mut log = VecDeque::with_capacity(loaded.log.len());
        for (type_, stored, committed_at) in loaded.log {
            // A version that is still current is the cache's: share it rather than hold it twice.
            let stored = match objects[stored.kind as usize].get(&stored.key) {
                Some(current) if current.rv == stored.rv => current.clone(),
                _ => {
                    stored.supersede();
                    Arc::new(stored)
                }
            };
            let id = (stored.kind, stored.key.clone());
            let prev = last.insert(id, stored.clone());
            log.push_back(Arc::new(WatchEvent {
                rv: stored.rv,
                type_,
                object: stored,
                prev,
                committed_at,
            }));
        }
        let rv = loaded.last_rv;
        let compacted_rv = log.front().map_or(rv, |e| e.rv - 1);
        let log_bytes = log.iter().map(|e| e.cost()).sum();
        let mut state = State {
            objects,
            rv,
            log,
            log_bytes,
            compacted_rv,
            // What was trimmed before this load is not known by kind.
            trimmed: vec![compacted_rv; Kind::ALL.len()],
            released: keeps_versions_once.then(Vec::new),
        };
        trim_log(&mut state, options, rv);
        state
    }
}

impl Store {
    /// Opens the SQLite store in `data_dir` (creating it), applying migrations.
    pub async fn open(data_dir: &std::path::Path, options: StoreOptions) -> anyhow::Result<Store> {
        let backend = SqliteBackend::open(&data_dir.join("stowage.db")).await?;
        Store::with_backend(Box::new(backend), options).await
    }

    pub async fn with_backend(
        mut backend: Box<dyn Backend>,
        options: StoreOptions,
    ) -> anyhow::Result<Store> {
        let started = std::time::Instant::now();
        let loaded = backend.load().await?;
        tracing::info!(
            objects = loaded.objects.len(),
            changes = loaded.log.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "store read from the database"
        );
        let (inner, rx) = Self::inner(
            loaded,
            options,
            backend.keeps_versions_once(),
            backend.head(),
            backend
                .remote_commits()
                .unwrap_or_else(|| Arc::new(tokio::sync::Notify::new())),
        );
        // The writer gets a thread and a runtime of its own: it is the one serial step every
        // write passes through. SQLite's commits run on it, blocking it until they are durable
        // (nothing else waits on this thread meanwhile), and PostgreSQL's answers would wait
        // behind every request being served on the shared runtime.
        let writer = writer_loop(inner.clone(), backend, rx);
        std::thread::Builder::new()
            .name("stowage-store-writer".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(writer),
                    Err(e) => tracing::error!(error = %e, "cannot start the store writer"),
                }
            })
            .map_err(|e| anyhow::anyhow!("starting the store writer thread: {e}"))?;
        Ok(Store { inner })
    }

    /// A store that keeps nothing on disk, whose writer is a task of the current runtime: for
    /// tests of controllers, where everything must follow one (paused) clock.
    pub async fn in_memory(options: StoreOptions) -> Store {
        let (inner, rx) = Self::inner(
            Loaded::default(),
            options,
            false,
            None,
            Arc::new(tokio::sync::Notify::new()),
        );
        tokio::spawn(writer_loop(
            inner.clone(),
            Box::new(memory::MemoryBackend),
            rx,
        ));
        Store { inner }
    }

    /// The shared state for what a backend loaded, and the writer's mailbox.
    fn inner(
        loaded: Loaded,
        options: StoreOptions,
        keeps_versions_once: bool,
        head: Option<Arc<dyn Head>>,
        follow: Arc<tokio::sync::Notify>,
    ) -> (Arc<Inner>, mpsc::Receiver<WriterMessage>) {
        let state = State::from_loaded(loaded, &options, keeps_versions_once);
        let (published, _) = notify::channel(state.rv);
        let (writer, rx) = mpsc::channel(options.max_batch * 4);
        let inner = Arc::new(Inner {
            state: RwLock::new(state),
            published,
            writer,
            options,
            head: head.map(HeadQueries::start),
            follow,
            subscriptions: parking_lot::Mutex::new(Vec::new()),
            counts: Kind::ALL.iter().map(|_| AtomicUsize::new(0)).collect(),
        });
        refresh_counts(&inner, &inner.state.read(), KindSet::ALL);
        (inner, rx)
    }

    /// Waits until this replica's cache holds every write the database had committed when
    /// the call began, so that a read after it sees writes acknowledged by any replica (as
    /// Kubernetes' consistent reads from its watch cache do). Immediate with one process.
    pub async fn sync(&self) -> Result<(), WriteError> {
        let Some(head) = &self.inner.head else {
            return Ok(());
        };
        let target = head
            .current_rv()
            .await
            .map_err(|e| WriteError::Unavailable(format!("reading the database: {e}")))?;
        let mut published = self.inner.published.subscribe();
        if *published.borrow_and_update() >= target {
            return Ok(());
        }
        self.inner.follow.notify_one();
        let caught_up = published.wait_for(|rv| *rv >= target);
        match tokio::time::timeout(SYNC_TIMEOUT, caught_up).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(WriteError::Unavailable("the store is closed".into())),
            Err(_) => Err(WriteError::Unavailable(format!(
                "this replica has not caught up with the database within {SYNC_TIMEOUT:?}"
            ))),
        }
    }

    /// Applies `ops` atomically: all of them, or none (the error names the failing op).
    /// Returns the stored versions, in op order (for a delete: the last state).
    pub async fn write(&self, mut ops: Vec<WriteOp>) -> Result<Vec<Arc<Stored>>, WriteError> {
        for op in &mut ops {
            if let Change::Put(encoded) = &mut op.change {
                encoded.shed_object();
            }
        }
        let (reply, rx) = oneshot::channel();
        self.inner
            .writer
            .send(WriterMessage::Write { ops, reply })
            .await
            .map_err(|_| WriteError::Unavailable("the store is shutting down".into()))?;
        rx.await
            .map_err(|_| WriteError::Unavailable("the store is shutting down".into()))?
    }

    /// Finishes every write already queued, then refuses new ones.
    pub async fn close(&self) {
        let (done, rx) = oneshot::channel();
        if self
            .inner
            .writer
            .send(WriterMessage::Close { done })
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    pub fn get(&self, kind: Kind, key: &ObjectKey) -> Option<Arc<Stored>> {
        self.inner.state.read().objects[kind as usize]
            .get(key)
            .cloned()
    }

    /// The stored version of a `T` (read it with [`Stored::typed`]).
    pub fn get_typed<T: Typed>(&self, namespace: &str, name: &str) -> Option<Arc<Stored>> {
        self.get(T::KIND, &ObjectKey::new(namespace, name))
    }

    /// The newest committed resourceVersion.
    pub fn current_rv(&self) -> Rv {
        self.inner.state.read().rv
    }

    /// A consistent snapshot of every object of `kind` (in `namespace`, if given), in key order.
    pub fn list(&self, kind: Kind, namespace: Option<&str>) -> (Vec<Arc<Stored>>, Rv) {
        let state = self.inner.state.read();
        let map = &state.objects[kind as usize];
        let items = map.range(namespace, None).cloned().collect();
        (items, state.rv)
    }

    /// One page of a list: objects after `after` (exclusive) that pass `filter`, at most `limit`
    /// of them. Returns the page, the store's rv, and whether more matching objects may follow.
    pub fn list_page(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        after: Option<&ObjectKey>,
        limit: usize,
        mut filter: impl FnMut(&Stored) -> bool,
    ) -> (Vec<Arc<Stored>>, Rv, bool) {
        let state = self.inner.state.read();
        let map = &state.objects[kind as usize];
        let mut items = Vec::new();
        let mut more = false;
        for v in map.range(namespace, after) {
            if filter(v) {
                if items.len() == limit {
                    more = true;
                    break;
                }
                items.push(v.clone());
            }
        }
        (items, state.rv, more)
    }

    /// Number of objects of `kind`.
    pub fn count(&self, kind: Kind) -> usize {
        self.inner.counts[kind as usize].load(AtomicOrdering::Relaxed)
    }

    /// Starts a watch of every change after `after` (which must still be in the log).
    pub fn watch_from(&self, after: Rv) -> Result<Watcher, WatchError> {
        let state = self.inner.state.read();
        if after < state.compacted_rv {
            return Err(WatchError::Expired {
                requested: after,
                oldest: state.compacted_rv + 1,
            });
        }
        Ok(Watcher::new(self.inner.clone(), after))
    }

    /// Takes a snapshot of every object of the given kinds and starts a watch of their
    /// changes right after it, with no gap and no overlap. `kinds` empty means all kinds.
    pub fn snapshot_and_watch(&self, kinds: &[Kind]) -> (Vec<Arc<Stored>>, Rv, Watcher) {
        let state = self.inner.state.read();
        let watcher = if kinds.is_empty() {
            Watcher::new(self.inner.clone(), state.rv)
        } else {
            Watcher::of_kinds(self.inner.clone(), state.rv, KindSet::of(kinds))
        };
        let kinds = if kinds.is_empty() { Kind::ALL } else { kinds };
        let mut items = Vec::new();
        for k in kinds {
            items.extend(state.objects[*k as usize].range(None, None).cloned());
        }
        (items, state.rv, watcher)
    }

    /// Like [`Store::snapshot_and_watch`] for one kind and optional namespace.
    pub fn list_and_watch(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> (Vec<Arc<Stored>>, Rv, Watcher) {
        let state = self.inner.state.read();
        let map = &state.objects[kind as usize];
        let items = map.range(namespace, None).cloned().collect();
        (items, state.rv, Watcher::new(self.inner.clone(), state.rv))
    }

    /// The change log's size: entries and bytes (by [`WatchEvent::cost`]).
    pub fn log_usage(&self) -> (usize, usize) {
        let state = self.inner.state.read();
        (state.log.len(), state.log_bytes)
    }

    /// The oldest resourceVersion a watch can still resume after.
    pub fn compacted_rv(&self) -> Rv {
        self.inner.state.read().compacted_rv
    }

    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }
}

/// One kind's objects, ordered by namespace then name: a set of names per namespace.
///
/// Each set holds the stored versions ordered by their own name, rather than a map from a key
/// to a version: the key lives once, in the version (beside it, the set keeps only a name's
/// first bytes, to compare without reading versions; see [`ByName`]). Grouping by namespace
/// first means a search inside the set compares names only, never the namespace: half the
/// comparisons per step, for the writer placing each version and for every list and page.
///
/// The same versions are also kept by key in a hash table, for point reads: the writer's
/// check of every write and every `get` find a version in one probe, not a search of a
/// B-tree of every claim in a namespace. Each entry keeps its key's hash beside the version,
/// so growing the table rehashes without reading a version (reading a million scattered
/// versions to rehash them would hold the writer for about a tenth of a second): 16 bytes an
/// entry, about 20 an object with the table's slack.
#[derive(Default)]
struct Objects {
    namespaces: BTreeMap<CompactString, BTreeSet<ByName>>,
    by_key: hashbrown::HashTable<(u64, Arc<Stored>)>,
    /// Keyed at random per table (SipHash): tenants choose names, so no chosen set of them
    /// can pile into one bucket.
    hasher: std::hash::RandomState,
}

/// A stored version, ordered by its name (within its namespace's set).
///
/// The name's first bytes are kept beside the version, in the B-tree's node: placing a version
/// compares names there, and reads a version only when two names share their first
/// [`NAME_HEAD`] bytes. Every comparison used to read a version, scattered in memory: about
/// thirty cache misses to place each write among a quarter of a million claims, 6% of the
/// server's CPU, all of it on the writer's thread. It costs 16 bytes a version.
struct ByName {
    head: [u8; NAME_HEAD],
    /// How many of `head`'s bytes are the name's: all of it when the name is that short.
    head_len: u8,
    stored: Arc<Stored>,
}

/// How many of a name's first bytes [`ByName`] keeps: with its length, 16 bytes.
const NAME_HEAD: usize = 15;

impl ByName {
    fn new(stored: Arc<Stored>) -> ByName {
        let name = stored.key.name.as_bytes();
        let head_len = name.len().min(NAME_HEAD);
        let mut head = [0; NAME_HEAD];
        head[..head_len].copy_from_slice(&name[..head_len]);
        ByName {
            head,
            head_len: head_len as u8,
            stored,
        }
    }

    fn head(&self) -> &[u8] {
        &self.head[..self.head_len as usize]
    }
}

/// Lookups by `&str` (where a page starts) compare whole names: the same order, since heads
/// order as the names they begin.
impl Borrow<str> for ByName {
    fn borrow(&self) -> &str {
        &self.stored.key.name
    }
}
impl PartialEq for ByName {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for ByName {}
impl PartialOrd for ByName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ByName {
    /// The names' order. Heads that differ order as their names do: either at a byte both
    /// have, or one is shorter than [`NAME_HEAD`], so it is a whole name and a prefix of the
    /// other. Equal heads shorter than that are equal names; only equal full heads need the
    /// rest of the names.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.head().cmp(other.head()).then_with(|| {
            if usize::from(self.head_len) < NAME_HEAD {
                std::cmp::Ordering::Equal
            } else {
                self.stored.key.name.cmp(&other.stored.key.name)
            }
        })
    }
}

// A version's `superseded` flag is its only interior mutability, and ordering never reads it.
#[allow(clippy::mutable_key_type)]
impl Objects {
    fn get(&self, key: &ObjectKey) -> Option<&Arc<Stored>> {
        let hash = self.hasher.hash_one(key);
        self.by_key
            .find(hash, |(h, v)| *h == hash && v.key == *key)
            .map(|(_, v)| v)
    }

    /// Puts a version in place of the one under its key; returns that one.
    fn insert(&mut self, stored: Arc<Stored>) -> Option<Arc<Stored>> {
        // Looked up by `&str` first: `entry` would allocate the namespace on every write.
        let names = match self.namespaces.get_mut(stored.key.namespace.as_str()) {
            Some(names) => names,
            None => self
                .namespaces
                .entry(stored.key.namespace.clone())
                .or_default(),
        };
        let prev = names.replace(ByName::new(stored.clone())).map(|v| v.stored);
        let hash = self.hasher.hash_one(&stored.key);
        match self.by_key.entry(
            hash,
            |(h, v)| *h == hash && v.key == stored.key,
            |(h, _)| *h,
        ) {
            hashbrown::hash_table::Entry::Occupied(mut entry) => entry.get_mut().1 = stored,
            hashbrown::hash_table::Entry::Vacant(entry) => {
                entry.insert((hash, stored));
            }
        }
        prev
    }

    fn remove(&mut self, key: &ObjectKey) -> Option<Arc<Stored>> {
        // Found by the index first: the set is then searched by the version's head, like
        // placing one.
        let hash = self.hasher.hash_one(key);
        let entry = self
            .by_key
            .find_entry(hash, |(h, v)| *h == hash && v.key == *key)
            .ok()?;
        let ((_, prev), _) = entry.remove();
        if let Some(names) = self.namespaces.get_mut(key.namespace.as_str()) {
            names.remove(&ByName::new(prev.clone()));
            if names.is_empty() {
                self.namespaces.remove(key.namespace.as_str());
            }
        }
        // A table never shrinks by itself: after mass deletes, give the room back (to twice
        // what is left, so the next creates do not grow it again at once). From the kept
        // hashes, so it reads no version.
        let (len, capacity) = (self.by_key.len(), self.by_key.capacity());
        if capacity > 1024 && len < capacity / 4 {
            self.by_key.shrink_to(len * 2, |(h, _)| *h);
        }
        Some(prev)
    }

    fn len(&self) -> usize {
        self.by_key.len()
    }

    /// The objects after `after` (exclusive), in `namespace` if given, in key order.
    fn range<'a>(
        &'a self,
        namespace: Option<&str>,
        after: Option<&ObjectKey>,
    ) -> Box<dyn Iterator<Item = &'a Arc<Stored>> + 'a> {
        // Names after `after` in its own namespace; every name in a later one.
        fn names_after<'a>(
            names: &'a BTreeSet<ByName>,
            after: Option<&str>,
        ) -> impl Iterator<Item = &'a Arc<Stored>> + use<'a> {
            let start = match after {
                Some(a) => Bound::Excluded(a),
                None => Bound::Unbounded,
            };
            names
                .range::<str, _>((start, Bound::Unbounded))
                .map(|v| &v.stored)
        }
        match namespace {
            Some(ns) => {
                let Some(names) = self.namespaces.get(ns) else {
                    return Box::new(std::iter::empty());
                };
                let after = after.filter(|a| a.namespace == ns).map(|a| a.name.as_str());
                Box::new(names_after(names, after))
            }
            None => match after {
                None => Box::new(
                    self.namespaces
                        .values()
                        .flat_map(|names| names_after(names, None)),
                ),
                Some(a) => {
                    let rest = self
                        .namespaces
                        .range::<str, _>((Bound::Excluded(a.namespace.as_str()), Bound::Unbounded))
                        .flat_map(|(_, names)| names_after(names, None));
                    let first = self.namespaces.get(a.namespace.as_str());
                    let first = first.map(|names| names_after(names, Some(a.name.as_str())));
                    Box::new(first.into_iter().flatten().chain(rest))
                }
            },
        }
    }
}

/// The single writer: batches queued writes into one transaction each.
async fn writer_loop(
    inner: Arc<Inner>,
    mut backend: Box<dyn Backend>,
    mut rx: mpsc::Receiver<WriterMessage>,
) {
    let mut batch: Vec<(Vec<WriteOp>, Reply)> = Vec::new();
    let mut last_compaction = std::time::Instant::now();
    let mut closing: Option<oneshot::Sender<()>> = None;
    let shared = inner.head.is_some();
    let mut follow_tick = tokio::time::interval(FOLLOW_EVERY);
    follow_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while closing.is_none() {
        let first = tokio::select! {
            m = rx.recv() => match m { Some(m) => m, None => break },
            _ = inner.follow.notified(), if shared => {
                follow(&inner, backend.as_mut()).await;
                continue;
            }
            _ = follow_tick.tick(), if shared => {
                follow(&inner, backend.as_mut()).await;
                continue;
            }
        };
        let max = inner.options.max_batch;
        take_queued(Some(first), &mut rx, &mut batch, &mut closing, max);
        if !batch.is_empty() && begin_commit(&inner, backend.as_mut(), &mut batch).await {
            // Writes that arrived while the commit began join it. With replicas, beginning
            // waits for the database's write lock while others commit: the longer that wait,
            // the larger this batch, so the lock is taken once for more writes.
            if closing.is_none() {
                take_queued(None, &mut rx, &mut batch, &mut closing, max);
            }
            commit_batch(&inner, backend.as_mut(), std::mem::take(&mut batch)).await;
        }
        if last_compaction.elapsed() >= inner.options.compact_every {
            compact(&inner, backend.as_mut()).await;
            last_compaction = std::time::Instant::now();
        }
    }
    rx.close();
    // Writes queued behind the close are refused, not silently dropped.
    while let Ok(msg) = rx.try_recv() {
        if let WriterMessage::Write { reply, .. } = msg {
            let _ = reply.send(Err(WriteError::Unavailable(
                "the store is shutting down".into(),
            )));
        }
    }
    // What the log let go leaves the database now, not after the restart.
    compact(&inner, backend.as_mut()).await;
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

type Reply = oneshot::Sender<Result<Vec<Arc<Stored>>, WriteError>>;
/// A write of a batch that passed its checks: who to answer, its events, what it wrote.
type Accepted = (Reply, Vec<Arc<WatchEvent>>, Vec<Arc<Stored>>);

/// Applies other replicas' commits read between writes.
async fn follow(inner: &Inner, backend: &mut dyn Backend) {
    let known = inner.state.read().rv;
    match backend.follow(known).await {
        Ok(caught_up) => apply_remote(inner, caught_up),
        Err(e) => tracing::warn!(error = %e, "reading other replicas' commits failed; will retry"),
    }
}

/// Puts other replicas' commits into the cache and the log, and wakes watchers.
fn apply_remote(inner: &Inner, caught_up: CatchUp) {
    let mut touched = KindSet::default();
    let rv = {
        let mut state = inner.state.write();
        match caught_up {
            CatchUp::Changes(changes) => {
                if changes.is_empty() {
                    return;
                }
                let batch_start = state.rv;
                for (type_, stored, committed_at) in changes {
                    let stored = Arc::new(stored);
                    touched.insert(stored.kind);
                    let map = &mut state.objects[stored.kind as usize];
                    let prev = if type_ == EventType::Deleted {
                        stored.supersede();
                        map.remove(&stored.key)
                    } else {
                        map.insert(stored.clone())
                    };
                    if let Some(prev) = &prev {
                        prev.supersede();
                    }
                    release_replaced(&mut state, prev.as_deref());
                    let event = Arc::new(WatchEvent {
                        rv: stored.rv,
                        type_,
                        object: stored,
                        prev,
                        committed_at,
                    });
                    state.rv = event.rv;
                    state.log_bytes += event.cost();
                    state.log.push_back(event);
                }
                trim_log(&mut state, &inner.options, batch_start);
                refresh_counts(inner, &state, touched);
            }
            CatchUp::Reload(loaded) => {
                // The changes this replica missed are gone: start over from the database's
                // state. Watchers behind the new log's start are cut off and relist, as after
                // a compaction.
                tracing::warn!("fell behind the shared change log; reloading every object");
                let released = state.released.take();
                *state = State::from_loaded(loaded, &inner.options, released.is_some());
                touched = KindSet::ALL;
                refresh_counts(inner, &state, touched);
                if let (Some(now), Some(before)) = (&mut state.released, released) {
                    now.extend(before);
                }
            }
        }
        state.rv
    };
    inner.published.send_replace(rv);
    watch::wake_followers(inner, touched);
}

/// Moves `first` and then queued messages into `batch`, without waiting, until the batch is
/// full, the queue empty, or a close comes (which ends the loop: later writes are refused).
fn take_queued(
    first: Option<WriterMessage>,
    rx: &mut mpsc::Receiver<WriterMessage>,
    batch: &mut Vec<(Vec<WriteOp>, Reply)>,
    closing: &mut Option<oneshot::Sender<()>>,
    max_batch: usize,
) {
    let mut next = first;
    loop {
        if next.is_none() && batch.len() < max_batch {
            next = rx.try_recv().ok();
        }
        match next.take() {
            None => break,
            Some(WriterMessage::Write { ops, reply }) => batch.push((ops, reply)),
            Some(WriterMessage::Close { done }) => {
                *closing = Some(done);
                break;
            }
        }
    }
}

/// Starts a commit: under the database's write lock, the cache first takes in what other
/// replicas committed, so that [`commit_batch`] checks preconditions against the current
/// state. On failure every write of `batch` is answered (and `batch` emptied), and this
/// returns false.
async fn begin_commit(
    inner: &Inner,
    backend: &mut dyn Backend,
    batch: &mut Vec<(Vec<WriteOp>, Reply)>,
) -> bool {
    let known = inner.state.read().rv;
    match backend.begin(known).await {
        Ok(caught_up) => {
            apply_remote(inner, caught_up);
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "store commit could not start");
            for (_, reply) in batch.drain(..) {
                let _ = reply.send(Err(WriteError::Unavailable(
                    "the database is unavailable".into(),
                )));
            }
            false
        }
    }
}

/// Checks and applies a batch whose commit [`begin_commit`] started.
/// What [`check_batch`] accepted: the rv of its last change, each kind's changed objects (a
/// deletion as `None`), who to answer with what, and the rows to write.
type Checked = (
    Rv,
    Vec<HashMap<ObjectKey, Option<Arc<Stored>>>>,
    Vec<Accepted>,
    Vec<Row>,
);

/// Checks each write of a batch against the cache and assigns rvs to those that pass; answers
/// those that fail. Nothing is published yet.
fn check_batch(state: &State, batch: Vec<(Vec<WriteOp>, Reply)>, committed_at: i64) -> Checked {
    // Earlier writes of this batch are seen through `overlay`.
    let mut rv = state.rv;
    // Per kind, so that a key is looked up by reference, not copied into a tuple each time.
    let mut overlay: Vec<HashMap<ObjectKey, Option<Arc<Stored>>>> =
        Kind::ALL.iter().map(|_| HashMap::new()).collect();
    let mut accepted: Vec<Accepted> = Vec::new();
    let mut rows: Vec<Row> = Vec::new();

    for (ops, reply) in batch {
        let current =
            |kind: Kind, key: &ObjectKey, overlay: &[HashMap<ObjectKey, Option<Arc<Stored>>>]| {
                match overlay[kind as usize].get(key) {
                    Some(v) => v.clone(),
                    None => state.objects[kind as usize].get(key).cloned(),
                }
            };
        // Two ops on the same object in one group would make the second's precondition
        // meaningless; refuse rather than guess. (Most writes are one op: nothing to compare.)
        let touches_one_each = ops.len() < 2 || {
            let mut seen = std::collections::HashSet::new();
            ops.iter().all(|op| seen.insert((op.kind, &op.key)))
        };
        if !touches_one_each {
            let _ = reply.send(Err(WriteError::Unavailable(
                "a write may touch each object once".into(),
            )));
            continue;
        }
        // Check every precondition first: a group applies entirely or not at all.
        let mut failure = None;
        let mut currents = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let cur = current(op.kind, &op.key, &overlay);
            let err = match (&op.precondition, &cur, &op.change) {
                (Precondition::Absent, Some(_), _) => Some(WriteError::AlreadyExists { op: i }),
                (Precondition::AtRv(_), None, _) => Some(WriteError::NotFound { op: i }),
                (Precondition::AtRv(expected), Some(c), _) if c.rv != *expected => {
                    Some(WriteError::Conflict {
                        op: i,
                        expected: *expected,
                        current: c.rv,
                    })
                }
                (Precondition::None, None, Change::Delete) => Some(WriteError::NotFound { op: i }),
                _ => None,
            };
            if let Some(e) = err {
                failure = Some(e);
                break;
            }
            currents.push(cur);
        }
        if let Some(e) = failure {
            let _ = reply.send(Err(e));
            continue;
        }
        let mut events = Vec::with_capacity(ops.len());
        let mut results = Vec::with_capacity(ops.len());
        for (op, prev) in ops.into_iter().zip(currents) {
            if let Change::Check = op.change {
                // Its precondition (at an rv, so it exists) held: it answers as it is.
                results.extend(prev);
                continue;
            }
            rv += 1;
            let (type_, stored) = match op.change {
                Change::Put(obj) => {
                    let t = if prev.is_some() {
                        EventType::Modified
                    } else {
                        EventType::Added
                    };
                    (t, Arc::new(Stored::from_encoded(obj, rv)))
                }
                Change::Delete => {
                    let last = prev.as_ref().expect("precondition guarantees existence");
                    let deletion = Stored::new(last.object(), rv);
                    deletion.supersede();
                    (EventType::Deleted, Arc::new(deletion))
                }
                Change::Check => unreachable!("checks are answered above"),
            };
            rows.push(Row {
                type_,
                stored: stored.clone(),
                committed_at,
            });
            overlay[op.kind as usize].insert(
                op.key,
                (type_ != EventType::Deleted).then(|| stored.clone()),
            );
            results.push(stored.clone());
            events.push(Arc::new(WatchEvent {
                rv,
                type_,
                object: stored,
                prev,
                committed_at,
            }));
        }
        accepted.push((reply, events, results));
    }

    (rv, overlay, accepted, rows)
}

async fn commit_batch(inner: &Inner, backend: &mut dyn Backend, batch: Vec<(Vec<WriteOp>, Reply)>) {
    let committed_at = now_unix();
    // The writer is the only mutator of the cache, so what this reads stays current until we
    // publish below. The read ends before the commit: publishing takes the write lock.
    let (rv, overlay, accepted, rows) = check_batch(&inner.state.read(), batch, committed_at);
    // Even with nothing to write, this ends what `begin` started (and releases its lock).
    if let Err(e) = backend.commit(&rows).await {
        tracing::error!(error = %e, "store commit failed");
        for (reply, _, _) in accepted {
            let _ = reply.send(Err(WriteError::Unavailable(
                "the write could not be made durable".into(),
            )));
        }
        return;
    }

    // Durable: publish to the cache, the log and watchers, then acknowledge.
    let mut touched = KindSet::default();
    {
        let mut state = inner.state.write();
        for (map, changes) in state.objects.iter_mut().zip(overlay) {
            for (key, value) in changes {
                match value {
                    Some(v) => {
                        map.insert(v);
                    }
                    None => {
                        map.remove(&key);
                    }
                }
            }
        }
        let batch_start = state.rv;
        state.rv = rv;
        for (_, events, _) in &accepted {
            for e in events {
                touched.insert(e.kind());
                // Each write's previous version, including one written earlier in this batch
                // (which never reached the cache).
                if let Some(prev) = &e.prev {
                    prev.supersede();
                }
                release_replaced(&mut state, e.prev.as_deref());
                state.log_bytes += e.cost();
                state.log.push_back(e.clone());
            }
        }
        // Never this batch's own changes: a watcher that keeps up must see every one of them,
        // however large the batch.
        trim_log(&mut state, &inner.options, batch_start);
        refresh_counts(inner, &state, touched);
    }
    // Watchers read the log, which now has every change up to `rv`.
    inner.published.send_replace(rv);
    watch::wake_followers(inner, touched);
    for (reply, _, results) in accepted {
        let _ = reply.send(Ok(results));
    }
}

/// Sets the lock-free counts of the `touched` kinds from the cache (held locked for writing, or
/// not yet shared).
fn refresh_counts(inner: &Inner, state: &State, touched: KindSet) {
    for kind in touched.kinds() {
        inner.counts[kind as usize]
            .store(state.objects[kind as usize].len(), AtomicOrdering::Relaxed);
    }
}

/// Drops log entries beyond the count or byte bound, or older than the window; never the
/// newest one, nor any after `keep_after`.
fn trim_log(state: &mut State, options: &StoreOptions, keep_after: Rv) {
    let horizon = now_unix() - options.log_window.as_secs() as i64;
    while state.log.len() > 1
        && state.log.front().is_some_and(|e| e.rv <= keep_after)
        && (state.log.len() > options.log_max_events
            || state.log_bytes > options.log_max_bytes
            || state.log.front().is_some_and(|e| e.committed_at < horizon))
    {
        if let Some(e) = state.log.pop_front() {
            state.compacted_rv = e.rv;
            state.trimmed[e.kind() as usize] = e.rv;
            state.log_bytes -= e.cost();
            // Out of the log: its version is still needed only as its object's current one.
            if e.object.is_superseded() {
                release(state, e.rv);
            }
        }
    }
}

/// A write replaced (or deleted) `prev`. If `prev` has already left the log, nothing needs its
/// version any more; if it is still in the log, [`trim_log`] releases it when it leaves.
fn release_replaced(state: &mut State, prev: Option<&Stored>) {
    if let Some(prev) = prev
        && prev.rv <= state.compacted_rv
    {
        release(state, prev.rv);
    }
}

fn release(state: &mut State, rv: Rv) {
    if let Some(released) = &mut state.released {
        released.push(rv);
    }
}

async fn compact(inner: &Inner, backend: &mut dyn Backend) {
    let (up_to, released) = {
        let mut state = inner.state.write();
        let newest = state.rv;
        trim_log(&mut state, &inner.options, newest);
        let released = state.released.as_mut().map(std::mem::take);
        (state.compacted_rv, released.unwrap_or_default())
    };
    if let Err(e) = backend.compact(up_to, &released).await {
        tracing::warn!(error = %e, "change log compaction failed; will retry");
        // Kept for the next attempt: the database still holds these versions.
        if let Some(pending) = &mut inner.state.write().released {
            pending.extend(released);
        }
    }
}

#[cfg(test)]
mod tests;
