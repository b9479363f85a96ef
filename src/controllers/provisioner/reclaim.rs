//! Reclaim: deleting the backing storage of released volumes whose policy is Delete, and a
//! periodic sweep for backing volumes no object refers to.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use stowage_provider::DeleteVolumeRequest;
use tokio_util::sync::CancellationToken;

use super::{COMPONENT, Error, Provisioner, annotation, provisioned_by};
use crate::resources::names::annotations::PROVISIONED_BY;
use crate::resources::names::finalizers::PROVISIONED_VOLUME;
use crate::resources::{Kind, PersistentVolume, pv};
use crate::runtime::Action;
use crate::store::ObjectKey;

pub(super) fn needs_backing_delete(v: &PersistentVolume) -> bool {
    let policy = pv::reclaim_policy(v);
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
    let released = pv::phase(v) == Some(pv::Phase::Released)
        && policy == pv::ReclaimPolicy::Delete
        && (has_finalizer || !provisioned_here);
    let deleting_ours = v.metadata.deletion_timestamp.is_some()
        && has_finalizer
        && pv::phase(v) != Some(pv::Phase::Bound);
    released || deleting_ours
}

impl Provisioner {
    pub(super) async fn reclaim(&self, name: &str) -> Result<Action, Error> {
        let Some(stored) = self.ctx.store.get_typed::<PersistentVolume>("", name) else {
            return Ok(Action::await_change());
        };
        let v: &PersistentVolume = &stored.typed();
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
            .ctx
            .call_provider(
                provider.name(),
                "delete_volume",
                provider.delete_volume(&req),
            )
            .await
        {
            self.ctx.recorder.warning(
                COMPONENT,
                &stored.object(),
                "VolumeFailedDelete",
                format!("deleting the backing volume failed (will retry): {e}"),
            );
            return Err(Error::Provider(e));
        }
        // The backing volume is gone: drop our finalizer, then the object.
        self.ctx
            .drop_finalizer::<PersistentVolume>(&stored, PROVISIONED_VOLUME)
            .await?;
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
        let mut deleted = 0;
        for provider in self.ctx.providers.iter() {
            if !provider.capabilities().dynamic_provisioning {
                continue;
            }
            let Ok(listed) = self
                .ctx
                .call_provider(provider.name(), "list_volumes", provider.list_volumes())
                .await
            else {
                continue;
            };
            // The objects are read after the provider's list: a claim always exists before
            // anything is made for it, so whatever the list holds for a live claim (a volume,
            // a clone in the making) has its claim in what is read now.
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
            let claim_uids: HashSet<String> = claims.iter().map(|c| c.uid()).collect();
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
                    .ctx
                    .call_provider(
                        provider.name(),
                        "delete_volume",
                        provider.delete_volume(&req),
                    )
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
