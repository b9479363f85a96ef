//! Protection: `kubernetes.io/pvc-protection` keeps a claim that a non-terminated pod uses from
//! being removed; `kubernetes.io/pv-protection` keeps a bound volume from being removed;
//! `kubernetes.io/vac-protection` keeps a VolumeAttributesClass that a claim or a volume names
//! (as its class, its current one, or the target of a modification) from being removed. The
//! finalizers are added on create (admission); this controller lifts them once it is safe.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::Context;
use crate::resources::names::finalizers::{PV_PROTECTION, PVC_PROTECTION};
use crate::resources::{
    AnyObject, Kind, PersistentVolume, PersistentVolumeClaim, Pod, Subresource,
    VolumeAttributesClass, pod, pv, volumeattributesclass,
};
use crate::runtime::Error;
use crate::runtime::{Action, FewSet, Reconciler};
use crate::store::{ObjectKey, Stored, WatchEvent};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    Claim(ObjectKey),
    Volume(String),
    AttributesClass(String),
}

/// While a class that is still named waits to go, how often its users are looked at again
/// (besides the deletions of claims and volumes, which bring it back at once).
const ATTRIBUTES_CLASS_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// The fields of claims and volumes that name a VolumeAttributesClass.
const ATTRIBUTES_CLASS_FIELDS: [&str; 3] = [
    "volumeAttributesClassName",
    "currentVolumeAttributesClassName",
    "targetVolumeAttributesClassName",
];

/// Every VolumeAttributesClass a claim or a volume names.
fn attributes_classes_named(object: &AnyObject) -> Vec<String> {
    let names = match object {
        AnyObject::PersistentVolumeClaim(c) => {
            let status = c.status.as_ref();
            vec![
                c.spec
                    .as_ref()
                    .and_then(|s| s.volume_attributes_class_name.clone()),
                status.and_then(|s| s.current_volume_attributes_class_name.clone()),
                status
                    .and_then(|s| s.modify_volume_status.as_ref())
                    .and_then(|m| m.target_volume_attributes_class_name.clone()),
            ]
        }
        AnyObject::PersistentVolume(v) => {
            vec![
                v.spec
                    .as_ref()
                    .and_then(|s| s.volume_attributes_class_name.clone()),
            ]
        }
        _ => Vec::new(),
    };
    names
        .into_iter()
        .flatten()
        .filter(|n| !n.is_empty())
        .collect()
}

#[derive(Default)]
struct PodIndex {
    pods_of_claim: HashMap<ObjectKey, FewSet<String>>,
    claims_of_pod: HashMap<ObjectKey, Vec<ObjectKey>>,
}

pub struct Protection {
    ctx: Arc<Context>,
    pods: Mutex<PodIndex>,
}

impl Protection {
    pub fn new(ctx: Arc<Context>) -> Self {
        Protection {
            ctx,
            pods: Mutex::new(PodIndex::default()),
        }
    }

    /// Whether a claim or a volume names the class (the JSON prefilter spares decoding those
    /// that cannot).
    fn attributes_class_in_use(&self, name: &str) -> bool {
        [Kind::PersistentVolumeClaim, Kind::PersistentVolume]
            .into_iter()
            .any(|kind| {
                self.ctx.store.list(kind, None).0.iter().any(|s| {
                    ATTRIBUTES_CLASS_FIELDS.iter().any(|f| s.may_have(f, name))
                        && attributes_classes_named(&s.object())
                            .iter()
                            .any(|n| n == name)
                })
            })
    }

    fn in_use(&self, claim: &ObjectKey) -> bool {
        let names: Vec<String> = self
            .pods
            .lock()
            .pods_of_claim
            .get(claim)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        names.iter().any(|n| {
            self.ctx
                .store
                .get_typed::<Pod>(&claim.namespace, n)
                .is_some_and(|s| !pod::is_terminated(&s.typed::<Pod>()))
        })
    }
}

/// Being deleted, and held by `finalizer`.
fn has(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, finalizer: &str) -> bool {
    meta.deletion_timestamp.is_some() && carries(meta, finalizer)
}

fn carries(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    finalizer: &str,
) -> bool {
    meta.finalizers.iter().flatten().any(|f| f == finalizer)
}

#[async_trait::async_trait]
impl Reconciler for Protection {
    type Key = Key;

    fn name(&self) -> &'static str {
        "protection"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[
            Kind::PersistentVolumeClaim,
            Kind::PersistentVolume,
            Kind::Pod,
            Kind::VolumeAttributesClass,
        ]
    }

    fn reset(&self) {
        *self.pods.lock() = PodIndex::default();
    }

    fn observe(&self, object: &Arc<Stored>, deleted: bool) {
        let AnyObject::Pod(p) = &*object.decoded() else {
            return;
        };
        let mut idx = self.pods.lock();
        for c in idx.claims_of_pod.remove(&object.key).unwrap_or_default() {
            if let Some(s) = idx.pods_of_claim.get_mut(&c) {
                s.remove(object.key.name.as_str());
                // A claim no pod uses any more leaves the index, as the binder's does.
                if s.is_empty() {
                    idx.pods_of_claim.remove(&c);
                }
            }
        }
        if deleted {
            return;
        }
        let claims: Vec<ObjectKey> = pod::claim_names(p)
            .map(|c| ObjectKey::new(object.key.namespace.clone(), c))
            .collect();
        for c in &claims {
            idx.pods_of_claim
                .entry(c.clone())
                .or_default()
                .insert(object.key.name.to_string());
        }
        idx.claims_of_pod.insert(object.key.clone(), claims);
    }

    fn keys_for(&self, event: &WatchEvent) -> Vec<Key> {
        match &*event.object.decoded() {
            // A pod that finished or went away may free its claims.
            AnyObject::Pod(p) => pod::claim_names(p)
                .map(|c| Key::Claim(ObjectKey::new(event.object.key.namespace.clone(), c)))
                .collect(),
            // A claim or a volume that goes may free the attributes classes it named.
            o @ (AnyObject::PersistentVolumeClaim(_) | AnyObject::PersistentVolume(_))
                if event.type_ == crate::store::EventType::Deleted =>
            {
                let mut keys = self.keys_for_object(&event.object);
                keys.extend(
                    attributes_classes_named(o)
                        .into_iter()
                        .map(Key::AttributesClass),
                );
                keys
            }
            _ => self.keys_for_object(&event.object),
        }
    }

    fn keys_for_object(&self, object: &Stored) -> Vec<Key> {
        match &*object.decoded() {
            AnyObject::PersistentVolumeClaim(c) if has(&c.metadata, PVC_PROTECTION) => {
                vec![Key::Claim(object.key.clone())]
            }
            AnyObject::PersistentVolume(v) if has(&v.metadata, PV_PROTECTION) => {
                vec![Key::Volume(object.key.name.to_string())]
            }
            // Being deleted with the finalizer, or without it at all (a replace that dropped
            // it): both are this controller's to settle.
            AnyObject::VolumeAttributesClass(c)
                if has(&c.metadata, volumeattributesclass::PROTECTION_FINALIZER)
                    || !carries(&c.metadata, volumeattributesclass::PROTECTION_FINALIZER) =>
            {
                vec![Key::AttributesClass(object.key.name.to_string())]
            }
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &Key) -> Result<Action, Error> {
        match key {
            Key::AttributesClass(name) => {
                let Some(stored) = self.ctx.store.get_typed::<VolumeAttributesClass>("", name)
                else {
                    return Ok(Action::await_change());
                };
                let c: VolumeAttributesClass = stored.typed();
                let finalizer = volumeattributesclass::PROTECTION_FINALIZER;
                if c.metadata.deletion_timestamp.is_none() {
                    // Put back if it was taken off, as Kubernetes' vac-protection controller does.
                    if !carries(&c.metadata, finalizer) {
                        self.ctx
                            .change::<VolumeAttributesClass>(&stored, Subresource::Main, |c| {
                                c.metadata
                                    .finalizers
                                    .get_or_insert_with(Vec::new)
                                    .push(finalizer.to_string());
                            })
                            .await?;
                    }
                    return Ok(Action::await_change());
                }
                if !has(&c.metadata, finalizer) {
                    return Ok(Action::await_change());
                }
                if self.attributes_class_in_use(name) {
                    return Ok(Action::requeue(ATTRIBUTES_CLASS_RECHECK));
                }
                self.ctx
                    .drop_finalizer::<VolumeAttributesClass>(
                        &stored,
                        volumeattributesclass::PROTECTION_FINALIZER,
                    )
                    .await?;
            }
            Key::Claim(k) => {
                let Some(stored) = self
                    .ctx
                    .store
                    .get_typed::<PersistentVolumeClaim>(&k.namespace, &k.name)
                else {
                    return Ok(Action::await_change());
                };
                let c: &PersistentVolumeClaim = &stored.typed();
                if has(&c.metadata, PVC_PROTECTION) && !self.in_use(k) {
                    self.ctx
                        .drop_finalizer::<PersistentVolumeClaim>(&stored, PVC_PROTECTION)
                        .await?;
                }
            }
            Key::Volume(name) => {
                let Some(stored) = self.ctx.store.get_typed::<PersistentVolume>("", name) else {
                    return Ok(Action::await_change());
                };
                let v: &PersistentVolume = &stored.typed();
                if has(&v.metadata, PV_PROTECTION) && pv::phase(v) != Some(pv::Phase::Bound) {
                    self.ctx
                        .drop_finalizer::<PersistentVolume>(&stored, PV_PROTECTION)
                        .await?;
                }
            }
        }
        Ok(Action::await_change())
    }
}
