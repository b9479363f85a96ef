//! Restores: what a claim's data source names, resolved into what the provider restores from.

use stowage_provider::ContentSource;

use super::Provisioner;
use crate::resources::PersistentVolumeClaim;
use crate::resources::volumesnapshot::{self, VolumeSnapshot};

/// What a claim's `dataSourceRef` (or else `dataSource`) names: (API group, kind, name,
/// namespace if another one is named).
pub(super) fn data_source(
    c: &PersistentVolumeClaim,
) -> Option<(String, String, String, Option<String>)> {
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

/// The VolumeSnapshot a claim is to be restored from, if that is what its data source is.
pub(super) fn snapshot_source(c: &PersistentVolumeClaim) -> Option<String> {
    match data_source(c)? {
        (group, kind, name, None)
            if group == volumesnapshot::GROUP && kind == volumesnapshot::KIND =>
        {
            Some(name)
        }
        _ => None,
    }
}

/// What a new volume starts from.
pub(super) enum Restore {
    Empty,
    From(ContentSource),
    /// Not possible yet (the snapshot is missing or still being cut).
    Wait(String),
    /// Never possible as asked.
    Refuse(String),
}

impl Provisioner {
    /// Resolves a claim's data source into what the provider restores from. Only VolumeSnapshots
    /// of the same provider, no larger than the claim, are accepted.
    pub(super) fn restore_source(
        &self,
        c: &PersistentVolumeClaim,
        namespace: &str,
        provisioner: &str,
    ) -> Restore {
        let Some((group, kind, name, other_namespace)) = data_source(c) else {
            return Restore::Empty;
        };
        if group != volumesnapshot::GROUP || kind != volumesnapshot::KIND {
            let what = if group.is_empty() {
                kind
            } else {
                format!("{kind}.{group}")
            };
            return Restore::Refuse(format!(
                "data source {what} \"{name}\" is not supported: claims can be restored from VolumeSnapshots (snapshot.storage.k8s.io) only"
            ));
        }
        if other_namespace.is_some_and(|n| n != namespace) {
            return Restore::Refuse(
                "restoring from a VolumeSnapshot in another namespace is not supported".into(),
            );
        }
        let Some(stored) = self.ctx.store.get_typed::<VolumeSnapshot>(namespace, &name) else {
            return Restore::Wait(format!("volumesnapshot \"{name}\" not found"));
        };
        let snapshot: &VolumeSnapshot = &stored.typed();
        let status = snapshot.status.clone().unwrap_or_default();
        let (Some(id), true) = (status.snapshot_handle, volumesnapshot::is_ready(snapshot)) else {
            return Restore::Wait(format!("volumesnapshot \"{name}\" is not ready to use yet"));
        };
        if status.driver.as_deref() != Some(provisioner) {
            return Restore::Refuse(format!(
                "volumesnapshot \"{name}\" belongs to provider {}, not to this claim's provisioner {provisioner}",
                status.driver.as_deref().unwrap_or("(unknown)")
            ));
        }
        let restore = status
            .restore_size
            .as_ref()
            .and_then(crate::machinery::quantity::bytes_of)
            .unwrap_or(0);
        let requested = crate::resources::pvc::request_bytes(c).unwrap_or(0);
        if requested < restore {
            return Restore::Refuse(format!(
                "the claim requests {requested} bytes, less than the {restore} bytes of volumesnapshot \"{name}\""
            ));
        }
        Restore::From(ContentSource::Snapshot { snapshot_id: id })
    }
}
