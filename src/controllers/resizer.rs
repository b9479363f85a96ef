//! The resizer: a bound claim whose request grew past its capacity gets its volume expanded
//! through the provider; the volume's capacity and the claim's `status.capacity` follow, in one
//! write. Claims never shrink (the API refuses it), and only classes with
//! `allowVolumeExpansion` may grow (admission refuses the rest).
//!
//! A provider with `node_expansion` (a block device) grows the device only: the claim then
//! carries `FileSystemResizePending` and keeps its old capacity until the node agent that
//! mounts it has grown the filesystem, as Kubernetes' kubelet finishes a resize.
//!
//! Recovery from a failed expansion, as Kubernetes' RecoverVolumeExpansionFailure (GA in
//! 1.34): `status.allocatedResources` holds the size being worked towards, and
//! `status.allocatedResourceStatuses` where that stands: `ControllerResizeInProgress` (also
//! while a temporary failure is retried with backoff), `ControllerResizeInfeasible` (the
//! provider refused: no room, a limit; tried again only every 5 minutes), `NodeResizePending`
//! (the node agent grows the filesystem, and clears it). After a failure the user may lower
//! the request again, down to just above the current capacity (the API refuses less); the next
//! attempt works towards the new size and `allocatedResources` follows it. Quota counts the
//! larger of the request and `allocatedResources`, so lowering a request cannot be used to
//! slip past a quota while an expansion is under way.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolumeClaimCondition;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use stowage_provider::quantity::Quantity;
use stowage_provider::{ErrorKind, ExpandRequest};

use super::Context;
use super::retry::InfeasibleRetry;
use crate::registry::Write;
use crate::resources::Subresource;
use crate::resources::{AnyObject, Kind, PersistentVolume, PersistentVolumeClaim, pvc};
use crate::runtime::{Action, Reconciler};
use crate::store::{ObjectKey, Stored, WatchEvent};

pub use crate::controllers::Error;

pub const COMPONENT: &str = "volume-expand-controller";

/// How often an infeasible expansion is tried again, in case what made it so has changed
/// (room freed, a limit raised).
const INFEASIBLE_RETRY: Duration = Duration::from_secs(300);

pub struct Resizer {
    ctx: Arc<Context>,
    /// When each claim's expansion was last found infeasible, and to what size: the status
    /// write that says so brings the claim straight back, and that must not be a retry.
    infeasible: InfeasibleRetry<i64>,
}

impl Resizer {
    pub fn new(ctx: Arc<Context>) -> Self {
        Resizer {
            ctx,
            infeasible: InfeasibleRetry::new(INFEASIBLE_RETRY),
        }
    }

    /// How long until an infeasible expansion to `wanted` may be tried again (`None`: now).
    fn infeasible_wait(
        &self,
        key: &ObjectKey,
        c: &PersistentVolumeClaim,
        wanted: i64,
    ) -> Option<Duration> {
        if pvc::resize_status(c) != Some(pvc::ResizeStatus::ControllerResizeInfeasible) {
            return None;
        }
        self.infeasible.wait(key, &wanted, self.ctx.clock.now())
    }

    /// Records where the expansion to `wanted` stands on the claim (`None`: done).
    async fn set_allocation(
        &self,
        claim: &Arc<Stored>,
        wanted: i64,
        status: Option<pvc::ResizeStatus>,
    ) -> Result<Option<Arc<Stored>>, crate::error::ApiError> {
        self.ctx
            .change::<PersistentVolumeClaim>(claim, Subresource::Status, |c| {
                set_allocation(c, wanted, status);
            })
            .await
    }
}

/// Writes `allocatedResources` and `allocatedResourceStatuses` for storage.
fn set_allocation(c: &mut PersistentVolumeClaim, wanted: i64, status: Option<pvc::ResizeStatus>) {
    let s = c.status.get_or_insert_with(Default::default);
    s.allocated_resources
        .get_or_insert_with(Default::default)
        .insert(
            "storage".into(),
            K8sQuantity(Quantity::from_units(wanted).canonical()),
        );
    let statuses = s
        .allocated_resource_statuses
        .get_or_insert_with(Default::default);
    match status {
        Some(st) => {
            statuses.insert("storage".into(), st.as_str().into());
        }
        None => {
            statuses.remove("storage");
        }
    }
    if statuses.is_empty() {
        s.allocated_resource_statuses = None;
    }
}

/// A provider's refusal that no retry mends soon: the expansion is infeasible as asked.
fn is_refusal(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::InvalidArgument
            | ErrorKind::ResourceExhausted
            | ErrorKind::Unsupported
            | ErrorKind::AlreadyExists
    )
}

fn capacity_bytes(c: &PersistentVolumeClaim) -> Option<i64> {
    c.status
        .as_ref()?
        .capacity
        .as_ref()?
        .get("storage")
        .and_then(crate::machinery::quantity::bytes_of)
}

/// A bound claim asking for more than it has.
fn wants_more(c: &PersistentVolumeClaim) -> bool {
    pvc::is_bound(c)
        && c.metadata.deletion_timestamp.is_none()
        && matches!((pvc::request_bytes(c), capacity_bytes(c)), (Some(r), Some(have)) if r > have)
}

#[async_trait::async_trait]
impl Reconciler for Resizer {
    type Key = ObjectKey;

    fn name(&self) -> &'static str {
        "resizer"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::PersistentVolumeClaim]
    }

    fn keys_for(&self, event: &WatchEvent) -> Vec<ObjectKey> {
        self.keys_for_object(&event.object)
    }

    fn keys_for_object(&self, object: &Stored) -> Vec<ObjectKey> {
        match &*object.decoded() {
            AnyObject::PersistentVolumeClaim(c) if wants_more(c) => vec![object.key.clone()],
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, Error> {
        let Some(claim) = self
            .ctx
            .store
            .get_typed::<PersistentVolumeClaim>(&key.namespace, &key.name)
        else {
            return Ok(Action::await_change());
        };
        let c: &PersistentVolumeClaim = &claim.typed();
        if !wants_more(c) {
            self.infeasible.forget(key);
            return Ok(Action::await_change());
        }
        let wanted = pvc::request_bytes(c).unwrap_or(0);
        if let Some(wait) = self.infeasible_wait(key, c, wanted) {
            return Ok(Action::requeue(wait));
        }
        let volume_name = c
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .unwrap_or_default();
        let Some(volume) = self
            .ctx
            .store
            .get_typed::<PersistentVolume>("", &volume_name)
        else {
            return Ok(Action::await_change());
        };
        let v: &PersistentVolume = &volume.typed();
        let volume_bytes = v
            .spec
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get("storage"))
            .and_then(crate::machinery::quantity::bytes_of);
        if pvc::has_condition(c, pvc::FILE_SYSTEM_RESIZE_PENDING)
            && volume_bytes.is_some_and(|b| b >= wanted)
        {
            // The device is big enough already: the node agent's turn.
            return Ok(Action::await_change());
        }
        let Some(csi) = v.spec.as_ref().and_then(|s| s.csi.clone()) else {
            self.ctx.recorder.warning(COMPONENT, &claim.object(), "ExternalExpanding", "the claim's volume has no provider here to expand it; an administrator must grow it");
            return Ok(Action::await_change());
        };
        let Some(provider) = self.ctx.providers.get(&csi.driver).cloned() else {
            return Ok(Action::await_change());
        };
        if !provider.capabilities().expansion {
            self.ctx.recorder.warning(
                COMPONENT,
                &claim.object(),
                "VolumeResizeFailed",
                format!("provider {} cannot expand volumes", csi.driver),
            );
            return Ok(Action::await_change());
        }
        let req = ExpandRequest {
            handle: csi.volume_handle.clone(),
            attributes: csi.volume_attributes.clone().unwrap_or_default(),
            capacity_bytes: wanted,
        };
        // The size worked towards is on record before the provider is asked.
        let claim = self
            .set_allocation(
                &claim,
                wanted,
                Some(pvc::ResizeStatus::ControllerResizeInProgress),
            )
            .await?
            .unwrap_or(claim);
        let c: &PersistentVolumeClaim = &claim.typed();
        let expanded = match self
            .ctx
            .call_provider(&csi.driver, "expand_volume", provider.expand_volume(&req))
            .await
        {
            Ok(e) => e,
            Err(e) if is_refusal(e.kind) => {
                self.set_allocation(
                    &claim,
                    wanted,
                    Some(pvc::ResizeStatus::ControllerResizeInfeasible),
                )
                .await?;
                self.infeasible.refused(key, wanted, self.ctx.clock.now());
                self.ctx.recorder.warning(
                    COMPONENT,
                    &claim.object(),
                    "VolumeResizeFailed",
                    format!("expanding volume {volume_name}: {e}; lower the request (above the current capacity) to recover, or it is tried again in 5 minutes"),
                );
                return Ok(Action::requeue(INFEASIBLE_RETRY));
            }
            Err(e) => {
                self.ctx.recorder.warning(
                    COMPONENT,
                    &claim.object(),
                    "VolumeResizeFailed",
                    format!("expanding volume {volume_name}: {e}"),
                );
                return Err(Error::Provider(e));
            }
        };
        let size = K8sQuantity(Quantity::from_units(expanded.capacity_bytes).canonical());
        let mut new_volume = v.clone();
        if let Some(cap) = new_volume.spec.as_mut().and_then(|s| s.capacity.as_mut()) {
            cap.insert("storage".into(), size.clone());
        }
        let mut new_claim = c.clone();
        let status = new_claim.status.get_or_insert_with(Default::default);
        let done = expanded.in_progress.is_none() && expanded.capacity_bytes >= wanted;
        let block_mode = v.spec.as_ref().and_then(|s| s.volume_mode.as_deref()) == Some("Block");
        let on_node = done && provider.capabilities().node_expansion && !block_mode;
        status
            .conditions
            .get_or_insert_with(Vec::new)
            .retain(|c| c.type_ != "Resizing" && c.type_ != pvc::FILE_SYSTEM_RESIZE_PENDING);
        let allocation = if on_node {
            Some(pvc::ResizeStatus::NodeResizePending)
        } else if done {
            None
        } else {
            Some(pvc::ResizeStatus::ControllerResizeInProgress)
        };
        set_allocation(&mut new_claim, wanted, allocation);
        let status = new_claim.status.get_or_insert_with(Default::default);
        if on_node {
            // The device has grown; the filesystem grows where it is mounted.
            status
                .conditions
                .get_or_insert_with(Vec::new)
                .push(PersistentVolumeClaimCondition {
                    type_: pvc::FILE_SYSTEM_RESIZE_PENDING.into(),
                    status: "True".into(),
                    reason: None,
                    message: Some(
                        "Waiting for user to (re-)start a pod to finish file system resize of volume on node."
                            .into(),
                    ),
                    last_transition_time: Some(Time(jiff::Timestamp::now())),
                    last_probe_time: None,
                });
        } else if done {
            status
                .capacity
                .get_or_insert_with(Default::default)
                .insert("storage".into(), size.clone());
            if status.conditions.as_ref().is_some_and(Vec::is_empty) {
                status.conditions = None;
            }
        } else if let Some(state) = &expanded.in_progress {
            status
                .conditions
                .get_or_insert_with(Vec::new)
                .push(PersistentVolumeClaimCondition {
                    type_: "Resizing".into(),
                    status: "True".into(),
                    reason: Some("ModificationInProgress".into()),
                    message: Some(format!("the provider reports the volume is {state}")),
                    last_transition_time: Some(Time(jiff::Timestamp::now())),
                    last_probe_time: None,
                });
        }
        self.ctx
            .registry
            .write(vec![
                Write::update(new_volume, volume.rv, Subresource::Main),
                Write::update(new_claim, claim.rv, Subresource::Status),
            ])
            .await?;
        if on_node {
            self.ctx.recorder.normal(
                COMPONENT,
                &claim.object(),
                "FileSystemResizeRequired",
                format!(
                    "volume {volume_name} expanded to {}; its filesystem grows on the node that mounts it",
                    size.0
                ),
            );
            Ok(Action::await_change())
        } else if done {
            self.ctx.recorder.normal(
                COMPONENT,
                &claim.object(),
                "VolumeResizeSuccessful",
                format!("volume {volume_name} expanded to {}", size.0),
            );
            Ok(Action::await_change())
        } else {
            Ok(Action::requeue(Duration::from_secs(2)))
        }
    }
}
