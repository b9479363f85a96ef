//! The snapshotter: a VolumeSnapshot becomes a provider snapshot of its claim's volume, and
//! deleting the VolumeSnapshot deletes the provider's snapshot.
//!
//! - The provider's snapshot is named `snapshot-<VolumeSnapshot uid>`, its idempotency key, so
//!   a retry or a restart finds the same snapshot instead of cutting a second one.
//! - Before the first provider call the snapshot's `status.driver` is recorded; the finalizer
//!   (added on create) then holds the object until the provider's snapshot is gone, even when
//!   the object is deleted before the provider answered. Kubernetes can leak snapshots there.
//! - A snapshot the provider is still cutting (EBS `pending`) is polled until `readyToUse`;
//!   the provisioner restores claims from ready snapshots only.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use stowage_provider::Provider;
use stowage_provider::quantity::Quantity;

use super::Context;
use crate::resources::Subresource;
use crate::resources::names::finalizers::SNAPSHOT_BOUND;
use crate::resources::volumesnapshot::{
    VolumeSnapshot, VolumeSnapshotError, VolumeSnapshotStatus, source_claim,
};
use crate::resources::{AnyObject, Kind, PersistentVolume, PersistentVolumeClaim, pvc};
use crate::runtime::{Action, Reconciler};
use crate::store::{ObjectKey, Stored, WatchEvent};

pub use crate::controllers::Error;

pub const COMPONENT: &str = "snapshot-controller";
/// How often a snapshot the provider is still cutting is looked at again.
const POLL: Duration = Duration::from_secs(1);

pub struct Snapshotter {
    ctx: Arc<Context>,
}

/// The provider's name for the snapshot of a VolumeSnapshot.
fn backend_name(snapshot: &Stored) -> String {
    format!("snapshot-{}", snapshot.uid())
}

/// The provider and volume handle behind a claim, once the claim is bound.
struct Source {
    driver: String,
    provider: Arc<dyn Provider>,
    handle: String,
}

/// Why a snapshot cannot be cut yet, or at all.
enum NoSource {
    /// The claim is missing or not bound yet: wait for it.
    Waiting(String),
    /// The claim's volume can never be snapshotted here.
    Unsupported(String),
}

impl Snapshotter {
    pub fn new(ctx: Arc<Context>) -> Self {
        Snapshotter { ctx }
    }

    fn source(&self, namespace: &str, claim_name: &str) -> Result<Source, NoSource> {
        let Some(claim) = self
            .ctx
            .store
            .get_typed::<PersistentVolumeClaim>(namespace, claim_name)
        else {
            return Err(NoSource::Waiting(format!(
                "persistentvolumeclaim \"{claim_name}\" not found"
            )));
        };
        let c: &PersistentVolumeClaim = &claim.typed();
        let volume_name = c.spec.as_ref().and_then(|s| s.volume_name.clone());
        let (Some(volume_name), true) = (volume_name, pvc::is_bound(c)) else {
            return Err(NoSource::Waiting(format!(
                "persistentvolumeclaim \"{claim_name}\" is not bound yet"
            )));
        };
        let Some(volume) = self
            .ctx
            .store
            .get_typed::<PersistentVolume>("", &volume_name)
        else {
            return Err(NoSource::Waiting(format!(
                "the volume of persistentvolumeclaim \"{claim_name}\" is not found"
            )));
        };
        let Some(csi) = volume
            .typed::<PersistentVolume>()
            .spec
            .as_ref()
            .and_then(|s| s.csi.clone())
        else {
            return Err(NoSource::Unsupported(format!(
                "volume {volume_name} has no provider here to snapshot it"
            )));
        };
        let Some(provider) = self.ctx.providers.get(&csi.driver).cloned() else {
            return Err(NoSource::Unsupported(format!(
                "provider {} is not enabled on this server",
                csi.driver
            )));
        };
        if !provider.capabilities().snapshots {
            return Err(NoSource::Unsupported(format!(
                "provider {} cannot take snapshots",
                csi.driver
            )));
        }
        Ok(Source {
            driver: csi.driver,
            provider,
            handle: csi.volume_handle,
        })
    }

    /// Writes `status` (and nothing else) if it changed; returns the version now stored.
    async fn write_status(
        &self,
        stored: &Arc<Stored>,
        status: VolumeSnapshotStatus,
    ) -> Result<Arc<Stored>, Error> {
        let s: &VolumeSnapshot = &stored.typed();
        if s.status.as_ref() == Some(&status) {
            return Ok(stored.clone());
        }
        let written = self
            .ctx
            .change::<VolumeSnapshot>(stored, Subresource::Status, |s| s.status = Some(status))
            .await?;
        Ok(written.unwrap_or_else(|| stored.clone()))
    }

    async fn create(&self, stored: &Arc<Stored>) -> Result<Action, Error> {
        let s: &VolumeSnapshot = &stored.typed();
        let mut status = s.status.clone().unwrap_or_default();
        let claim_name = source_claim(s).unwrap_or_default().to_string();
        let source = match self.source(&stored.key.namespace, &claim_name) {
            Ok(source) => source,
            Err(NoSource::Waiting(why)) => {
                self.ctx.recorder.normal(
                    COMPONENT,
                    &stored.object(),
                    "SnapshotPending",
                    why.clone(),
                );
                set_error(&mut status, why);
                self.write_status(stored, status).await?;
                // The claim binding triggers a look again; the resync covers the rest.
                return Ok(Action::await_change());
            }
            Err(NoSource::Unsupported(why)) => {
                self.ctx.recorder.warning(
                    COMPONENT,
                    &stored.object(),
                    "SnapshotCreationFailed",
                    why.clone(),
                );
                set_error(&mut status, why);
                self.write_status(stored, status).await?;
                return Ok(Action::await_change());
            }
        };
        if let Some(driver) = &status.driver
            && driver != &source.driver
        {
            // The claim was replaced by one on another provider after the snapshot was started.
            let why = format!(
                "the snapshot was started on provider {driver}, but claim \"{claim_name}\" is now on {}",
                source.driver
            );
            self.ctx
                .recorder
                .warning(COMPONENT, &stored.object(), "SnapshotCreationFailed", why);
            return Ok(Action::await_change());
        }
        // Record the provider first: from now on deletion knows where to look.
        let stored = if status.driver.is_none() {
            status.driver = Some(source.driver.clone());
            self.write_status(stored, status.clone()).await?
        } else {
            stored.clone()
        };
        let name = backend_name(&stored);
        let result = self
            .ctx
            .call_provider(
                &source.driver,
                "create_snapshot",
                source.provider.create_snapshot(&name, &source.handle),
            )
            .await;
        let taken = match result {
            Ok(taken) => taken,
            Err(e) => {
                self.ctx.recorder.warning(
                    COMPONENT,
                    &stored.object(),
                    "SnapshotCreationFailed",
                    format!("snapshotting claim \"{claim_name}\": {e}"),
                );
                set_error(&mut status, e.to_string());
                self.write_status(&stored, status).await?;
                return Err(Error::Provider(e));
            }
        };
        let first = status.snapshot_handle.is_none();
        let now_ready = taken.ready && status.ready_to_use != Some(true);
        status.snapshot_handle = Some(taken.id.clone());
        status.ready_to_use = Some(taken.ready);
        status.restore_size = Some(K8sQuantity(
            Quantity::from_units(taken.size_bytes).canonical(),
        ));
        status
            .creation_time
            .get_or_insert_with(|| Time(jiff::Timestamp::now()));
        status.error = None;
        self.write_status(&stored, status).await?;
        if first {
            self.ctx.recorder.normal(
                COMPONENT,
                &stored.object(),
                "SnapshotCreated",
                format!(
                    "snapshot {} of claim \"{claim_name}\" created by {}",
                    taken.id, source.driver
                ),
            );
        }
        if now_ready {
            self.ctx.recorder.normal(
                COMPONENT,
                &stored.object(),
                "SnapshotReady",
                format!("snapshot {} is ready to use", taken.id),
            );
            Ok(Action::await_change())
        } else {
            Ok(Action::requeue(POLL))
        }
    }

    async fn delete(&self, stored: &Arc<Stored>) -> Result<Action, Error> {
        let s: &VolumeSnapshot = &stored.typed();
        let status = s.status.clone().unwrap_or_default();
        if let Some(driver) = &status.driver {
            let Some(provider) = self.ctx.providers.get(driver).cloned() else {
                self.ctx.recorder.warning(
                    COMPONENT,
                    &stored.object(),
                    "SnapshotDeleteFailed",
                    format!("provider {driver} is not enabled on this server; the snapshot stays until it is"),
                );
                return Ok(Action::requeue(Duration::from_secs(60)));
            };
            let id = match &status.snapshot_handle {
                Some(id) => Some(id.clone()),
                // Deleted while the first create call was in flight: the create is idempotent
                // by name, so asking again finds the snapshot (if it was made) to delete it.
                None => match self.source(&stored.key.namespace, source_claim(s).unwrap_or("")) {
                    Ok(source) if source.driver == *driver => {
                        let name = backend_name(stored);
                        self.ctx
                            .call_provider(
                                driver,
                                "create_snapshot",
                                provider.create_snapshot(&name, &source.handle),
                            )
                            .await
                            .ok()
                            .map(|t| t.id)
                    }
                    _ => None,
                },
            };
            if let Some(id) = id
                && let Err(e) = self
                    .ctx
                    .call_provider(driver, "delete_snapshot", provider.delete_snapshot(&id))
                    .await
            {
                self.ctx.recorder.warning(
                    COMPONENT,
                    &stored.object(),
                    "SnapshotDeleteFailed",
                    format!("deleting snapshot {id} failed (will retry): {e}"),
                );
                return Err(Error::Provider(e));
            }
        }
        self.ctx
            .drop_finalizer::<VolumeSnapshot>(stored, SNAPSHOT_BOUND)
            .await?;
        Ok(Action::await_change())
    }
}

/// Records the last failure. The same failure again keeps its first time, so that retrying does
/// not rewrite the object (and trigger itself) forever.
fn set_error(status: &mut VolumeSnapshotStatus, message: String) {
    // The snapshot's tenant reads this: no account identifiers from a provider's message.
    let message = stowage_provider::redact::account_identifiers(&message);
    if status.error.as_ref().and_then(|e| e.message.as_ref()) != Some(&message) {
        status.error = Some(VolumeSnapshotError {
            message: Some(message),
            time: Some(Time(jiff::Timestamp::now())),
        });
    }
}

fn has_finalizer(s: &VolumeSnapshot) -> bool {
    s.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == SNAPSHOT_BOUND)
}

#[async_trait::async_trait]
impl Reconciler for Snapshotter {
    type Key = ObjectKey;

    fn name(&self) -> &'static str {
        "snapshotter"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::VolumeSnapshot, Kind::PersistentVolumeClaim]
    }

    fn keys_for(&self, event: &WatchEvent) -> Vec<ObjectKey> {
        self.keys_for_object(&event.object)
    }

    fn keys_for_object(&self, object: &Stored) -> Vec<ObjectKey> {
        match &object.object() {
            AnyObject::VolumeSnapshot(s) => {
                let deleting = s.metadata.deletion_timestamp.is_some() && has_finalizer(s);
                let unfinished = s.metadata.deletion_timestamp.is_none()
                    && !crate::resources::volumesnapshot::is_ready(s);
                if deleting || unfinished {
                    vec![object.key.clone()]
                } else {
                    Vec::new()
                }
            }
            // A claim becoming bound lets the snapshots waiting for it go ahead.
            AnyObject::PersistentVolumeClaim(c) if pvc::is_bound(c) => {
                let (snapshots, _) = self
                    .ctx
                    .store
                    .list(Kind::VolumeSnapshot, Some(&object.key.namespace));
                snapshots
                    .iter()
                    .filter(|s| {
                        let s: &VolumeSnapshot = &s.typed();
                        source_claim(s) == Some(object.key.name.as_str())
                            && !crate::resources::volumesnapshot::is_ready(s)
                    })
                    .map(|s| s.key.clone())
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, Error> {
        let Some(stored) = self
            .ctx
            .store
            .get_typed::<VolumeSnapshot>(&key.namespace, &key.name)
        else {
            return Ok(Action::await_change());
        };
        let s: &VolumeSnapshot = &stored.typed();
        if s.metadata.deletion_timestamp.is_some() {
            if has_finalizer(s) {
                return self.delete(&stored).await;
            }
            return Ok(Action::await_change());
        }
        if crate::resources::volumesnapshot::is_ready(s) {
            return Ok(Action::await_change());
        }
        self.create(&stored).await
    }
}
