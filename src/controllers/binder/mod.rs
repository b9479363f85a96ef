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

use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use parking_lot::Mutex;

use super::{Context, binding};
use crate::error::ApiError;
use crate::registry::Write;
use crate::resources::{
    AnyObject, Kind, PersistentVolume, PersistentVolumeClaim, Pod, StorageClass, pod,
};
use crate::runtime::{Action, Reconciler};
use crate::store::{EventType, ObjectKey, Stored, WatchEvent};

mod claim;
pub mod index;
#[cfg(test)]
mod properties;
mod volume;

use crate::resources::KindStrategy;
use crate::resources::Subresource;
use crate::runtime::Error;
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
        let volume_named_claim = v
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .is_some_and(|r| r.uid.is_some());
        let chosen = binding::ChosenBy {
            volume: !volume_named_claim,
            claim: !claim_named_volume,
        };
        binding::bind(&mut c, &mut v, chosen, Time(self.ctx.clock.now()));
        self.ctx
            .registry
            .write(vec![
                Write::update(v, volume.rv, Subresource::All),
                Write::update(c, claim.rv, Subresource::All),
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
        match &*object.decoded() {
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
        match &*obj.decoded() {
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
                let mut keys = vec![Key::Volume(obj.key.name.to_string())];
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
            Kind::PersistentVolume => {
                let mut keys = vec![Key::Volume(object.key.name.to_string())];
                // A volume pre-bound to a claim (made for it outside this server, or by an
                // admin) wakes that claim, whose sync binds it.
                if let crate::resources::AnyObject::PersistentVolume(v) = &*object.decoded()
                    && let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref())
                    && v.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound")
                {
                    keys.push(Key::Claim(ObjectKey::new(
                        r.namespace.clone().unwrap_or_default(),
                        r.name.clone().unwrap_or_default(),
                    )));
                }
                keys
            }
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &Key) -> Result<Action, Error> {
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
            let p: &Pod = &s.typed();
            !pod::is_terminated(p) && p.metadata.deletion_timestamp.is_none()
        })
        .collect()
}

/// Changes one object (spec, status and metadata alike, as the binder owns them) through the
/// registry at the version it was read at; whether anything changed.
async fn update<T: KindStrategy>(
    ctx: &Context,
    stored: &Arc<Stored>,
    change: impl FnOnce(&mut T),
) -> Result<bool, ApiError> {
    Ok(ctx
        .change::<T>(stored, Subresource::All, change)
        .await?
        .is_some())
}
