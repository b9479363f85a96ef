//! Restores and clones: what a claim's data source names, resolved into what the provider
//! copies from: a ready VolumeSnapshot's content, or another bound claim's volume.

use stowage_provider::ContentSource;

use super::Provisioner;
use crate::resources::volumesnapshot::{self, VolumeSnapshot};
use crate::resources::{PersistentVolume, PersistentVolumeClaim, VolumeSnapshotContent, pvc};

/// What a claim's `dataSourceRef` (or else `dataSource`) names: (API group, kind, name,
/// namespace if another one is named).
pub fn data_source(c: &PersistentVolumeClaim) -> Option<(String, String, String, Option<String>)> {
    let spec = c.spec.as_ref()?;
    if let Some(r) = &spec.data_source_ref {
        return Some((
            r.api_group.clone().unwrap_or_default(),
            r.kind.clone(),
            r.name.clone(),
            r.namespace.clone(),
        ));
    }
    let r = spec.data_source.as_ref()?;
    Some((
        r.api_group.clone().unwrap_or_default(),
        r.kind.clone(),
        r.name.clone(),
        None,
    ))
}

/// On a VolumeSnapshotContent: claims may restore it with another `volumeMode`.
pub const ALLOW_VOLUME_MODE_CHANGE: &str =
    "snapshot.storage.kubernetes.io/allow-volume-mode-change";

/// The VolumeSnapshot a claim is to be restored from, if that is what its data source is.
pub fn snapshot_source(c: &PersistentVolumeClaim) -> Option<String> {
    match data_source(c)? {
        (group, kind, name, None)
            if group == volumesnapshot::GROUP && kind == volumesnapshot::KIND =>
        {
            Some(name)
        }
        _ => None,
    }
}

/// The claim (in the same namespace) a claim is to be cloned from, if that is what its data
/// source is.
pub fn clone_source(c: &PersistentVolumeClaim) -> Option<String> {
    match data_source(c)? {
        (group, kind, name, None) if group.is_empty() && kind == "PersistentVolumeClaim" => {
            Some(name)
        }
        _ => None,
    }
}

/// What a new volume starts from.
pub(super) enum Restore {
    Empty,
    From(ContentSource),
    /// A copy of the claim of this name (which the copy protects from deletion).
    Clone(ContentSource, String),
    /// Not possible yet (the snapshot is missing or still being cut).
    Wait(String),
    /// Never possible as asked.
    Refuse(String),
}

impl Provisioner {
    /// Resolves a claim's data source into what the provider copies from: a ready
    /// VolumeSnapshot of the same provider, or a bound claim of the same provider and volume
    /// mode; either no larger than the claim.
    /// `copying`: this claim's copy has already started ([`super::is_copying`]): a snapshot
    /// being deleted still serves a restore under way, never a new one.
    pub(super) fn restore_source(
        &self,
        c: &PersistentVolumeClaim,
        namespace: &str,
        provisioner: &str,
        copying: bool,
    ) -> Restore {
        let Some((group, kind, name, other_namespace)) = data_source(c) else {
            return Restore::Empty;
        };
        let is_snapshot = group == volumesnapshot::GROUP && kind == volumesnapshot::KIND;
        let is_claim = group.is_empty() && kind == "PersistentVolumeClaim";
        if !is_snapshot && !is_claim {
            let what = if group.is_empty() {
                kind
            } else {
                format!("{kind}.{group}")
            };
            return Restore::Refuse(format!(
                "data source {what} \"{name}\" is not supported: claims start from VolumeSnapshots (snapshot.storage.k8s.io) or other PersistentVolumeClaims"
            ));
        }
        if other_namespace.is_some_and(|n| n != namespace) {
            return Restore::Refuse("a data source in another namespace is not supported".into());
        }
        let requested = crate::resources::pvc::request_bytes(c).unwrap_or(0);
        let capabilities = self
            .ctx
            .providers
            .get(provisioner)
            .map(|p| p.capabilities())
            .unwrap_or_default();
        if is_claim && !capabilities.clones || is_snapshot && !capabilities.snapshots {
            return Restore::Refuse(format!(
                "{provisioner} cannot make a volume from a {}",
                if is_claim {
                    "claim (a clone)"
                } else {
                    "snapshot"
                }
            ));
        }
        if is_claim {
            return self.clone_of(c, namespace, &name, provisioner, requested);
        }
        let Some(stored) = self.ctx.store.get_typed::<VolumeSnapshot>(namespace, &name) else {
            return Restore::Wait(format!("volumesnapshot \"{name}\" not found"));
        };
        let snapshot: &VolumeSnapshot = &stored.typed();
        let status = snapshot.status.clone().unwrap_or_default();
        let content = status
            .bound_volume_snapshot_content_name
            .as_ref()
            .and_then(|n| self.ctx.store.get_typed::<VolumeSnapshotContent>("", n))
            .map(|c| c.typed::<VolumeSnapshotContent>());
        let id = content
            .as_ref()
            .and_then(|c| c.status.as_ref()?.snapshot_handle.clone());
        let (Some(content), Some(id), true) = (content, id, volumesnapshot::is_ready(snapshot))
        else {
            return Restore::Wait(format!("volumesnapshot \"{name}\" is not ready to use yet"));
        };
        if snapshot.metadata.deletion_timestamp.is_some() && !copying {
            return Restore::Refuse(format!(
                "volumesnapshot \"{name}\" is being deleted and cannot be restored from"
            ));
        }
        // Kubernetes' prevent-volume-mode-conversion (on by default since 1.30): a snapshot of a
        // raw block device restored as a file system would have the node mount whatever the
        // tenant wrote there. An admin may allow it on the content.
        let mode = |m: Option<&String>| m.cloned().unwrap_or_else(|| "Filesystem".into());
        let wanted = mode(c.spec.as_ref().and_then(|s| s.volume_mode.as_ref()));
        let allowed = content
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ALLOW_VOLUME_MODE_CHANGE))
            .is_some_and(|v| v == "true");
        if let Some(source_mode) = &content.spec.source_volume_mode
            && *source_mode != wanted
            && !allowed
        {
            return Restore::Refuse(format!(
                "volumesnapshot \"{name}\" is of a {source_mode} volume and this claim asks for {wanted}: changing the mode needs the annotation {ALLOW_VOLUME_MODE_CHANGE}: \"true\" on its VolumeSnapshotContent"
            ));
        }
        if content.spec.driver != provisioner {
            return Restore::Refuse(format!(
                "volumesnapshot \"{name}\" belongs to provider {}, not to this claim's provisioner {provisioner}",
                content.spec.driver
            ));
        }
        let restore = content
            .status
            .as_ref()
            .and_then(|s| s.restore_size)
            .unwrap_or(0);
        if requested < restore {
            return Restore::Refuse(format!(
                "the claim requests {requested} bytes, less than the {restore} bytes of volumesnapshot \"{name}\": request at least that much"
            ));
        }
        Restore::From(ContentSource::Snapshot { snapshot_id: id })
    }

    fn clone_of(
        &self,
        c: &PersistentVolumeClaim,
        namespace: &str,
        name: &str,
        provisioner: &str,
        requested: i64,
    ) -> Restore {
        let Some(source) = self
            .ctx
            .store
            .get_typed::<PersistentVolumeClaim>(namespace, name)
        else {
            return Restore::Wait(format!("persistentvolumeclaim \"{name}\" not found"));
        };
        let source: PersistentVolumeClaim = source.typed();
        if source.metadata.deletion_timestamp.is_some() {
            return Restore::Refuse(format!(
                "persistentvolumeclaim \"{name}\" is being deleted and cannot be cloned"
            ));
        }
        let volume_name = source.spec.as_ref().and_then(|s| s.volume_name.clone());
        let (Some(volume_name), true) = (volume_name, pvc::is_bound(&source)) else {
            return Restore::Wait(format!("persistentvolumeclaim \"{name}\" is not bound yet"));
        };
        let Some(volume) = self
            .ctx
            .store
            .get_typed::<PersistentVolume>("", &volume_name)
        else {
            return Restore::Wait(format!(
                "the volume of persistentvolumeclaim \"{name}\" is not found"
            ));
        };
        let spec = volume.typed::<PersistentVolume>().spec.unwrap_or_default();
        let Some(csi) = spec.csi else {
            return Restore::Refuse(format!(
                "persistentvolumeclaim \"{name}\" has a volume no provider here can copy"
            ));
        };
        if csi.driver != provisioner {
            return Restore::Refuse(format!(
                "persistentvolumeclaim \"{name}\" is on provider {}, not on this claim's provisioner {provisioner}",
                csi.driver
            ));
        }
        let mode = |m: Option<&String>| m.cloned().unwrap_or_else(|| "Filesystem".into());
        let wanted = mode(c.spec.as_ref().and_then(|s| s.volume_mode.as_ref()));
        if mode(spec.volume_mode.as_ref()) != wanted {
            return Restore::Refuse(format!(
                "persistentvolumeclaim \"{name}\" has volumeMode {}, this claim {wanted}: a clone keeps its source's mode",
                mode(spec.volume_mode.as_ref())
            ));
        }
        let size = spec
            .capacity
            .as_ref()
            .and_then(|c| c.get("storage"))
            .and_then(crate::machinery::quantity::bytes_of)
            .unwrap_or(0);
        if requested < size {
            return Restore::Refuse(format!(
                "the claim requests {requested} bytes, less than the {size} bytes of persistentvolumeclaim \"{name}\": a clone must be at least as large as its source"
            ));
        }
        Restore::Clone(
            ContentSource::Volume {
                handle: csi.volume_handle,
                attributes: csi.volume_attributes.unwrap_or_default(),
            },
            name.to_string(),
        )
    }
}
