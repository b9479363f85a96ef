//! Volume modification: a bound claim whose `spec.volumeAttributesClassName` differs from its
//! `status.currentVolumeAttributesClassName` has its volume modified by the provider to the
//! class's parameters, as Kubernetes' external-resizer does for CSI drivers.
//!
//! The claim's `status.modifyVolumeStatus` says where it stands:
//! - `Pending`: the class does not exist yet (its creation brings the claim back);
//! - `InProgress`: the provider is modifying the volume, or will retry after a temporary
//!   failure;
//! - `Infeasible`: it never can be, as asked: the class is another driver's, the provider
//!   cannot modify volumes, or it refused the parameters (outside its limits). The volume is
//!   untouched; a warning event says why. Asking for another class, or the current one, moves
//!   on from there.
//!
//! On success the volume's `spec.volumeAttributesClassName` and the claim's
//! `status.currentVolumeAttributesClassName` name the new class, and `modifyVolumeStatus` is
//! cleared. Claims of drivers this server does not run are left to their own modifier.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ModifyVolumeStatus;
use stowage_provider::{ErrorKind, ModifyRequest};

use super::Context;
use super::retry::InfeasibleRetry;
use crate::error::ApiError;
use crate::resources::pvc;
use crate::resources::{
    AnyObject, Kind, PersistentVolume, PersistentVolumeClaim, Subresource, VolumeAttributesClass,
};
use crate::runtime::{Action, Error, Reconciler};
use crate::store::{ObjectKey, Stored, WatchEvent};

pub const COMPONENT: &str = "external-resizer";

crate::string_enum! {
    /// `status.modifyVolumeStatus.status`, as Kubernetes spells it.
    pub enum ModifyStatus { Pending, InProgress, Infeasible }
}

/// How often a target found infeasible is tried again, in case what made it so has changed
/// (the provider's limits, a volume grown since): rarely, as Kubernetes does.
const INFEASIBLE_RETRY: Duration = Duration::from_secs(300);

pub struct Modifier {
    ctx: Arc<Context>,
    /// When each claim's target was last found infeasible: its own status write brings the
    /// claim straight back, and that must not be a retry.
    infeasible: InfeasibleRetry<String>,
}

impl Modifier {
    pub fn new(ctx: Arc<Context>) -> Self {
        Modifier {
            ctx,
            infeasible: InfeasibleRetry::new(INFEASIBLE_RETRY),
        }
    }

    /// How long until an infeasible target may be tried again (`None`: now).
    fn infeasible_wait(
        &self,
        key: &ObjectKey,
        c: &PersistentVolumeClaim,
        target: &str,
    ) -> Option<Duration> {
        if modify_status(c) != Some((target.to_string(), ModifyStatus::Infeasible)) {
            return None;
        }
        self.infeasible
            .wait(key, &target.to_string(), self.ctx.clock.now())
    }

    /// Writes the claim's `modifyVolumeStatus` (`None`: clears it), if it differs.
    async fn set_status(
        &self,
        claim: &Arc<Stored>,
        status: Option<(&str, ModifyStatus)>,
    ) -> Result<Option<Arc<Stored>>, ApiError> {
        let want = status.map(|(target, s)| ModifyVolumeStatus {
            target_volume_attributes_class_name: Some(target.to_string()),
            status: s.as_str().to_string(),
        });
        self.ctx
            .change::<PersistentVolumeClaim>(claim, Subresource::Status, |c| {
                c.status
                    .get_or_insert_with(Default::default)
                    .modify_volume_status = want;
            })
            .await
    }

    /// Marks the target infeasible, with a warning that says why.
    async fn infeasible(
        &self,
        claim: &Arc<Stored>,
        target: &str,
        why: String,
    ) -> Result<Action, Error> {
        let was = modify_status(&claim.typed());
        self.set_status(claim, Some((target, ModifyStatus::Infeasible)))
            .await?;
        self.infeasible
            .refused(&claim.key, target.to_string(), self.ctx.clock.now());
        if was != Some((target.to_string(), ModifyStatus::Infeasible)) {
            self.ctx
                .recorder
                .warning(COMPONENT, &claim.object(), "VolumeModifyFailed", why);
        }
        Ok(Action::requeue(INFEASIBLE_RETRY))
    }

    async fn sync(&self, key: &ObjectKey) -> Result<Action, Error> {
        let Some(claim) = self
            .ctx
            .store
            .get_typed::<PersistentVolumeClaim>(&key.namespace, &key.name)
        else {
            self.infeasible.forget(key);
            return Ok(Action::await_change());
        };
        let c: PersistentVolumeClaim = claim.typed();
        if c.metadata.deletion_timestamp.is_some() || !pvc::is_bound(&c) {
            self.infeasible.forget(key);
            return Ok(Action::await_change());
        }
        let spec = c.spec.clone().unwrap_or_default();
        let status = c.status.clone().unwrap_or_default();
        let Some(target) = spec.volume_attributes_class_name.filter(|n| !n.is_empty()) else {
            self.infeasible.forget(key);
            return Ok(Action::await_change());
        };
        if status.current_volume_attributes_class_name.as_deref() == Some(target.as_str()) {
            // Reached, or asked back to where it is: nothing is in progress.
            self.set_status(&claim, None).await?;
            return Ok(Action::await_change());
        }
        let volume_name = spec.volume_name.unwrap_or_default();
        let Some(volume) = self
            .ctx
            .store
            .get_typed::<PersistentVolume>("", &volume_name)
        else {
            return Ok(Action::await_change());
        };
        let v: PersistentVolume = volume.typed();
        let Some(csi) = v.spec.as_ref().and_then(|s| s.csi.clone()) else {
            return self
                .infeasible(
                    &claim,
                    &target,
                    format!("volume {volume_name} is not a CSI volume: its attributes cannot be modified"),
                )
                .await;
        };
        let Some(provider) = self.ctx.providers.get(&csi.driver).cloned() else {
            // Another driver's volume: its own modifier acts on it.
            return Ok(Action::await_change());
        };
        let Some(class) = self
            .ctx
            .store
            .get_typed::<VolumeAttributesClass>("", &target)
        else {
            self.set_status(&claim, Some((&target, ModifyStatus::Pending)))
                .await?;
            return Ok(Action::await_change());
        };
        let class: VolumeAttributesClass = class.typed();
        if class.driver_name != csi.driver {
            return self
                .infeasible(
                    &claim,
                    &target,
                    format!(
                        "volumeattributesclass \"{target}\" is for driver {}, and volume {volume_name} is {}'s",
                        class.driver_name, csi.driver
                    ),
                )
                .await;
        }
        if !provider.capabilities().volume_modification {
            return self
                .infeasible(
                    &claim,
                    &target,
                    format!(
                        "{} cannot modify a volume's attributes (volumeattributesclass \"{target}\")",
                        csi.driver
                    ),
                )
                .await;
        }
        if let Some(wait) = self.infeasible_wait(key, &c, &target) {
            return Ok(Action::requeue(wait));
        }
        let claim = self
            .set_status(&claim, Some((&target, ModifyStatus::InProgress)))
            .await?
            .unwrap_or(claim);
        let req = ModifyRequest {
            handle: csi.volume_handle.clone(),
            attributes: csi.volume_attributes.clone().unwrap_or_default(),
            parameters: class.parameters.clone().unwrap_or_default(),
        };
        let result = self
            .ctx
            .call_provider(
                provider.name(),
                "modify_volume",
                provider.modify_volume(&req),
            )
            .await;
        match result {
            Ok(()) => {
                self.ctx
                    .change::<PersistentVolume>(&volume, Subresource::Main, |v| {
                        v.spec.get_or_insert_with(Default::default).volume_attributes_class_name =
                            Some(target.clone());
                    })
                    .await?;
                self.ctx
                    .change::<PersistentVolumeClaim>(&claim, Subresource::Status, |c| {
                        let s = c.status.get_or_insert_with(Default::default);
                        s.current_volume_attributes_class_name = Some(target.clone());
                        s.modify_volume_status = None;
                    })
                    .await?;
                self.ctx.recorder.normal(
                    COMPONENT,
                    &claim.object(),
                    "VolumeModifySuccessful",
                    format!("volume {volume_name} now has the attributes of volumeattributesclass \"{target}\""),
                );
                Ok(Action::await_change())
            }
            Err(e) if is_final(e.kind) => {
                self.infeasible(
                    &claim,
                    &target,
                    format!("{} refused volumeattributesclass \"{target}\" for volume {volume_name}: {}", csi.driver, e.message),
                )
                .await
            }
            Err(e) => {
                self.ctx.recorder.warning(
                    COMPONENT,
                    &claim.object(),
                    "VolumeModifyFailed",
                    format!("modifying volume {volume_name} to volumeattributesclass \"{target}\" failed, will retry: {}", e.message),
                );
                Err(Error::Provider(e))
            }
        }
    }
}

/// Failures no retry can mend: the target is infeasible as asked.
fn is_final(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::InvalidArgument | ErrorKind::Unsupported | ErrorKind::AlreadyExists
    )
}

/// The claim's `modifyVolumeStatus`, as (target, status).
fn modify_status(c: &PersistentVolumeClaim) -> Option<(String, ModifyStatus)> {
    let m = c.status.as_ref()?.modify_volume_status.as_ref()?;
    Some((
        m.target_volume_attributes_class_name
            .clone()
            .unwrap_or_default(),
        ModifyStatus::parse(&m.status)?,
    ))
}

#[async_trait::async_trait]
impl Reconciler for Modifier {
    type Key = ObjectKey;

    fn name(&self) -> &'static str {
        "modifier"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::PersistentVolumeClaim, Kind::VolumeAttributesClass]
    }

    fn keys_for(&self, event: &WatchEvent) -> Vec<ObjectKey> {
        if event.kind() != Kind::VolumeAttributesClass {
            return self.keys_for_object(&event.object);
        }
        // A class appearing lets the claims pending on it go ahead (a scan, but classes are
        // few and rarely made; resyncs reach claims through their own keys).
        let name = &event.object.key.name;
        let (claims, _) = self.ctx.store.list(Kind::PersistentVolumeClaim, None);
        claims
            .iter()
            .filter(|c| c.may_have("targetVolumeAttributesClassName", name))
            .map(|c| c.key.clone())
            .collect()
    }

    fn keys_for_object(&self, object: &Stored) -> Vec<ObjectKey> {
        match object.kind {
            // Only claims that name a class; the prefilter spares decoding the rest.
            Kind::PersistentVolumeClaim if object.may_have_field("volumeAttributesClassName") => {
                match &*object.decoded() {
                    AnyObject::PersistentVolumeClaim(c)
                        if c.spec
                            .as_ref()
                            .and_then(|s| s.volume_attributes_class_name.as_deref())
                            .is_some_and(|n| !n.is_empty()) =>
                    {
                        vec![object.key.clone()]
                    }
                    _ => Vec::new(),
                }
            }
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, Error> {
        self.sync(key).await
    }
}
