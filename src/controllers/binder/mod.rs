//! The binder: Kubernetes' PersistentVolume controller semantics, with these differences:
//!
//! - matching is an index lookup (`O(log n)` per claim), not a scan of every volume;
//! - a bind writes the volume's `claimRef` and phase and the claim's `volumeName` and phase in
//!   **one transaction**: no half-bound state can be seen or survive a crash;
//! - a volume that becomes Available wakes the claims it can serve at once, instead of at the
//!   next resync;
//! - a Released volume is made Available again by removing its `claimRef` (documented, logged).
//!
//! Phases: volumes Pending → Available → Bound → Released (→ Failed); claims Pending → Bound
//! (→ Lost). Claims of a WaitForFirstConsumer class wait for a pod with a node.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use parking_lot::Mutex;

use super::Context;
use super::annotations::*;
use crate::error::ApiError;
use crate::registry::Write;
use crate::resources::{
    AnyObject, Kind, PersistentVolume, PersistentVolumeClaim, Pod, StorageClass, Typed, pod,
};
use crate::runtime::{Action, Reconciler};
use crate::store::{EventType, ObjectKey, Stored, WatchEvent};

mod claim;
pub mod index;
#[cfg(test)]
mod properties;
mod volume;

use index::Index;

pub const COMPONENT: &str = "persistentvolume-controller";

/// How many waiting claims a newly available volume wakes.
const WAKE_PER_VOLUME: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    Claim(ObjectKey),
    Volume(String),
}

pub struct Binder {
    ctx: Arc<Context>,
    index: Mutex<Index>,
}

impl Binder {
    pub fn new(ctx: Arc<Context>) -> Self {
        Binder {
            ctx,
            index: Mutex::new(Index::default()),
        }
    }

    fn get_class(&self, name: &str) -> Option<Arc<Stored>> {
        (!name.is_empty())
            .then(|| self.ctx.store.get_typed::<StorageClass>("", name))
            .flatten()
    }

    /// Writes a bound pair in one transaction.
    async fn bind(
        &self,
        claim: &Arc<Stored>,
        volume: &Arc<Stored>,
        claim_named_volume: bool,
    ) -> Result<(), ApiError> {
        let mut c: PersistentVolumeClaim = claim.typed::<PersistentVolumeClaim>().clone();
        let mut v: PersistentVolume = volume.typed::<PersistentVolume>().clone();
        let now = Time(jiff::Timestamp::now());

        let vspec = v.spec.get_or_insert_with(Default::default);
        let volume_had_ref = vspec.claim_ref.as_ref().is_some_and(|r| r.uid.is_some());
        vspec.claim_ref = Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            namespace: c.metadata.namespace.clone(),
            name: c.metadata.name.clone(),
            uid: c.metadata.uid.clone(),
            resource_version: c.metadata.resource_version.clone(),
            field_path: None,
        });
        let capacity = vspec.capacity.clone();
        let modes = vspec.access_modes.clone();
        if !volume_had_ref {
            v.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(BOUND_BY_CONTROLLER.into(), "yes".into());
        }
        let vstatus = v.status.get_or_insert_with(Default::default);
        vstatus.phase = Some("Bound".into());
        vstatus.last_phase_transition_time = Some(now);
        vstatus.message = None;
        vstatus.reason = None;

        let cspec = c.spec.get_or_insert_with(Default::default);
        cspec.volume_name = v.metadata.name.clone();
        let annotations = c.metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.insert(BIND_COMPLETED.into(), "yes".into());
        if !claim_named_volume {
            annotations.insert(BOUND_BY_CONTROLLER.into(), "yes".into());
        }
        let cstatus = c.status.get_or_insert_with(Default::default);
        cstatus.phase = Some("Bound".into());
        cstatus.capacity = capacity;
        cstatus.access_modes = modes;

        self.ctx
            .registry
            .write_together(vec![
                Write::Update(v.into_any(), volume.rv),
                Write::Update(c.into_any(), claim.rv),
            ])
            .await
            .map(|_| ())
    }
}

fn claim_key_of_ref(r: &ObjectReference) -> ObjectKey {
    ObjectKey::new(
        r.namespace.clone().unwrap_or_default(),
        r.name.clone().unwrap_or_default(),
    )
}

#[async_trait::async_trait]
impl Reconciler for Binder {
    type Key = Key;
    type Error = ApiError;

    fn name(&self) -> &'static str {
        "binder"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[
            Kind::PersistentVolume,
            Kind::PersistentVolumeClaim,
            Kind::Pod,
            Kind::StorageClass,
        ]
    }

    fn reset(&self) {
        self.index.lock().clear();
    }

    fn observe(&self, object: &Arc<Stored>, deleted: bool) {
        let mut index = self.index.lock();
        match &object.object {
            AnyObject::PersistentVolume(_) if deleted => index.remove_volume(&object.key.name),
            AnyObject::PersistentVolume(v) => index.upsert_volume(&object.key.name, v),
            AnyObject::PersistentVolumeClaim(_) if deleted => index.remove_claim(&object.key),
            AnyObject::PersistentVolumeClaim(c) => index.upsert_claim(&object.key, c),
            AnyObject::Pod(_) if deleted => index.remove_pod(&object.key),
            AnyObject::Pod(p) => index.upsert_pod(&object.key, p),
            _ => {}
        }
    }

    fn keys_for(&self, event: &WatchEvent) -> Vec<Key> {
        let obj = &event.object;
        let index = self.index.lock();
        match &obj.object {
            AnyObject::PersistentVolumeClaim(c) => {
                let mut keys = vec![Key::Claim(obj.key.clone())];
                if let Some(v) = c
                    .spec
                    .as_ref()
                    .and_then(|s| s.volume_name.clone())
                    .filter(|v| !v.is_empty())
                {
                    keys.push(Key::Volume(v));
                }
                // Volumes pre-bound to this claim by name.
                keys.extend(index.prebound_for(&obj.key).into_iter().map(Key::Volume));
                keys
            }
            AnyObject::PersistentVolume(v) => {
                let mut keys = vec![Key::Volume(obj.key.name.clone())];
                if let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
                    keys.push(Key::Claim(claim_key_of_ref(r)));
                }
                keys.extend(
                    index
                        .claims_naming(&obj.key.name)
                        .into_iter()
                        .map(Key::Claim),
                );
                if event.type_ != EventType::Deleted && index.is_available(&obj.key.name) {
                    keys.extend(
                        index
                            .claims_for_volume(&obj.key.name, WAKE_PER_VOLUME)
                            .into_iter()
                            .map(Key::Claim),
                    );
                }
                keys
            }
            AnyObject::Pod(p) => {
                // A pod landing on a node lets WaitForFirstConsumer claims proceed.
                if pod::node_name(p).is_none() {
                    return Vec::new();
                }
                pod::claim_names(p)
                    .map(|c| Key::Claim(ObjectKey::new(obj.key.namespace.clone(), c)))
                    .collect()
            }
            AnyObject::StorageClass(_) => index
                .claims_of_class(&obj.key.name, 10_000)
                .into_iter()
                .map(Key::Claim)
                .collect(),
            _ => Vec::new(),
        }
    }

    fn keys_for_object(&self, object: &Stored) -> Vec<Key> {
        match object.kind {
            Kind::PersistentVolumeClaim => vec![Key::Claim(object.key.clone())],
            Kind::PersistentVolume => vec![Key::Volume(object.key.name.clone())],
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &Key) -> Result<Action, ApiError> {
        match key {
            Key::Claim(k) => self.sync_claim(k).await,
            Key::Volume(name) => self.sync_volume(name).await,
        }
    }
}

/// The pods (non-terminated) in `namespace` with these names.
fn live_pods(ctx: &Context, namespace: &str, names: &[String]) -> Vec<Arc<Stored>> {
    names
        .iter()
        .filter_map(|n| ctx.store.get_typed::<Pod>(namespace, n))
        .filter(|s| {
            let p: &Pod = s.typed();
            !pod::is_terminated(p) && p.metadata.deletion_timestamp.is_none()
        })
        .collect()
}

/// A full-object write of one object through the registry (status and spec together), at the
/// version it was read at.
async fn write(ctx: &Context, obj: AnyObject, rv: u64) -> Result<(), ApiError> {
    ctx.registry
        .write_together(vec![Write::Update(obj, rv)])
        .await
        .map(|_| ())
}

/// Sets a typed object's phase-like status through a closure and writes it if it changed.
async fn update<T: Typed + Clone + PartialEq>(
    ctx: &Context,
    stored: &Arc<Stored>,
    change: impl FnOnce(&mut T),
) -> Result<bool, ApiError> {
    let old: &T = stored.typed();
    let mut new = old.clone();
    change(&mut new);
    if &new == old {
        return Ok(false);
    }
    write(ctx, new.into_any(), stored.rv).await?;
    Ok(true)
}
