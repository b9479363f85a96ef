//! PersistentVolumeClaim: a user's request for storage. Namespaced, with a status subresource.

use k8s_openapi::api::core::v1::{PersistentVolumeClaimSpec, PersistentVolumeClaimStatus};
use serde_json::{Value, json};

use super::table::{self, Column};
use super::validate;
use super::{KindInfo, KindStrategy, NameRule, PersistentVolumeClaim};
use crate::machinery::quantity::{self, Quantity};
use crate::machinery::validation::{FieldErrors, Path};

crate::string_enum! {
    /// Where a claim is in its life (`status.phase`).
    pub enum Phase { Pending, Bound, Lost }
}

/// The requested size in bytes.
pub fn request_bytes(pvc: &PersistentVolumeClaim) -> Option<i64> {
    pvc.spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
        .and_then(quantity::bytes_of)
}

pub fn phase(pvc: &PersistentVolumeClaim) -> Option<Phase> {
    pvc.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .and_then(Phase::parse)
}

/// Whether the claim is bound to a volume.
/// The claim's condition while its filesystem waits to be grown on a node.
pub const FILE_SYSTEM_RESIZE_PENDING: &str = "FileSystemResizePending";

crate::string_enum! {
    /// Where an expansion stands: `status.allocatedResourceStatuses["storage"]`, as Kubernetes
    /// spells it. Absent once the volume (and its filesystem) have the size.
    pub enum ResizeStatus {
        ControllerResizeInProgress,
        ControllerResizeInfeasible,
        NodeResizePending,
        NodeResizeInProgress,
        NodeResizeInfeasible,
    }
}

/// The size an expansion last worked towards: `status.allocatedResources["storage"]`.
pub fn allocated_bytes(pvc: &PersistentVolumeClaim) -> Option<i64> {
    pvc.status
        .as_ref()?
        .allocated_resources
        .as_ref()?
        .get("storage")
        .and_then(quantity::bytes_of)
}

/// `status.allocatedResourceStatuses["storage"]`.
pub fn resize_status(pvc: &PersistentVolumeClaim) -> Option<ResizeStatus> {
    pvc.status
        .as_ref()?
        .allocated_resource_statuses
        .as_ref()?
        .get("storage")
        .and_then(|s| ResizeStatus::parse(s))
}

/// Whether the claim has the condition `type_` set to True.
pub fn has_condition(pvc: &PersistentVolumeClaim, type_: &str) -> bool {
    pvc.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

pub fn is_bound(pvc: &PersistentVolumeClaim) -> bool {
    phase(pvc) == Some(Phase::Bound)
}

/// The spec without the fields that may change after creation, for the immutability check.
fn immutable_part(spec: &PersistentVolumeClaimSpec) -> PersistentVolumeClaimSpec {
    PersistentVolumeClaimSpec {
        resources: None,
        volume_name: None,
        volume_attributes_class_name: None,
        ..spec.clone()
    }
}

impl KindStrategy for PersistentVolumeClaim {
    const INFO: KindInfo = KindInfo {
        kind: "PersistentVolumeClaim",
        list_kind: "PersistentVolumeClaimList",
        plural: "persistentvolumeclaims",
        singular: "persistentvolumeclaim",
        group: "",
        version: "v1",
        api_version: "v1",
        namespaced: true,
        short_names: &["pvc"],
        categories: &[],
        has_status: true,
        allow_create_on_update: false,
        name_rule: NameRule::Subdomain,
        field_labels: &["status.phase", "spec.storageClassName", "spec.volumeName"],
    };

    fn prepare_for_create(&mut self) {
        self.status = Some(PersistentVolumeClaimStatus {
            phase: Some(Phase::Pending.as_str().into()),
            ..Default::default()
        });
    }

    fn default(&mut self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
        if let Some(resources) = spec.resources.as_mut() {
            validate::canonicalize_quantities(resources.requests.as_mut());
            validate::canonicalize_quantities(resources.limits.as_mut());
        }
        if let Some(status) = self.status.as_mut() {
            validate::canonicalize_quantities(status.capacity.as_mut());
        }
    }

    fn validate(&self, errs: &mut FieldErrors) {
        let p = Path::root("spec");
        let Some(spec) = &self.spec else {
            errs.required(&p, "");
            return;
        };
        validate::access_modes(spec.access_modes.as_ref(), &p.child("accessModes"), errs);
        let requests = spec.resources.as_ref().and_then(|r| r.requests.as_ref());
        validate::storage_size(
            requests.and_then(|r| r.get("storage")),
            &p.child("resources").child("requests").key("storage"),
            errs,
        );
        if let Some(limit) = spec
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("storage"))
        {
            let lp = p.child("resources").child("limits").key("storage");
            if let (Some(l), Some(r)) = (
                validate::quantity(limit, &lp, errs),
                requests
                    .and_then(|r| r.get("storage"))
                    .and_then(|q| Quantity::parse(&q.0).ok()),
            ) && l < r
            {
                errs.invalid(
                    &lp,
                    &limit.0,
                    "must be greater than or equal to storage request",
                );
            }
        }
        validate::volume_mode(spec.volume_mode.as_ref(), &p.child("volumeMode"), errs);
        validate::optional_name(
            spec.storage_class_name.as_ref(),
            &p.child("storageClassName"),
            errs,
        );
        validate::optional_name(spec.volume_name.as_ref(), &p.child("volumeName"), errs);
        validate::optional_name(
            spec.volume_attributes_class_name.as_ref(),
            &p.child("volumeAttributesClassName"),
            errs,
        );
        validate::label_selector(spec.selector.as_ref(), &p.child("selector"), errs);
        if let Some(ds) = &spec.data_source {
            let dp = p.child("dataSource");
            if ds.kind.is_empty() {
                errs.required(&dp.child("kind"), "");
            }
            if ds.name.is_empty() {
                errs.required(&dp.child("name"), "");
            }
        }
        if let Some(ds) = &spec.data_source_ref {
            let dp = p.child("dataSourceRef");
            if ds.kind.is_empty() {
                errs.required(&dp.child("kind"), "");
            }
            if ds.name.is_empty() {
                errs.required(&dp.child("name"), "");
            }
        }
        if let Some(status) = &self.status {
            let sp = Path::root("status");
            validate::one_of(
                status.phase.as_ref(),
                Phase::NAMES,
                &sp.child("phase"),
                errs,
            );
            for (k, q) in status.capacity.iter().flatten() {
                validate::quantity(q, &sp.child("capacity").key(k), errs);
            }
        }
    }

    fn validate_update(&self, old: &Self, errs: &mut FieldErrors) {
        let (Some(new_spec), Some(old_spec)) = (&self.spec, &old.spec) else {
            return;
        };
        let p = Path::root("spec");
        if immutable_part(new_spec) != immutable_part(old_spec) {
            errs.forbidden(
                &p,
                "spec is immutable after creation except resources.requests (for bound claims: \
                 growth, or back down to above status.capacity after a failed expansion), \
                 volumeName (while unset) and volumeAttributesClassName",
            );
        }
        let old_name = old_spec.volume_name.as_deref().unwrap_or_default();
        if !old_name.is_empty() && new_spec.volume_name.as_deref().unwrap_or_default() != old_name {
            errs.forbidden(
                &p.child("volumeName"),
                "volumeName is immutable once the claim names a volume",
            );
        }
        let storage = |s: &PersistentVolumeClaimSpec| {
            s.resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
                .and_then(|q| Quantity::parse(&q.0).ok())
        };
        let rp = p.child("resources").child("requests").key("storage");
        match (storage(new_spec), storage(old_spec)) {
            // Recovery from a failed expansion (Kubernetes' RecoverVolumeExpansionFailure): a
            // request may come down again, but not to or below what the volume already has.
            (Some(after), Some(before)) if after < before => {
                let capacity = old
                    .status
                    .as_ref()
                    .and_then(|s| s.capacity.as_ref())
                    .and_then(|c| c.get("storage"))
                    .and_then(|q| Quantity::parse(&q.0).ok());
                if capacity.is_none_or(|c| after <= c) {
                    errs.forbidden(&rp, "field can not be less than status.capacity");
                }
            }
            (Some(after), Some(before)) if after > before && !is_bound(old) => {
                errs.forbidden(&rp, "only bound claims can be expanded");
            }
            _ => {}
        }
        // A claim's attributes class may change (the provider modifies the volume), but a
        // claim that had one cannot go back to none: what would the volume's attributes be?
        if old_spec.volume_attributes_class_name.is_some()
            && new_spec.volume_attributes_class_name != old_spec.volume_attributes_class_name
        {
            let vp = p.child("volumeAttributesClassName");
            match new_spec.volume_attributes_class_name.as_deref() {
                None => errs.forbidden(&vp, "update from non-nil value to nil is forbidden"),
                Some("") => errs.forbidden(
                    &vp,
                    "update from non-nil value to an empty string is forbidden",
                ),
                Some(_) => {}
            }
        }
        if new_spec.resources.as_ref().and_then(|r| r.limits.as_ref())
            != old_spec.resources.as_ref().and_then(|r| r.limits.as_ref())
        {
            errs.forbidden(&p.child("resources").child("limits"), "field is immutable");
        }
    }

    fn field_value(&self, field: &str) -> Option<String> {
        let spec = self.spec.as_ref();
        match field {
            "status.phase" => Some(raw_phase(self)),
            "spec.storageClassName" => spec.and_then(|s| s.storage_class_name.clone()),
            "spec.volumeName" => spec.and_then(|s| s.volume_name.clone()),
            _ => None,
        }
    }

    fn table_columns() -> &'static [Column] {
        const COLUMNS: &[Column] = &[
            Column::name_column(),
            Column::new(
                "Status",
                "string",
                "phase represents the current phase of PersistentVolumeClaim.",
            ),
            Column::new(
                "Volume",
                "string",
                "volumeName is the binding reference to the PersistentVolume backing this claim.",
            ),
            Column::new(
                "Capacity",
                "string",
                "capacity represents the actual resources of the underlying volume.",
            ),
            Column::new(
                "Access Modes",
                "string",
                "accessModes contains the desired access modes the volume should have.",
            ),
            Column::new(
                "StorageClass",
                "string",
                "storageClassName is the name of the StorageClass required by the claim.",
            ),
            Column::new(
                "VolumeAttributesClass",
                "string",
                "volumeAttributesClassName may be used to set the VolumeAttributesClass used by this claim.",
            ),
            Column::age(),
            Column::new(
                "VolumeMode",
                "string",
                "volumeMode defines what type of volume is required by the claim.",
            )
            .wide(),
        ];
        COLUMNS
    }

    fn table_row(&self, now: jiff::Timestamp) -> Vec<Value> {
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        let bound = status.phase.as_deref() == Some(Phase::Bound.as_str());
        let capacity = if bound {
            status
                .capacity
                .as_ref()
                .and_then(|c| c.get("storage"))
                .map(|q| q.0.clone())
                .unwrap_or_default()
        } else {
            String::new()
        };
        let modes = if bound {
            table::access_modes(status.access_modes.as_ref())
        } else {
            String::new()
        };
        vec![
            table::name(&self.metadata),
            json!(status.phase.unwrap_or_default()),
            json!(spec.volume_name.unwrap_or_default()),
            json!(capacity),
            json!(modes),
            json!(spec.storage_class_name.unwrap_or_default()),
            json!(
                spec.volume_attributes_class_name
                    .unwrap_or_else(|| "<unset>".into())
            ),
            table::meta_age(&self.metadata, now),
            json!(spec.volume_mode.unwrap_or_default()),
        ]
    }
}

/// The phase as written (also one this version does not know), for field selectors.
fn raw_phase(o: &PersistentVolumeClaim) -> String {
    o.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;

    use super::*;

    fn claim(class: Option<&str>) -> PersistentVolumeClaim {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c", "namespace": "a"},
            "spec": {"accessModes": ["ReadWriteOnce"], "volumeAttributesClassName": class,
                     "resources": {"requests": {"storage": "1Gi"}}},
        }))
        .unwrap()
    }

    fn update_errors(old: &PersistentVolumeClaim, new: &PersistentVolumeClaim) -> Vec<String> {
        let mut errs = FieldErrors::new();
        new.validate_update(old, &mut errs);
        errs.0.iter().map(|e| e.field.clone()).collect()
    }

    #[test]
    fn an_attributes_class_may_change_but_not_go_back_to_none() {
        let gold = claim(Some("gold"));
        assert!(update_errors(&gold, &claim(Some("silver"))).is_empty());
        assert!(update_errors(&claim(None), &gold).is_empty());
        assert_eq!(
            update_errors(&gold, &claim(None)),
            ["spec.volumeAttributesClassName"]
        );
        assert_eq!(
            update_errors(&gold, &claim(Some(""))),
            ["spec.volumeAttributesClassName"]
        );
    }

    #[test]
    fn a_request_may_come_down_after_a_failed_expansion_but_not_to_the_capacity() {
        let sized = |request: &str| {
            let mut c = claim(None);
            c.spec
                .as_mut()
                .unwrap()
                .resources
                .as_mut()
                .unwrap()
                .requests = Some(BTreeMap::from([(
                "storage".into(),
                K8sQuantity(request.into()),
            )]));
            c.status = Some(PersistentVolumeClaimStatus {
                phase: Some("Bound".into()),
                capacity: Some(BTreeMap::from([(
                    "storage".into(),
                    K8sQuantity("1Gi".into()),
                )])),
                ..Default::default()
            });
            c
        };
        let failed = sized("100Gi");
        assert!(update_errors(&failed, &sized("2Gi")).is_empty(), "recovery");
        let field = ["spec.resources.requests[storage]"];
        assert_eq!(
            update_errors(&failed, &sized("1Gi")),
            field,
            "to the capacity"
        );
        assert_eq!(update_errors(&failed, &sized("512Mi")), field, "below it");
    }

    #[test]
    fn a_claim_created_with_an_empty_class_can_still_be_updated() {
        let empty = claim(Some(""));
        let mut bound = empty.clone();
        bound.spec.as_mut().unwrap().volume_name = Some("pv-1".into());
        bound.metadata.finalizers = Some(vec![]);
        assert!(update_errors(&empty, &bound).is_empty());
    }
}
