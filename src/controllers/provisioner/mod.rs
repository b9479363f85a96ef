//! The provisioner: creates volumes for claims through providers, and deletes them when their
//! reclaim policy says so.
//!
//! - A claim the binder handed over (annotation `volume.kubernetes.io/storage-provisioner`)
//!   gets a volume named `pvc-<claim uid>`, the provider's idempotency key. The volume object
//!   is created **already bound**: the new PersistentVolume and the claim's binding are written
//!   in one transaction.
//! - Provisioned volumes with reclaim policy Delete carry a finalizer until the provider has
//!   deleted the backing storage, so deleting the object first cannot leak it.
//! - A periodic sweep deletes backing volumes that no object knows about (a claim deleted while
//!   its volume was being made; a crash at the wrong moment). Kubernetes leaks these.
//! - Provider calls are bounded in time, and in concurrency per StorageClass, so one slow
//!   backend cannot hold up the others.

//!
//! One file per job: [`provision`] (a claim → a new volume, bound), [`reclaim`] (a released
//! volume's backing storage, and the orphan sweep), [`restore`] (a claim's data source →
//! what the provider restores from), [`topology`] (classes and nodes ↔ provider topology).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use parking_lot::Mutex;
use tokio::sync::Semaphore;

use super::Context;
use crate::resources::names::annotations::{COPYING_FROM, PROVISIONED_BY, STORAGE_PROVISIONER};
use crate::resources::volumesnapshot;
use crate::resources::{AnyObject, Kind, PersistentVolume, PersistentVolumeClaim};
use crate::runtime::{Action, Reconciler};
use crate::store::{ObjectKey, Stored, WatchEvent};

mod provision;
mod reclaim;
pub mod restore;
mod topology;

pub use crate::controllers::Error;
pub use provision::{create_request, new_volume, provider_parameters};
use reclaim::needs_backing_delete;
pub use reclaim::sweep_orphans_periodically;

pub const COMPONENT: &str = "provisioner";
/// Provider calls in flight per StorageClass.
const PER_CLASS: usize = 128;
/// How long a reconcile waits for a slot of its class before yielding its worker.
const SLOT_WAIT: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    Claim(ObjectKey),
    Volume(String),
}

pub struct Provisioner {
    ctx: Arc<Context>,
    per_class: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Volume names being created right now (the orphan sweep leaves them alone).
    in_flight: Mutex<HashSet<String>>,
    /// Claims waiting for a volume: handed to a provisioner and not bound.
    waiting: Mutex<Waiting>,
    /// How far the copies into new volumes (restores, clones) have been reported.
    copy_progress: crate::controllers::snapshots::ProgressReports,
}

/// What a claim starts from, when that must be ready before its volume can be made.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum DataSource {
    /// A clone of this claim, once it is bound.
    Claim(String),
    /// A restore of this snapshot, once it is ready.
    Snapshot(String),
}

/// The claims waiting for a volume, indexed by what lets them go ahead. Kept from the change
/// feed (`observe`), so that a change finds the claims it concerns without a look at every
/// claim: a claim becoming bound used to decode its whole namespace to find its clones, which
/// at a million objects cost more than the store could write.
#[derive(Default)]
struct Waiting {
    /// By class: a volume of the class going away may make room.
    by_class: HashMap<String, BTreeSet<ObjectKey>>,
    /// By namespace and data source: the source claim bound, or the snapshot ready.
    by_source: HashMap<(String, DataSource), BTreeSet<ObjectKey>>,
}

impl Waiting {
    fn claims_on(&self, namespace: &str, source: DataSource) -> Vec<Key> {
        self.by_source
            .get(&(namespace.to_string(), source))
            .map(|claims| claims.iter().cloned().map(Key::Claim).collect())
            .unwrap_or_default()
    }
}

fn data_source(c: &PersistentVolumeClaim) -> Option<DataSource> {
    restore::clone_source(c)
        .map(DataSource::Claim)
        .or_else(|| restore::snapshot_source(c).map(DataSource::Snapshot))
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// Whether a copy into the claim's new volume (a restore, a clone) has started and is not
/// done: what it copies from must stay.
pub fn is_copying(c: &PersistentVolumeClaim) -> bool {
    annotation(&c.metadata, COPYING_FROM).is_some() && !crate::resources::pvc::is_bound(c)
}

/// The provider that made a volume object, if it is one of ours.
fn provisioned_by(v: &PersistentVolume) -> Option<String> {
    annotation(&v.metadata, PROVISIONED_BY)
        .map(str::to_string)
        .or_else(|| v.spec.as_ref()?.csi.as_ref().map(|c| c.driver.clone()))
}

impl Provisioner {
    pub fn new(ctx: Arc<Context>) -> Self {
        Provisioner {
            ctx,
            per_class: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashSet::new()),
            waiting: Mutex::new(Waiting::default()),
            copy_progress: Default::default(),
        }
    }

    /// A slot for a provider call on `class`, waiting a little if the class is busy. `None`
    /// means the class is saturated (a slow backend): the caller requeues instead of holding a
    /// worker that other classes need.
    async fn class_slot(&self, class: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let sem = self
            .per_class
            .lock()
            .entry(class.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(PER_CLASS)))
            .clone();
        tokio::time::timeout(SLOT_WAIT, sem.acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

#[async_trait::async_trait]
impl Reconciler for Provisioner {
    type Key = Key;

    fn name(&self) -> &'static str {
        "provisioner"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[
            Kind::PersistentVolumeClaim,
            Kind::PersistentVolume,
            Kind::VolumeSnapshot,
            Kind::VolumeSnapshotContent,
            Kind::VolumeAttributesClass,
        ]
    }

    fn reset(&self) {
        *self.waiting.lock() = Waiting::default();
    }

    fn observe(&self, object: &Arc<Stored>, deleted: bool) {
        let AnyObject::PersistentVolumeClaim(c) = &*object.decoded() else {
            return;
        };
        let class = c
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.clone())
            .unwrap_or_default();
        let pending = annotation(&c.metadata, STORAGE_PROVISIONER).is_some()
            && c.spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .unwrap_or_default()
                .is_empty();
        // A claim's class and data source do not change (the API refuses it), so the entries
        // to leave are the ones its last version names.
        let source = data_source(c).map(|s| (object.key.namespace.to_string(), s));
        let mut waiting = self.waiting.lock();
        let by_class = waiting.by_class.entry(class).or_default();
        if pending && !deleted {
            by_class.insert(object.key.clone());
            if let Some(source) = source {
                waiting
                    .by_source
                    .entry(source)
                    .or_default()
                    .insert(object.key.clone());
            }
        } else {
            by_class.remove(&object.key);
            if let Some(source) = source
                && let Some(claims) = waiting.by_source.get_mut(&source)
            {
                claims.remove(&object.key);
                if claims.is_empty() {
                    waiting.by_source.remove(&source);
                }
            }
        }
    }

    fn keys_for(&self, event: &WatchEvent) -> Vec<Key> {
        let mut keys = self.keys_for_object(&event.object);
        // A volume going away frees capacity: claims of its class waiting for room retry now.
        if let (crate::store::EventType::Deleted, AnyObject::PersistentVolume(v)) =
            (event.type_, &*event.object.decoded())
        {
            let class = v
                .spec
                .as_ref()
                .and_then(|s| s.storage_class_name.clone())
                .unwrap_or_default();
            if let Some(set) = self.waiting.lock().by_class.get(&class) {
                keys.extend(set.iter().take(64).cloned().map(Key::Claim));
            }
        }
        // A new VolumeAttributesClass lets the claims waiting for it go ahead.
        if event.kind() == Kind::VolumeAttributesClass
            && event.type_ == crate::store::EventType::Added
        {
            let name = &event.object.key.name;
            let (claims, _) = self.ctx.store.list(Kind::PersistentVolumeClaim, None);
            keys.extend(
                claims
                    .iter()
                    .filter(|c| c.may_have("volumeAttributesClassName", name))
                    .map(|c| Key::Claim(c.key.clone())),
            );
        }
        keys
    }

    fn keys_for_object(&self, object: &Stored) -> Vec<Key> {
        let waiting_on =
            |namespace: &str, source: DataSource| self.waiting.lock().claims_on(namespace, source);
        let namespace = object.key.namespace.as_str();
        let name = object.key.name.as_str();
        match &*object.decoded() {
            AnyObject::PersistentVolumeClaim(c) => {
                let mut keys = Vec::new();
                if annotation(&c.metadata, STORAGE_PROVISIONER).is_some() {
                    keys.push(Key::Claim(object.key.clone()));
                }
                // A claim becoming bound lets the claims waiting to clone it go ahead.
                if crate::resources::pvc::is_bound(c) {
                    keys.extend(waiting_on(namespace, DataSource::Claim(name.to_string())));
                }
                keys
            }
            AnyObject::PersistentVolume(v) if needs_backing_delete(v) => {
                vec![Key::Volume(object.key.name.to_string())]
            }
            // A snapshot becoming ready lets the claims waiting to be restored from it go ahead.
            AnyObject::VolumeSnapshot(s) if volumesnapshot::is_ready(s) => {
                waiting_on(namespace, DataSource::Snapshot(name.to_string()))
            }
            // An admin's change to a content (allowing a mode change) lets the claims waiting
            // to be restored from its snapshot try again.
            AnyObject::VolumeSnapshotContent(c) if c.is_ready() => {
                let (namespace, snapshot) = c.snapshot_ref();
                waiting_on(namespace, DataSource::Snapshot(snapshot.to_string()))
            }
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &Key) -> Result<Action, Error> {
        match key {
            Key::Claim(k) => self.provision(k).await,
            Key::Volume(n) => self.reclaim(n).await,
        }
    }
}
