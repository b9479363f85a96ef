//! Volume sync: keep a volume's phase true to its claim, release it when the claim goes, and
//! apply its reclaim policy.

use std::sync::Arc;

use super::{Binder, COMPONENT, update};
use crate::resources::names::annotations::{BOUND_BY_CONTROLLER, PROVISIONED_BY};
use crate::resources::names::finalizers::PROVISIONED_VOLUME;
use crate::resources::pv::{Phase, ReclaimPolicy, set_phase};
use crate::resources::{PersistentVolume, PersistentVolumeClaim, pv};
use crate::runtime::Action;
use crate::runtime::Error;
use crate::store::Stored;

impl Binder {
    pub(super) async fn sync_volume(&self, name: &str) -> Result<Action, Error> {
        let Some(volume) = self.ctx.store.get_typed::<PersistentVolume>("", name) else {
            return Ok(Action::await_change());
        };
        // A volume being deleted still moves through its phases: a bound one must become
        // Released when its claim goes, so that its protection can be lifted.
        let v: &PersistentVolume = &volume.typed();
        let phase = pv::phase(v);
        let Some(claim_ref) = v.spec.as_ref().and_then(|s| s.claim_ref.clone()) else {
            // Unclaimed: Available. A Released or Failed volume whose claimRef an admin removed
            // is made Available again; this is the documented way to reuse a retained volume.
            if phase != Some(Phase::Available) {
                update::<PersistentVolume>(&self.ctx, &volume, |v| {
                    set_phase(v, Phase::Available, None)
                })
                .await?;
                if let Some(from @ (Phase::Released | Phase::Failed)) = phase {
                    tracing::info!(
                        volume = name,
                        from = from.as_str(),
                        "claimRef removed: volume is Available again"
                    );
                    self.ctx.recorder.normal(
                        COMPONENT,
                        &volume.object(),
                        "VolumeMadeAvailable",
                        format!("claimRef was removed from this {from} volume; it is Available for new claims"),
                    );
                }
            }
            return Ok(Action::await_change());
        };

        let ref_uid = claim_ref.uid.clone().unwrap_or_default();
        let claim = self.ctx.store.get_typed::<PersistentVolumeClaim>(
            claim_ref.namespace.as_deref().unwrap_or_default(),
            claim_ref.name.as_deref().unwrap_or_default(),
        );
        if ref_uid.is_empty() {
            // Pre-bound by name to a claim that may not exist yet: Available until it binds.
            if phase != Some(Phase::Available) {
                update::<PersistentVolume>(&self.ctx, &volume, |v| {
                    set_phase(v, Phase::Available, None)
                })
                .await?;
            }
            return Ok(Action::await_change());
        }
        let claim = claim.filter(|c| c.uid() == ref_uid);
        let Some(claim) = claim else {
            return self.release(&volume).await;
        };
        let c: &PersistentVolumeClaim = &claim.typed();
        let claim_volume = c
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .unwrap_or_default();
        if claim_volume == name {
            if phase != Some(Phase::Bound) {
                update::<PersistentVolume>(&self.ctx, &volume, |v| {
                    set_phase(v, Phase::Bound, None)
                })
                .await?;
            }
        } else if !claim_volume.is_empty() {
            // The claim is bound elsewhere; this volume's reference is stale.
            let ours = v
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(BOUND_BY_CONTROLLER));
            if ours {
                update::<PersistentVolume>(&self.ctx, &volume, |v| {
                    if let Some(s) = v.spec.as_mut() {
                        s.claim_ref = None;
                    }
                    if let Some(a) = v.metadata.annotations.as_mut() {
                        a.remove(BOUND_BY_CONTROLLER);
                    }
                    set_phase(v, Phase::Available, None);
                })
                .await?;
            } else {
                self.ctx.recorder.warning(
                    COMPONENT,
                    &volume.object(),
                    "VolumeMismatch",
                    format!("the volume is pre-bound to claim {} which is bound to volume {claim_volume}", claim.key),
                );
            }
        }
        // A claim that points here but has not bound yet is handled by its own sync.
        Ok(Action::await_change())
    }

    /// The claim is gone: the volume is Released, then its reclaim policy applies.
    async fn release(&self, volume: &Arc<Stored>) -> Result<Action, Error> {
        let v: &PersistentVolume = &volume.typed();
        let phase = pv::phase(v);
        if phase == Some(Phase::Failed) {
            return Ok(Action::await_change());
        }
        if phase != Some(Phase::Released) {
            update::<PersistentVolume>(&self.ctx, volume, |v| set_phase(v, Phase::Released, None))
                .await?;
            return Ok(Action::await_change());
        }
        match pv::reclaim_policy(v) {
            ReclaimPolicy::Delete => {
                let driver = v
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(PROVISIONED_BY).cloned())
                    .or_else(|| {
                        v.spec
                            .as_ref()
                            .and_then(|s| s.csi.as_ref())
                            .map(|c| c.driver.clone())
                    });
                let deletable = driver
                    .as_deref()
                    .is_some_and(|d| self.ctx.providers.get(d).is_some());
                // A volume made by a provisioner outside this server (a node agent's) carries
                // its finalizer: that provisioner deletes it, as Kubernetes leaves such
                // volumes to their external provisioner.
                let external = v
                    .metadata
                    .finalizers
                    .iter()
                    .flatten()
                    .any(|f| f == PROVISIONED_VOLUME);
                if !deletable && external {
                    self.ctx.recorder.normal(
                        COMPONENT,
                        &volume.object(),
                        "ExternalDeleting",
                        format!(
                            "waiting for the volume to be deleted by its provisioner {}",
                            driver.as_deref().unwrap_or_default()
                        ),
                    );
                } else if !deletable {
                    let message = format!(
                        "no provider can delete this volume{}: it stays until an administrator deletes it",
                        driver.map(|d| format!(" (driver {d})")).unwrap_or_default()
                    );
                    self.ctx.recorder.warning(
                        COMPONENT,
                        &volume.object(),
                        "VolumeFailedDelete",
                        message.clone(),
                    );
                    update::<PersistentVolume>(&self.ctx, volume, |v| {
                        set_phase(v, Phase::Failed, Some(message))
                    })
                    .await?;
                }
                // Otherwise the provisioner deletes the backing volume, then the object.
            }
            ReclaimPolicy::Recycle => {
                let message = "the Recycle reclaim policy is not supported: use Delete, or Retain and remove the claimRef to reuse the volume".to_string();
                self.ctx.recorder.warning(
                    COMPONENT,
                    &volume.object(),
                    "VolumeFailedRecycle",
                    message.clone(),
                );
                update::<PersistentVolume>(&self.ctx, volume, |v| {
                    set_phase(v, Phase::Failed, Some(message))
                })
                .await?;
            }
            ReclaimPolicy::Retain => {}
        }
        Ok(Action::await_change())
    }
}
