//! Provisioning: a claim handed to one of our providers gets a volume named `pvc-<claim uid>`
//! (the provider's idempotency key), recorded as a PersistentVolume already bound to it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, PersistentVolumeSpec, PersistentVolumeStatus,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use stowage_provider::quantity::Quantity;
use stowage_provider::{AccessMode, ClaimRef, CreateVolumeRequest, DeleteVolumeRequest};

use super::restore::Restore;
use super::topology::{node_affinity, to_topology_requirement};
use super::{COMPONENT, Error, Provisioner, annotation};
use crate::controllers::binding;
use crate::registry::Write;
use crate::resources::Subresource;
use crate::resources::names::annotations::{
    COPYING_FROM, PROVISIONED_BY, SELECTED_NODE, STORAGE_PROVISIONER,
};
use crate::resources::names::finalizers::PROVISIONED_VOLUME;
use crate::resources::{
    Node, PersistentVolume, PersistentVolumeClaim, StorageClass, VolumeAttributesClass, node, pv,
    storageclass,
};
use crate::runtime::Action;
use crate::store::{ObjectKey, Stored};

/// Class parameters with this prefix are for Stowage, not the provider (as in CSI).
const RESERVED_PREFIX: &str = "csi.storage.k8s.io/";
/// How often a copy into a new volume (a restore, a clone) is asked about.
const COPY_POLL: Duration = Duration::from_secs(1);
const FSTYPE_PARAMETER: &str = "csi.storage.k8s.io/fstype";

/// Why a claim's VolumeAttributesClass keeps it from being provisioned now.
enum AttributesClass {
    /// The class does not exist yet.
    Wait(String),
    /// It never can be, as the claim stands.
    Refuse(String),
}

impl Provisioner {
    /// The parameters of the claim's VolumeAttributesClass, for the provider to create the
    /// volume with (empty without one). The class must exist, be for this provider, and the
    /// provider must be able to modify volumes: else the attributes could never be kept.
    fn attributes_class(
        &self,
        c: &PersistentVolumeClaim,
        provisioner: &str,
        provider: &dyn stowage_provider::Provider,
    ) -> Result<BTreeMap<String, String>, AttributesClass> {
        let Some(name) = c
            .spec
            .as_ref()
            .and_then(|s| s.volume_attributes_class_name.as_deref())
            .filter(|n| !n.is_empty())
        else {
            return Ok(BTreeMap::new());
        };
        let Some(class) = self.ctx.store.get_typed::<VolumeAttributesClass>("", name) else {
            return Err(AttributesClass::Wait(format!(
                "waiting for volumeattributesclass.storage.k8s.io \"{name}\" to be created"
            )));
        };
        let class: VolumeAttributesClass = class.typed();
        if class.driver_name != provisioner {
            return Err(AttributesClass::Refuse(format!(
                "volumeattributesclass \"{name}\" is for driver {}, and this claim's class provisions with {provisioner}",
                class.driver_name
            )));
        }
        if !provider.capabilities().volume_modification {
            return Err(AttributesClass::Refuse(format!(
                "{provisioner} cannot set or modify volume attributes, so it cannot honour volumeattributesclass \"{name}\""
            )));
        }
        Ok(class.parameters.unwrap_or_default())
    }

    pub(super) async fn provision(&self, key: &ObjectKey) -> Result<Action, Error> {
        let Some(claim) = self
            .ctx
            .store
            .get_typed::<PersistentVolumeClaim>(&key.namespace, &key.name)
        else {
            return Ok(Action::await_change());
        };
        let c: &PersistentVolumeClaim = &claim.typed();
        let unbound = c
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .unwrap_or_default()
            .is_empty();
        if c.metadata.deletion_timestamp.is_some() || !unbound {
            return Ok(Action::await_change());
        }
        let Some(provisioner) = annotation(&c.metadata, STORAGE_PROVISIONER).map(str::to_string)
        else {
            return Ok(Action::await_change());
        };
        let Some(provider) = self.ctx.providers.get(&provisioner).cloned() else {
            return Ok(Action::await_change());
        };
        let class_name = c
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.clone())
            .unwrap_or_default();
        let Some(class) = self.ctx.store.get_typed::<StorageClass>("", &class_name) else {
            self.ctx.recorder.warning(
                COMPONENT,
                &claim.object(),
                "ProvisioningFailed",
                format!("storageclass.storage.k8s.io \"{class_name}\" not found"),
            );
            return Ok(Action::requeue(Duration::from_secs(30)));
        };
        let sc: &StorageClass = &class.typed();
        if sc.provisioner != provisioner {
            return Ok(Action::await_change());
        }
        let selected = annotation(&c.metadata, SELECTED_NODE).map(str::to_string);
        if storageclass::is_wait_for_first_consumer(sc) && selected.is_none() {
            return Ok(Action::await_change());
        }
        let name = format!("pvc-{}", claim.uid());
        let copying = super::is_copying(c);
        let (content_source, clone_of) =
            match self.restore_source(c, &key.namespace, &provisioner, copying) {
                Restore::Empty => (None, None),
                Restore::From(source) => (Some(source), None),
                Restore::Clone(source, claim) => (Some(source), Some(claim)),
                Restore::Wait(why) => {
                    self.ctx.recorder.normal(
                        COMPONENT,
                        &claim.object(),
                        "WaitingForDataSource",
                        why,
                    );
                    // The snapshot becoming ready triggers the claim; this is a fallback.
                    return Ok(Action::requeue(Duration::from_secs(30)));
                }
                Restore::Refuse(why) => {
                    self.ctx.recorder.warning(
                        COMPONENT,
                        &claim.object(),
                        "ProvisioningFailed",
                        why,
                    );
                    return Ok(Action::await_change());
                }
            };
        let mutable_parameters = match self.attributes_class(c, &provisioner, provider.as_ref()) {
            Ok(parameters) => parameters,
            Err(AttributesClass::Wait(why)) => {
                self.ctx.recorder.normal(
                    COMPONENT,
                    &claim.object(),
                    "WaitingForVolumeAttributesClass",
                    why,
                );
                // The class's creation brings the claim back; this is a fallback.
                return Ok(Action::requeue(Duration::from_secs(30)));
            }
            Err(AttributesClass::Refuse(why)) => {
                self.ctx
                    .recorder
                    .warning(COMPONENT, &claim.object(), "ProvisioningFailed", why);
                return Ok(Action::await_change());
            }
        };
        let Some(_slot) = self.class_slot(&class_name).await else {
            return Ok(Action::requeue(Duration::from_millis(100)));
        };
        if content_source.is_some() && annotation(&c.metadata, COPYING_FROM).is_none() {
            // Said before the provider is asked, so that the source is held from now on; the
            // write brings the claim back.
            let from = match (&clone_of, super::restore::snapshot_source(c)) {
                (Some(claim), _) => format!("PersistentVolumeClaim/{claim}"),
                (None, snapshot) => format!("VolumeSnapshot/{}", snapshot.unwrap_or_default()),
            };
            self.ctx
                .change::<PersistentVolumeClaim>(&claim, Subresource::Main, |c| {
                    c.metadata
                        .annotations
                        .get_or_insert_with(Default::default)
                        .insert(COPYING_FROM.to_string(), from);
                })
                .await?;
            return Ok(Action::await_change());
        }
        if let Some(source) = &clone_of {
            // The source stays while the copy reads it.
            self.protect_clone_source(&key.namespace, source).await?;
        }
        let node_labels = selected.as_ref().map(|n| {
            let obj = self.ctx.store.get_typed::<Node>("", n);
            node::labels_for(n, obj.map(|s| s.typed::<Node>()).as_ref())
        });
        let request = create_request(
            c,
            &ClaimRef {
                namespace: key.namespace.to_string(),
                name: key.name.to_string(),
                uid: claim.uid().to_string(),
                annotations: c.metadata.annotations.clone().unwrap_or_default(),
            },
            &name,
            sc,
            selected.as_deref().zip(node_labels.as_ref()),
            content_source,
            mutable_parameters,
        );
        self.in_flight.lock().insert(name.clone());
        let created = self
            .ctx
            .call_provider(
                provider.name(),
                "create_volume",
                provider.create_volume(&request),
            )
            .await;
        let outcome = match created {
            Ok(volume) => {
                self.record_volume(&claim, sc, &provisioner, &name, volume)
                    .await
            }
            // A copy (restore, clone) under way: not a failure. Its progress is reported
            // every tenth, and it is asked again shortly.
            Err(e) if e.kind == stowage_provider::ErrorKind::InProgress => {
                if self
                    .copy_progress
                    .is_news(&name, &e.progress.unwrap_or_default())
                {
                    self.ctx.recorder.normal(
                        COMPONENT,
                        &claim.object(),
                        "Provisioning",
                        e.message.clone(),
                    );
                }
                Ok(Action::requeue(COPY_POLL))
            }
            Err(e) => {
                self.ctx.recorder.warning(
                    COMPONENT,
                    &claim.object(),
                    "ProvisioningFailed",
                    format!("failed to provision volume with StorageClass \"{class_name}\": {e}"),
                );
                Err(Error::Provider(e))
            }
        };
        if !matches!(outcome, Ok(Action::Requeue(d)) if d == COPY_POLL) {
            self.copy_progress.forget(&name);
        }
        self.in_flight.lock().remove(&name);
        outcome
    }

    /// Puts the cloning protection on the claim a clone copies (the source-protection
    /// controller takes it off when no clone needs it).
    async fn protect_clone_source(&self, namespace: &str, name: &str) -> Result<(), Error> {
        use crate::resources::names::finalizers::PVC_CLONE_SOURCE;
        let Some(source) = self
            .ctx
            .store
            .get_typed::<PersistentVolumeClaim>(namespace, name)
        else {
            return Ok(());
        };
        self.ctx
            .change::<PersistentVolumeClaim>(&source, Subresource::Main, |c| {
                let f = c.metadata.finalizers.get_or_insert_with(Vec::new);
                if !f.iter().any(|x| x == PVC_CLONE_SOURCE) {
                    f.push(PVC_CLONE_SOURCE.to_string());
                }
            })
            .await?;
        Ok(())
    }

    /// Writes the new volume object and the claim's binding together.
    async fn record_volume(
        &self,
        claim: &Arc<Stored>,
        sc: &StorageClass,
        provisioner: &str,
        name: &str,
        volume: stowage_provider::Volume,
    ) -> Result<Action, Error> {
        let mut bound: PersistentVolumeClaim = claim.typed::<PersistentVolumeClaim>().clone();
        let mut volume_object = new_volume(&bound, sc, provisioner, name, &volume);
        let chosen = binding::ChosenBy {
            volume: false,
            claim: true,
        };
        binding::bind(
            &mut bound,
            &mut volume_object,
            chosen,
            Time(self.ctx.clock.now()),
        );

        match self
            .ctx
            .registry
            .write(vec![
                Write::create(volume_object),
                Write::update(bound, claim.rv, Subresource::All),
            ])
            .await
        {
            Ok(_) => {
                self.ctx.recorder.normal(
                    COMPONENT,
                    &claim.object(),
                    "ProvisioningSucceeded",
                    format!("Successfully provisioned volume {name} with {provisioner}"),
                );
                Ok(Action::await_change())
            }
            // The claim changed meanwhile: try again; the provider call is idempotent.
            Err(e) if e.is_conflict() => Ok(Action::requeue(Duration::from_millis(5))),
            Err(e) if e.is_not_found() => {
                // The claim went away while its volume was being made: do not leak it.
                let provider = self.ctx.providers.get(provisioner).cloned();
                if let Some(p) = provider {
                    let req = DeleteVolumeRequest {
                        handle: volume.handle,
                        attributes: volume.attributes,
                    };
                    let _ = self
                        .ctx
                        .call_provider(p.name(), "delete_volume", p.delete_volume(&req))
                        .await;
                }
                Ok(Action::await_change())
            }
            // A volume object of that name exists already: the binder sorts the claim out.
            Err(e) if e.is_already_exists() => Ok(Action::await_change()),
            Err(e) => Err(Error::Api(e)),
        }
    }
}

/// What a provider is asked for a claim: its size, modes and mode, the class's parameters
/// (without the reserved ones) and mount options, and the topology the class and the selected
/// node allow. The server's provisioner and a node agent's (node-local providers) ask alike.
pub fn create_request(
    c: &PersistentVolumeClaim,
    claim: &ClaimRef,
    name: &str,
    sc: &StorageClass,
    selected: Option<(&str, &BTreeMap<String, String>)>,
    content_source: Option<stowage_provider::ContentSource>,
    mutable_parameters: BTreeMap<String, String>,
) -> CreateVolumeRequest {
    let spec = c.spec.clone().unwrap_or_default();
    let parameters = provider_parameters(sc);
    CreateVolumeRequest {
        name: name.to_string(),
        capacity_bytes: crate::resources::pvc::request_bytes(c).unwrap_or(0),
        access_modes: spec
            .access_modes
            .iter()
            .flatten()
            .filter_map(|m| AccessMode::parse(m))
            .collect(),
        block: spec.volume_mode.as_deref() == Some("Block"),
        parameters,
        mount_options: sc.mount_options.clone().unwrap_or_default(),
        topology: to_topology_requirement(sc, selected),
        claim: claim.clone(),
        content_source,
        mutable_parameters,
    }
}

/// A class's parameters for its provider: all but those for Stowage itself (reserved prefix).
pub fn provider_parameters(sc: &StorageClass) -> BTreeMap<String, String> {
    sc.parameters
        .iter()
        .flatten()
        .filter(|(k, _)| !k.starts_with(RESERVED_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The PersistentVolume for a volume a provider made for `claim`: the claim's modes and
/// class, the provider's handle, attributes, size and topology, the class's reclaim policy
/// and mount options. Our finalizer guards the backing storage when the policy is Delete.
pub fn new_volume(
    claim: &PersistentVolumeClaim,
    sc: &StorageClass,
    provisioner: &str,
    name: &str,
    volume: &stowage_provider::Volume,
) -> PersistentVolume {
    let spec = claim.spec.clone().unwrap_or_default();
    let reclaim = storageclass::reclaim_policy(sc);
    let capacity = BTreeMap::from([(
        "storage".to_string(),
        K8sQuantity(Quantity::from_units(volume.capacity_bytes).canonical()),
    )]);
    let fs_type = sc
        .parameters
        .as_ref()
        .and_then(|p| p.get(FSTYPE_PARAMETER).cloned());
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            annotations: Some(BTreeMap::from([(
                PROVISIONED_BY.to_string(),
                provisioner.to_string(),
            )])),
            finalizers: (reclaim == pv::ReclaimPolicy::Delete)
                .then(|| vec![PROVISIONED_VOLUME.to_string()]),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: spec.access_modes.clone(),
            capacity: Some(capacity),
            csi: Some(CSIPersistentVolumeSource {
                driver: provisioner.to_string(),
                volume_handle: volume.handle.clone(),
                volume_attributes: Some(volume.attributes.clone()),
                fs_type,
                ..Default::default()
            }),
            mount_options: sc.mount_options.clone(),
            node_affinity: node_affinity(&volume.accessible_topology),
            persistent_volume_reclaim_policy: Some(reclaim.as_str().to_string()),
            storage_class_name: spec.storage_class_name.clone(),
            volume_attributes_class_name: spec
                .volume_attributes_class_name
                .clone()
                .filter(|n| !n.is_empty()),
            volume_mode: spec.volume_mode.clone(),
            ..Default::default()
        }),
        status: Some(PersistentVolumeStatus::default()),
    }
}
