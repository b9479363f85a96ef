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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    ObjectReference, PersistentVolumeSpec, PersistentVolumeStatus, VolumeNodeAffinity,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use parking_lot::Mutex;
use stowage_provider::quantity::Quantity;
use stowage_provider::{
    AccessMode, ClaimRef, ContentSource, CreateVolumeRequest, DeleteVolumeRequest, Provider,
    Topology, TopologyRequirement,
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Context;
use super::annotations::*;
use super::finalizers::PROVISIONED_VOLUME;
use crate::registry::Write;
use crate::resources::volumesnapshot::{self, VolumeSnapshot};
use crate::resources::{
    AnyObject, Kind, Node, PersistentVolume, PersistentVolumeClaim, StorageClass, Typed, node, pv,
    storageclass,
};
use crate::runtime::{Action, Reconciler, backoff};
use crate::store::{ObjectKey, Stored, WatchEvent};

pub use crate::controllers::Error;

pub const COMPONENT: &str = "provisioner";
/// Provider calls in flight per StorageClass.
const PER_CLASS: usize = 128;
/// How long a reconcile waits for a slot of its class before yielding its worker.
const SLOT_WAIT: Duration = Duration::from_secs(1);
/// The longest a provider call may take before it counts as a temporary failure.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Class parameters with this prefix are for Stowage, not the provider (as in CSI).
const RESERVED_PREFIX: &str = "csi.storage.k8s.io/";
const FSTYPE_PARAMETER: &str = "csi.storage.k8s.io/fstype";

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
    /// Claims waiting for a volume, by class: a volume of the class going away may make room.
    waiting: Mutex<HashMap<String, std::collections::BTreeSet<ObjectKey>>>,
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// The provider that made a volume object, if it is one of ours.
fn provisioned_by(v: &PersistentVolume) -> Option<String> {
    annotation(&v.metadata, PROVISIONED_BY)
        .map(str::to_string)
        .or_else(|| v.spec.as_ref()?.csi.as_ref().map(|c| c.driver.clone()))
}

/// What a claim's `dataSourceRef` (or else `dataSource`) names: (API group, kind, name,
/// namespace if another one is named).
fn data_source(c: &PersistentVolumeClaim) -> Option<(String, String, String, Option<String>)> {
    let spec = c.spec.as_ref()?;
    if let Some(r) = &spec.data_source_ref {
        return Some((
            r.api_group.clone().unwrap_or_default(),
            r.kind.clone(),
            r.name.clone(),
            r.namespace.clone(),
        ));
    }
    let r = spec.data_source.as_ref()?;
    Some((
        r.api_group.clone().unwrap_or_default(),
        r.kind.clone(),
        r.name.clone(),
        None,
    ))
}

/// The VolumeSnapshot a claim is to be restored from, if that is what its data source is.
fn snapshot_source(c: &PersistentVolumeClaim) -> Option<String> {
    match data_source(c)? {
        (group, kind, name, None)
            if group == volumesnapshot::GROUP && kind == volumesnapshot::KIND =>
        {
            Some(name)
        }
        _ => None,
    }
}

/// What a new volume starts from.
enum Restore {
    Empty,
    From(ContentSource),
    /// Not possible yet (the snapshot is missing or still being cut).
    Wait(String),
    /// Never possible as asked.
    Refuse(String),
}

fn needs_backing_delete(v: &PersistentVolume) -> bool {
    let policy = v
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or("Retain");
    let has_finalizer = v
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == PROVISIONED_VOLUME);
    // A volume we provisioned carries our finalizer until its backing volume is deleted; once
    // the finalizer is gone there is nothing left to delete (checking would call the provider
    // a second time for every volume).
    let provisioned_here = annotation(&v.metadata, PROVISIONED_BY).is_some();
    let released =
        pv::phase(v) == "Released" && policy == "Delete" && (has_finalizer || !provisioned_here);
    let deleting_ours =
        v.metadata.deletion_timestamp.is_some() && has_finalizer && pv::phase(v) != "Bound";
    released || deleting_ours
}

fn to_topology_requirement(
    class: &StorageClass,
    node: Option<(&str, &BTreeMap<String, String>)>,
) -> TopologyRequirement {
    let mut allowed = Vec::new();
    for term in class.allowed_topologies.iter().flatten() {
        // Each term is a product of its expressions' values.
        let mut combos = vec![BTreeMap::new()];
        for e in term.match_label_expressions.iter().flatten() {
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    e.values.iter().map(move |v| {
                        let mut c: BTreeMap<String, String> = c.clone();
                        c.insert(e.key.clone(), v.clone());
                        c
                    })
                })
                .collect();
        }
        allowed.extend(combos.into_iter().map(Topology));
    }
    match node {
        Some((_, labels)) => {
            let segments: BTreeMap<String, String> = labels
                .iter()
                .filter(|(k, _)| {
                    k.as_str() == "kubernetes.io/hostname" || k.starts_with("topology.")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let here = Topology(segments);
            TopologyRequirement {
                requisite: vec![here.clone()],
                preferred: vec![here],
            }
        }
        None => TopologyRequirement {
            requisite: allowed.clone(),
            preferred: allowed,
        },
    }
}

fn node_affinity(topologies: &[Topology]) -> Option<VolumeNodeAffinity> {
    if topologies.is_empty() {
        return None;
    }
    Some(VolumeNodeAffinity {
        required: Some(NodeSelector {
            node_selector_terms: topologies
                .iter()
                .map(|t| NodeSelectorTerm {
                    match_expressions: Some(
                        t.0.iter()
                            .map(|(k, v)| NodeSelectorRequirement {
                                key: k.clone(),
                                operator: "In".into(),
                                values: Some(vec![v.clone()]),
                            })
                            .collect(),
                    ),
                    match_fields: None,
                })
                .collect(),
        }),
    })
}

impl Provisioner {
    pub fn new(ctx: Arc<Context>) -> Self {
        Provisioner {
            ctx,
            per_class: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashSet::new()),
            waiting: Mutex::new(HashMap::new()),
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

    /// Resolves a claim's data source into what the provider restores from. Only VolumeSnapshots
    /// of the same provider, no larger than the claim, are accepted.
    fn restore_source(
        &self,
        c: &PersistentVolumeClaim,
        namespace: &str,
        provisioner: &str,
    ) -> Restore {
        let Some((group, kind, name, other_namespace)) = data_source(c) else {
            return Restore::Empty;
        };
        if group != volumesnapshot::GROUP || kind != volumesnapshot::KIND {
            let what = if group.is_empty() {
                kind
            } else {
                format!("{kind}.{group}")
            };
            return Restore::Refuse(format!(
                "data source {what} \"{name}\" is not supported: claims can be restored from VolumeSnapshots (snapshot.storage.k8s.io) only"
            ));
        }
        if other_namespace.is_some_and(|n| n != namespace) {
            return Restore::Refuse(
                "restoring from a VolumeSnapshot in another namespace is not supported".into(),
            );
        }
        let Some(stored) = self.ctx.store.get_typed::<VolumeSnapshot>(namespace, &name) else {
            return Restore::Wait(format!("volumesnapshot \"{name}\" not found"));
        };
        let snapshot: &VolumeSnapshot = stored.typed();
        let status = snapshot.status.clone().unwrap_or_default();
        let (Some(id), true) = (status.snapshot_handle, volumesnapshot::is_ready(snapshot)) else {
            return Restore::Wait(format!("volumesnapshot \"{name}\" is not ready to use yet"));
        };
        if status.driver.as_deref() != Some(provisioner) {
            return Restore::Refuse(format!(
                "volumesnapshot \"{name}\" belongs to provider {}, not to this claim's provisioner {provisioner}",
                status.driver.as_deref().unwrap_or("(unknown)")
            ));
        }
        let restore = status
            .restore_size
            .as_ref()
            .and_then(crate::machinery::quantity::bytes_of)
            .unwrap_or(0);
        let requested = crate::resources::pvc::request_bytes(c).unwrap_or(0);
        if requested < restore {
            return Restore::Refuse(format!(
                "the claim requests {requested} bytes, less than the {restore} bytes of volumesnapshot \"{name}\""
            ));
        }
        Restore::From(ContentSource::Snapshot { snapshot_id: id })
    }

    /// Calls the provider with a deadline, counting the call in metrics.
    async fn call<T>(
        &self,
        provider: &Arc<dyn Provider>,
        operation: &'static str,
        f: impl std::future::Future<Output = stowage_provider::Result<T>>,
    ) -> stowage_provider::Result<T> {
        self.ctx
            .call_provider(provider.name(), operation, CALL_TIMEOUT, f)
            .await
    }

    async fn provision(&self, key: &ObjectKey) -> Result<Action, Error> {
        let Some(claim) = self
            .ctx
            .store
            .get_typed::<PersistentVolumeClaim>(&key.namespace, &key.name)
        else {
            return Ok(Action::await_change());
        };
        let c: &PersistentVolumeClaim = claim.typed();
        let unbound = c
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .unwrap_or_default()
            .is_empty();
        if c.metadata.deletion_timestamp.is_some() || !unbound {
            return Ok(Action::await_change());
        }
        let Some(provisioner) = annotation(&c.metadata, STORAGE_PROVISIONER).map(str::to_string)
        else {
            return Ok(Action::await_change());
        };
        let Some(provider) = self.ctx.providers.get(&provisioner).cloned() else {
            return Ok(Action::await_change());
        };
        let class_name = c
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.clone())
            .unwrap_or_default();
        let Some(class) = self.ctx.store.get_typed::<StorageClass>("", &class_name) else {
            self.ctx.recorder.warning(
                COMPONENT,
                &claim.object,
                "ProvisioningFailed",
                format!("storageclass.storage.k8s.io \"{class_name}\" not found"),
            );
            return Ok(Action::requeue(Duration::from_secs(30)));
        };
        let sc: &StorageClass = class.typed();
        if sc.provisioner != provisioner {
            return Ok(Action::await_change());
        }
        let selected = annotation(&c.metadata, SELECTED_NODE).map(str::to_string);
        if storageclass::is_wait_for_first_consumer(sc) && selected.is_none() {
            return Ok(Action::await_change());
        }
        let content_source = match self.restore_source(c, &key.namespace, &provisioner) {
            Restore::Empty => None,
            Restore::From(source) => Some(source),
            Restore::Wait(why) => {
                self.ctx
                    .recorder
                    .normal(COMPONENT, &claim.object, "WaitingForDataSource", why);
                // The snapshot becoming ready triggers the claim; this is a fallback.
                return Ok(Action::requeue(Duration::from_secs(30)));
            }
            Restore::Refuse(why) => {
                self.ctx
                    .recorder
                    .warning(COMPONENT, &claim.object, "ProvisioningFailed", why);
                return Ok(Action::await_change());
            }
        };
        let Some(_slot) = self.class_slot(&class_name).await else {
            return Ok(Action::requeue(Duration::from_millis(100)));
        };
        let name = format!("pvc-{}", claim.uid());
        let node_labels = selected.as_ref().map(|n| {
            let obj = self.ctx.store.get_typed::<Node>("", n);
            node::labels_for(n, obj.as_ref().map(|s| s.typed::<Node>()))
        });
        let spec = c.spec.clone().unwrap_or_default();
        let parameters: BTreeMap<String, String> = sc
            .parameters
            .iter()
            .flatten()
            .filter(|(k, _)| !k.starts_with(RESERVED_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let request = CreateVolumeRequest {
            name: name.clone(),
            capacity_bytes: crate::resources::pvc::request_bytes(c).unwrap_or(0),
            access_modes: spec
                .access_modes
                .iter()
                .flatten()
                .filter_map(|m| AccessMode::parse(m))
                .collect(),
            block: spec.volume_mode.as_deref() == Some("Block"),
            parameters,
            mount_options: sc.mount_options.clone().unwrap_or_default(),
            topology: to_topology_requirement(sc, selected.as_deref().zip(node_labels.as_ref())),
            claim: ClaimRef {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                uid: claim.uid().to_string(),
                annotations: c.metadata.annotations.clone().unwrap_or_default(),
            },
            content_source,
        };
        self.in_flight.lock().insert(name.clone());
        let created = self
            .call(&provider, "create_volume", provider.create_volume(&request))
            .await;
        let outcome = match created {
            Ok(volume) => {
                self.record_volume(&claim, sc, &provisioner, &name, volume)
                    .await
            }
            Err(e) => {
                self.ctx.recorder.warning(
                    COMPONENT,
                    &claim.object,
                    "ProvisioningFailed",
                    format!("failed to provision volume with StorageClass \"{class_name}\": {e}"),
                );
                Err(Error::Provider(e))
            }
        };
        self.in_flight.lock().remove(&name);
        outcome
    }

    /// Writes the new volume object and the claim's binding together.
    async fn record_volume(
        &self,
        claim: &Arc<Stored>,
        sc: &StorageClass,
        provisioner: &str,
        name: &str,
        volume: stowage_provider::Volume,
    ) -> Result<Action, Error> {
        let c: &PersistentVolumeClaim = claim.typed();
        let spec = c.spec.clone().unwrap_or_default();
        let reclaim = sc.reclaim_policy.clone().unwrap_or_else(|| "Delete".into());
        let capacity = BTreeMap::from([(
            "storage".to_string(),
            K8sQuantity(Quantity::from_units(volume.capacity_bytes).canonical()),
        )]);
        let fs_type = sc
            .parameters
            .as_ref()
            .and_then(|p| p.get(FSTYPE_PARAMETER).cloned());
        let now = Time(jiff::Timestamp::now());
        let pv = PersistentVolume {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                annotations: Some(BTreeMap::from([(
                    PROVISIONED_BY.to_string(),
                    provisioner.to_string(),
                )])),
                finalizers: (reclaim == "Delete").then(|| vec![PROVISIONED_VOLUME.to_string()]),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                access_modes: spec.access_modes.clone(),
                capacity: Some(capacity.clone()),
                claim_ref: Some(ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("PersistentVolumeClaim".into()),
                    namespace: c.metadata.namespace.clone(),
                    name: c.metadata.name.clone(),
                    uid: c.metadata.uid.clone(),
                    resource_version: c.metadata.resource_version.clone(),
                    field_path: None,
                }),
                csi: Some(CSIPersistentVolumeSource {
                    driver: provisioner.to_string(),
                    volume_handle: volume.handle.clone(),
                    volume_attributes: Some(volume.attributes.clone()),
                    fs_type,
                    ..Default::default()
                }),
                mount_options: sc.mount_options.clone(),
                node_affinity: node_affinity(&volume.accessible_topology),
                persistent_volume_reclaim_policy: Some(reclaim),
                storage_class_name: c.spec.as_ref().and_then(|s| s.storage_class_name.clone()),
                volume_mode: spec.volume_mode.clone(),
                ..Default::default()
            }),
            status: Some(PersistentVolumeStatus {
                phase: Some("Bound".into()),
                last_phase_transition_time: Some(now),
                ..Default::default()
            }),
        };
        let mut bound = c.clone();
        bound.spec.get_or_insert_with(Default::default).volume_name = Some(name.to_string());
        let a = bound.metadata.annotations.get_or_insert_with(BTreeMap::new);
        a.insert(BIND_COMPLETED.into(), "yes".into());
        a.insert(BOUND_BY_CONTROLLER.into(), "yes".into());
        let status = bound.status.get_or_insert_with(Default::default);
        status.phase = Some("Bound".into());
        status.capacity = Some(capacity);
        status.access_modes = spec.access_modes.clone();

        match self
            .ctx
            .registry
            .write_together(vec![
                Write::Create(pv.into_any()),
                Write::Update(bound.into_any(), claim.rv),
            ])
            .await
        {
            Ok(_) => {
                self.ctx.recorder.normal(
                    COMPONENT,
                    &claim.object,
                    "ProvisioningSucceeded",
                    format!("Successfully provisioned volume {name} with {provisioner}"),
                );
                Ok(Action::await_change())
            }
            // The claim changed meanwhile: try again; the provider call is idempotent.
            Err(e) if e.is_conflict() => Ok(Action::requeue(Duration::from_millis(5))),
            Err(e) if e.is_not_found() => {
                // The claim went away while its volume was being made: do not leak it.
                let provider = self.ctx.providers.get(provisioner).cloned();
                if let Some(p) = provider {
                    let req = DeleteVolumeRequest {
                        handle: volume.handle,
                        attributes: volume.attributes,
                    };
                    let _ = self.call(&p, "delete_volume", p.delete_volume(&req)).await;
                }
                Ok(Action::await_change())
            }
            // A volume object of that name exists already: the binder sorts the claim out.
            Err(e) if e.is_already_exists() => Ok(Action::await_change()),
            Err(e) => Err(Error::Api(e)),
        }
    }

    async fn reclaim(&self, name: &str) -> Result<Action, Error> {
        let Some(stored) = self.ctx.store.get_typed::<PersistentVolume>("", name) else {
            return Ok(Action::await_change());
        };
        let v: &PersistentVolume = stored.typed();
        if !needs_backing_delete(v) {
            return Ok(Action::await_change());
        }
        let Some(provider) = provisioned_by(v).and_then(|p| self.ctx.providers.get(&p).cloned())
        else {
            return Ok(Action::await_change());
        };
        let Some(csi) = v.spec.as_ref().and_then(|s| s.csi.as_ref()) else {
            return Ok(Action::await_change());
        };
        let class = v
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.clone())
            .unwrap_or_default();
        let Some(_slot) = self.class_slot(&class).await else {
            return Ok(Action::requeue(Duration::from_millis(100)));
        };
        let req = DeleteVolumeRequest {
            handle: csi.volume_handle.clone(),
            attributes: csi.volume_attributes.clone().unwrap_or_default(),
        };
        if let Err(e) = self
            .call(&provider, "delete_volume", provider.delete_volume(&req))
            .await
        {
            self.ctx.recorder.warning(
                COMPONENT,
                &stored.object,
                "VolumeFailedDelete",
                format!("deleting the backing volume failed (will retry): {e}"),
            );
            return Err(Error::Provider(e));
        }
        // The backing volume is gone: drop our finalizer, then the object.
        let mut without = v.clone();
        if let Some(f) = without.metadata.finalizers.as_mut() {
            f.retain(|f| f != PROVISIONED_VOLUME);
        }
        if &without != v {
            self.ctx
                .registry
                .write_together(vec![Write::Update(without.into_any(), stored.rv)])
                .await?;
        }
        if v.metadata.deletion_timestamp.is_none() {
            match self
                .ctx
                .registry
                .delete::<PersistentVolume>("", name, &Default::default(), &Default::default())
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(Error::Api(e)),
            }
        }
        tracing::debug!(volume = name, "deleted with its backing storage");
        Ok(Action::await_change())
    }

    /// Deletes backing volumes no object refers to. Returns how many it deleted.
    pub async fn sweep_orphans(&self) -> usize {
        let (volumes, _) = self.ctx.store.list(Kind::PersistentVolume, None);
        let handles: HashSet<String> = volumes
            .iter()
            .filter_map(|s| {
                s.typed::<PersistentVolume>()
                    .spec
                    .as_ref()?
                    .csi
                    .as_ref()
                    .map(|c| c.volume_handle.clone())
            })
            .collect();
        let (claims, _) = self.ctx.store.list(Kind::PersistentVolumeClaim, None);
        let claim_uids: HashSet<&str> = claims.iter().map(|c| c.uid()).collect();
        let mut deleted = 0;
        for provider in self.ctx.providers.iter() {
            if !provider.capabilities().dynamic_provisioning {
                continue;
            }
            let Ok(listed) = self
                .call(provider, "list_volumes", provider.list_volumes())
                .await
            else {
                continue;
            };
            for info in listed {
                let Some(uid) = info.name.strip_prefix("pvc-") else {
                    continue;
                };
                if handles.contains(&info.handle)
                    || claim_uids.contains(uid)
                    || self.in_flight.lock().contains(&info.name)
                {
                    continue;
                }
                // Check again against the newest state: a volume may have just been recorded.
                let recorded = self
                    .ctx
                    .store
                    .get(Kind::PersistentVolume, &ObjectKey::cluster(&info.name))
                    .is_some();
                if recorded {
                    continue;
                }
                let req = DeleteVolumeRequest {
                    handle: info.handle.clone(),
                    attributes: BTreeMap::new(),
                };
                match self
                    .call(provider, "delete_volume", provider.delete_volume(&req))
                    .await
                {
                    Ok(()) => {
                        tracing::warn!(
                            provider = provider.name(),
                            volume = info.name,
                            "deleted an orphaned backing volume (no claim or volume object refers to it)"
                        );
                        deleted += 1;
                    }
                    Err(e) => {
                        tracing::warn!(volume = info.name, error = %e, "could not delete an orphaned backing volume")
                    }
                }
            }
        }
        deleted
    }
}

/// Runs the orphan sweep every `period` (and once, shortly after start).
pub async fn sweep_orphans_periodically(
    p: Arc<Provisioner>,
    period: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => { p.sweep_orphans().await; }
        }
    }
}

#[async_trait::async_trait]
impl Reconciler for Provisioner {
    type Key = Key;
    type Error = Error;

    fn name(&self) -> &'static str {
        "provisioner"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[
            Kind::PersistentVolumeClaim,
            Kind::PersistentVolume,
            Kind::VolumeSnapshot,
        ]
    }

    fn reset(&self) {
        self.waiting.lock().clear();
    }

    fn observe(&self, object: &Arc<Stored>, deleted: bool) {
        let AnyObject::PersistentVolumeClaim(c) = &object.object else {
            return;
        };
        let class = c
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.clone())
            .unwrap_or_default();
        let mut waiting = self.waiting.lock();
        let set = waiting.entry(class).or_default();
        let pending = annotation(&c.metadata, STORAGE_PROVISIONER).is_some()
            && c.spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .unwrap_or_default()
                .is_empty();
        if pending && !deleted {
            set.insert(object.key.clone());
        } else {
            set.remove(&object.key);
        }
    }

    fn keys_for(&self, event: &WatchEvent) -> Vec<Key> {
        let mut keys = self.keys_for_object(&event.object);
        // A volume going away frees capacity: claims of its class waiting for room retry now.
        if let (crate::store::EventType::Deleted, AnyObject::PersistentVolume(v)) =
            (event.type_, &event.object.object)
        {
            let class = v
                .spec
                .as_ref()
                .and_then(|s| s.storage_class_name.clone())
                .unwrap_or_default();
            if let Some(set) = self.waiting.lock().get(&class) {
                keys.extend(set.iter().take(64).cloned().map(Key::Claim));
            }
        }
        keys
    }

    fn keys_for_object(&self, object: &Stored) -> Vec<Key> {
        match &object.object {
            AnyObject::PersistentVolumeClaim(c)
                if annotation(&c.metadata, STORAGE_PROVISIONER).is_some() =>
            {
                vec![Key::Claim(object.key.clone())]
            }
            AnyObject::PersistentVolume(v) if needs_backing_delete(v) => {
                vec![Key::Volume(object.key.name.clone())]
            }
            // A snapshot becoming ready lets the claims waiting to be restored from it go ahead.
            AnyObject::VolumeSnapshot(s) if volumesnapshot::is_ready(s) => {
                let (claims, _) = self
                    .ctx
                    .store
                    .list(Kind::PersistentVolumeClaim, Some(&object.key.namespace));
                claims
                    .iter()
                    .filter(|c| {
                        let c: &PersistentVolumeClaim = c.typed();
                        annotation(&c.metadata, STORAGE_PROVISIONER).is_some()
                            && c.spec
                                .as_ref()
                                .and_then(|s| s.volume_name.as_deref())
                                .unwrap_or_default()
                                .is_empty()
                            && snapshot_source(c).as_deref() == Some(object.key.name.as_str())
                    })
                    .map(|c| Key::Claim(c.key.clone()))
                    .collect()
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

    fn error_policy(&self, _key: &Key, error: &Error, failures: u32) -> Action {
        // Temporary failures retry fast; final ones (bad parameters, no room) retry slowly in
        // case the admin fixes the class or space frees up.
        let floor = match error {
            Error::Provider(e) if !e.is_temporary() => Duration::from_secs(5),
            _ => Duration::ZERO,
        };
        Action::requeue(backoff(failures).max(floor))
    }
}
