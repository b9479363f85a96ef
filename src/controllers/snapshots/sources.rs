//! Claims that snapshots or clones are being copied from stay while the copy reads them, as
//! Kubernetes keeps them (`snapshot.storage.kubernetes.io/pvc-as-source-protection`,
//! `provisioner.storage.kubernetes.io/cloning-protection`). The finalizers are put on by the
//! snapshot binder and the provisioner before a copy starts; this controller takes them off.
//!
//! Kubernetes holds such a claim until every snapshot of it is done, so one snapshot that never
//! completes keeps the claim Terminating for ever. Here a claim being deleted waits only for
//! copies that are progressing, and for at most [`SOURCE_PROTECTION_LIMIT`] after its deletion;
//! the snapshots cut short then fail and say why.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{COMPONENT, Error, SOURCE_PROTECTION_LIMIT};
use crate::controllers::Context;
use crate::controllers::provisioner::restore::clone_source;
use crate::resources::names::finalizers::{PVC_AS_SNAPSHOT_SOURCE, PVC_CLONE_SOURCE};
use crate::resources::volumesnapshot::{self, source_claim};
use crate::resources::{AnyObject, Kind, PersistentVolumeClaim, VolumeSnapshot, pvc};
use crate::runtime::{Action, Reconciler};
use crate::store::{ObjectKey, Stored, WatchEvent};

pub struct SourceProtection {
    ctx: Arc<Context>,
}

fn has(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers.iter().flatten().any(|f| f == finalizer)
}

impl SourceProtection {
    pub fn new(ctx: Arc<Context>) -> Self {
        SourceProtection { ctx }
    }

    /// Snapshots of the claim still being taken. A failing one (its status has an error) does
    /// not count when the claim is being deleted: it may never finish.
    fn snapshots_in_progress(&self, claim: &Stored, deleting: bool) -> Vec<Arc<Stored>> {
        let (snapshots, _) = self
            .ctx
            .store
            .list(Kind::VolumeSnapshot, Some(&claim.key.namespace));
        snapshots
            .into_iter()
            .filter(|s| {
                let s: &VolumeSnapshot = &s.typed();
                source_claim(s) == Some(claim.key.name.as_str())
                    && s.metadata.deletion_timestamp.is_none()
                    && !volumesnapshot::is_ready(s)
                    && !(deleting && s.status.as_ref().is_some_and(|st| st.error.is_some()))
            })
            .collect()
    }

    /// Claims being cloned from this one, whose provisioning has started.
    fn clones_in_progress(&self, claim: &Stored) -> usize {
        let (claims, _) = self
            .ctx
            .store
            .list(Kind::PersistentVolumeClaim, Some(&claim.key.namespace));
        claims
            .iter()
            .filter(|c| {
                let c: &PersistentVolumeClaim = &c.typed();
                c.metadata.deletion_timestamp.is_none()
                    && !pvc::is_bound(c)
                    && clone_source(c).as_deref() == Some(claim.key.name.as_str())
                    && crate::controllers::provisioner::is_copying(c)
            })
            .count()
    }
}

#[async_trait::async_trait]
impl Reconciler for SourceProtection {
    type Key = ObjectKey;

    fn name(&self) -> &'static str {
        "snapshot-source-protection"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::PersistentVolumeClaim, Kind::VolumeSnapshot]
    }

    fn keys_for(&self, event: &WatchEvent) -> Vec<ObjectKey> {
        self.keys_for_object(&event.object)
    }

    fn keys_for_object(&self, object: &Stored) -> Vec<ObjectKey> {
        match &*object.decoded() {
            AnyObject::PersistentVolumeClaim(c) => {
                let mut keys = Vec::new();
                if has(&c.metadata, PVC_AS_SNAPSHOT_SOURCE) || has(&c.metadata, PVC_CLONE_SOURCE) {
                    keys.push(object.key.clone());
                }
                if let Some(source) = clone_source(c) {
                    keys.push(ObjectKey::new(object.key.namespace.as_str(), &source));
                }
                keys
            }
            AnyObject::VolumeSnapshot(s) => source_claim(s)
                .map(|claim| vec![ObjectKey::new(object.key.namespace.as_str(), claim)])
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, Error> {
        let Some(stored) = self
            .ctx
            .store
            .get_typed::<PersistentVolumeClaim>(&key.namespace, &key.name)
        else {
            return Ok(Action::await_change());
        };
        let c: &PersistentVolumeClaim = &stored.typed();
        let (snapshot_guard, clone_guard) = (
            has(&c.metadata, PVC_AS_SNAPSHOT_SOURCE),
            has(&c.metadata, PVC_CLONE_SOURCE),
        );
        if !snapshot_guard && !clone_guard {
            return Ok(Action::await_change());
        }
        let deleted_at = c.metadata.deletion_timestamp.as_ref().map(|t| t.0);
        // Past the limit, nothing holds the claim any more.
        let left = deleted_at.map(|at| {
            let waited = self.ctx.clock.now().duration_since(at);
            jiff::SignedDuration::try_from(SOURCE_PROTECTION_LIMIT)
                .ok()
                .and_then(|limit| Duration::try_from(limit - waited).ok())
                .unwrap_or(Duration::ZERO)
        });
        let expired = left.is_some_and(|l| l.is_zero());
        let snapshots = if expired {
            Vec::new()
        } else {
            self.snapshots_in_progress(&stored, deleted_at.is_some())
        };
        let clones = if expired {
            0
        } else {
            self.clones_in_progress(&stored)
        };
        if expired {
            for s in self.snapshots_in_progress(&stored, false) {
                self.ctx.recorder.warning(
                    COMPONENT,
                    &s.object(),
                    "SourceClaimDeleted",
                    format!(
                        "persistentvolumeclaim \"{}\" was deleted {}s ago and no longer waits for this snapshot; it may fail",
                        key.name,
                        SOURCE_PROTECTION_LIMIT.as_secs()
                    ),
                );
            }
        }
        let drop_snapshot_guard = snapshot_guard && snapshots.is_empty();
        let drop_clone_guard = clone_guard && clones == 0;
        if drop_snapshot_guard || drop_clone_guard {
            self.ctx
                .change::<PersistentVolumeClaim>(
                    &stored,
                    crate::resources::Subresource::Main,
                    |c| {
                        if let Some(f) = c.metadata.finalizers.as_mut() {
                            f.retain(|x| {
                                !(drop_snapshot_guard && x == PVC_AS_SNAPSHOT_SOURCE
                                    || drop_clone_guard && x == PVC_CLONE_SOURCE)
                            });
                        }
                    },
                )
                .await?;
            return Ok(Action::await_change());
        }
        // Still held: a deleted claim is looked at again when its time is up.
        Ok(match left {
            Some(left) => Action::requeue(left.max(Duration::from_millis(100))),
            None => Action::await_change(),
        })
    }
}
