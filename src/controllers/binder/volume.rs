//! Volume sync: keep a volume's phase true to its claim, release it when the claim goes, and
//! apply its reclaim policy.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Binder, COMPONENT, update};
use crate::controllers::annotations::{BOUND_BY_CONTROLLER, PROVISIONED_BY};
use crate::error::ApiError;
use crate::resources::{PersistentVolume, PersistentVolumeClaim, pv};
use crate::runtime::Action;
use crate::store::Stored;

fn set_phase(v: &mut PersistentVolume, phase: &str, message: Option<String>) {
    let status = v.status.get_or_insert_with(Default::default);
    if status.phase.as_deref() != Some(phase) {
        status.phase = Some(phase.to_string());
        status.last_phase_transition_time = Some(Time(jiff::Timestamp::now()));
    }
    status.message = message;
}

impl Binder {
    pub(super) async fn sync_volume(&self, name: &str) -> Result<Action, ApiError> {
        let Some(volume) = self.ctx.store.get_typed::<PersistentVolume>("", name) else {
            return Ok(Action::await_change());
        };
        // A volume being deleted still moves through its phases: a bound one must become
        // Released when its claim goes, so that its protection can be lifted.
        let v: &PersistentVolume = volume.typed();
        let phase = pv::phase(v).to_string();
        let Some(claim_ref) = v.spec.as_ref().and_then(|s| s.claim_ref.clone()) else {
            // Unclaimed: Available. A Released or Failed volume whose claimRef an admin removed
            // is made Available again; this is the documented way to reuse a retained volume.
            if phase != "Available" {
                update::<PersistentVolume>(&self.ctx, &volume, |v| set_phase(v, "Available", None))
                    .await?;
                if phase == "Released" || phase == "Failed" {
                    tracing::info!(
                        volume = name,
                        from = phase,
                        "claimRef removed: volume is Available again"
                    );
                    self.ctx.recorder.normal(
                        COMPONENT,
                        &volume.object,
                        "VolumeMadeAvailable",
                        format!("claimRef was removed from this {phase} volume; it is Available for new claims"),
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
            if phase != "Available" {
                update::<PersistentVolume>(&self.ctx, &volume, |v| set_phase(v, "Available", None))
                    .await?;
            }
            return Ok(Action::await_change());
        }
        let claim = claim.filter(|c| c.uid() == ref_uid);
        let Some(claim) = claim else {
            return self.release(&volume).await;
        };
        let c: &PersistentVolumeClaim = claim.typed();
        let claim_volume = c
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .unwrap_or_default();
        if claim_volume == name {
            if phase != "Bound" {
                update::<PersistentVolume>(&self.ctx, &volume, |v| set_phase(v, "Bound", None))
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
                    set_phase(v, "Available", None);
                })
                .await?;
            } else {
                self.ctx.recorder.warning(
                    COMPONENT,
                    &volume.object,
                    "VolumeMismatch",
                    format!("the volume is pre-bound to claim {} which is bound to volume {claim_volume}", claim.key),
                );
            }
        }
        // A claim that points here but has not bound yet is handled by its own sync.
        Ok(Action::await_change())
    }

    /// The claim is gone: the volume is Released, then its reclaim policy applies.
    async fn release(&self, volume: &Arc<Stored>) -> Result<Action, ApiError> {
        let v: &PersistentVolume = volume.typed();
        let phase = pv::phase(v);
        let policy = v
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.clone())
            .unwrap_or_else(|| "Retain".into());
        if phase == "Failed" {
            return Ok(Action::await_change());
        }
        if phase != "Released" {
            update::<PersistentVolume>(&self.ctx, volume, |v| set_phase(v, "Released", None))
                .await?;
            return Ok(Action::await_change());
        }
        match policy.as_str() {
            "Delete" => {
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
                if !deletable {
                    let message = format!(
                        "no provider can delete this volume{}: it stays until an administrator deletes it",
                        driver.map(|d| format!(" (driver {d})")).unwrap_or_default()
                    );
                    self.ctx.recorder.warning(
                        COMPONENT,
                        &volume.object,
                        "VolumeFailedDelete",
                        message.clone(),
                    );
                    update::<PersistentVolume>(&self.ctx, volume, |v| {
                        set_phase(v, "Failed", Some(message))
                    })
                    .await?;
                }
                // Otherwise the provisioner deletes the backing volume, then the object.
            }
            "Recycle" => {
                let message = "the Recycle reclaim policy is not supported: use Delete, or Retain and remove the claimRef to reuse the volume".to_string();
                self.ctx.recorder.warning(
                    COMPONENT,
                    &volume.object,
                    "VolumeFailedRecycle",
                    message.clone(),
                );
                update::<PersistentVolume>(&self.ctx, volume, |v| {
                    set_phase(v, "Failed", Some(message))
                })
                .await?;
            }
            _ => {}
        }
        Ok(Action::await_change())
    }
}
