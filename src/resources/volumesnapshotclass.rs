//! VolumeSnapshotClass (snapshot.storage.k8s.io/v1): how snapshots of one driver's volumes are
//! taken, as external-snapshotter defines it. Cluster-scoped, fields at the top level.
//!
//! - `driver` (the provider) and `parameters` (passed to it) are immutable, as a StorageClass's;
//!   `deletionPolicy` (Delete or Retain) may change and applies to snapshots taken afterwards.
//! - The annotation `snapshot.storage.kubernetes.io/is-default-class: "true"` makes a class the
//!   default for its driver. Where several are, the newest wins (as StorageClasses since
//!   Kubernetes 1.26) instead of every snapshot failing, as external-snapshotter does.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::table::{self, Column};
use super::validate;
use super::{KindInfo, KindStrategy, NameRule};
use crate::machinery::validation::{FieldErrors, Path};

pub const KIND: &str = "VolumeSnapshotClass";
/// The annotation that makes a class its driver's default.
pub const DEFAULT_ANNOTATION: &str = "snapshot.storage.kubernetes.io/is-default-class";

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotClass {
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The provider that takes the snapshots. Immutable.
    #[serde(default)]
    pub driver: String,
    /// Passed to the provider's snapshot call, as given. Immutable.
    #[serde(default)]
    pub parameters: Option<BTreeMap<String, String>>,
    /// What happens to the provider's snapshot when its VolumeSnapshot is deleted: `Delete` or
    /// `Retain`.
    #[serde(default)]
    pub deletion_policy: String,
}

/// The wire form, with `apiVersion` and `kind`; also the source of the published schema.
#[derive(Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "io.k8s.api.snapshot.v1.VolumeSnapshotClass")]
#[schemars(description = "How snapshots of one driver's volumes are taken.")]
struct Wire<'a> {
    api_version: &'a str,
    kind: &'a str,
    metadata: &'a ObjectMeta,
    driver: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: &'a Option<BTreeMap<String, String>>,
    deletion_policy: &'a str,
}

impl Serialize for VolumeSnapshotClass {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            api_version: super::volumesnapshot::API_VERSION,
            kind: KIND,
            metadata: &self.metadata,
            driver: &self.driver,
            parameters: &self.parameters,
            deletion_policy: &self.deletion_policy,
        }
        .serialize(s)
    }
}

impl VolumeSnapshotClass {
    pub fn new(name: &str, driver: &str, deletion_policy: &str) -> Self {
        VolumeSnapshotClass {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            driver: driver.to_string(),
            parameters: None,
            deletion_policy: deletion_policy.to_string(),
        }
    }
}

/// Whether the class is its driver's default.
pub fn is_default(c: &VolumeSnapshotClass) -> bool {
    c.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_ANNOTATION))
        .is_some_and(|v| v == "true")
}

super::volumesnapshot::snapshot_kind!(
    VolumeSnapshotClass,
    KIND,
    "volumesnapshotclasses",
    k8s_openapi::ClusterResourceScope
);

/// The deletion policies of classes and contents.
pub const DELETION_POLICIES: &[&str] = &["Delete", "Retain"];

impl KindStrategy for VolumeSnapshotClass {
    const INFO: KindInfo = KindInfo {
        kind: KIND,
        list_kind: "VolumeSnapshotClassList",
        plural: "volumesnapshotclasses",
        singular: "volumesnapshotclass",
        group: super::volumesnapshot::GROUP,
        version: "v1",
        api_version: super::volumesnapshot::API_VERSION,
        namespaced: false,
        short_names: &["vsclass", "vsclasses"],
        categories: &[],
        has_status: false,
        allow_create_on_update: false,
        name_rule: NameRule::Subdomain,
        field_labels: &["driver"],
    };

    fn validate(&self, errs: &mut FieldErrors) {
        let p = Path::default();
        validate::csi_driver_name(&self.driver, &p.child("driver"), errs);
        validate::class_parameters(self.parameters.as_ref(), true, &p.child("parameters"), errs);
        if self.deletion_policy.is_empty() {
            errs.required(&p.child("deletionPolicy"), "");
        } else {
            validate::one_of(
                Some(&self.deletion_policy),
                DELETION_POLICIES,
                &p.child("deletionPolicy"),
                errs,
            );
        }
    }

    fn validate_update(&self, old: &Self, errs: &mut FieldErrors) {
        let p = Path::default();
        if self.driver != old.driver {
            errs.forbidden(&p.child("driver"), "updates to driver are forbidden.");
        }
        if self.parameters.clone().unwrap_or_default() != old.parameters.clone().unwrap_or_default()
        {
            errs.forbidden(
                &p.child("parameters"),
                "updates to parameters are forbidden.",
            );
        }
    }

    fn field_value(&self, field: &str) -> Option<String> {
        match field {
            "driver" => Some(self.driver.clone()),
            _ => None,
        }
    }

    fn table_columns() -> &'static [Column] {
        const COLUMNS: &[Column] = &[
            Column::name_column(),
            Column::new("Driver", "string", "The driver that takes the snapshots."),
            Column::new(
                "DeletionPolicy",
                "string",
                "Whether the provider's snapshot is deleted with its VolumeSnapshot.",
            ),
            Column::age(),
        ];
        COLUMNS
    }

    fn table_row(&self, now: jiff::Timestamp) -> Vec<Value> {
        let name = table::name(&self.metadata);
        let name = match (is_default(self), name) {
            (true, Value::String(n)) => json!(format!("{n} (default)")),
            (_, n) => n,
        };
        vec![
            name,
            json!(self.driver),
            json!(self.deletion_policy),
            table::meta_age(&self.metadata, now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(errs: &FieldErrors) -> Vec<&str> {
        errs.0.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn wire_form_is_external_snapshotters() {
        let mut c = VolumeSnapshotClass::new("csi", "local.stowage.dev", "Retain");
        c.parameters = Some(BTreeMap::from([("a".into(), "b".into())]));
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["apiVersion"], "snapshot.storage.k8s.io/v1");
        assert_eq!(v["kind"], "VolumeSnapshotClass");
        assert_eq!(v["driver"], "local.stowage.dev");
        assert_eq!(v["deletionPolicy"], "Retain");
        let back: VolumeSnapshotClass = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn driver_and_policy_are_required_and_checked() {
        let mut errs = FieldErrors::new();
        VolumeSnapshotClass::new("c", "", "").validate(&mut errs);
        assert_eq!(fields(&errs), ["driver", "deletionPolicy"]);
        let mut errs = FieldErrors::new();
        VolumeSnapshotClass::new("c", "Not A Driver!", "Sometimes").validate(&mut errs);
        assert_eq!(fields(&errs), ["driver", "deletionPolicy"]);
        let mut errs = FieldErrors::new();
        VolumeSnapshotClass::new("c", "ebs.stowage.dev", "Delete").validate(&mut errs);
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn driver_and_parameters_are_immutable_and_the_policy_is_not() {
        let old = VolumeSnapshotClass::new("c", "ebs.stowage.dev", "Delete");
        let mut new = old.clone();
        new.deletion_policy = "Retain".into();
        let mut errs = FieldErrors::new();
        new.validate_update(&old, &mut errs);
        assert!(errs.is_empty());
        new.driver = "local.stowage.dev".into();
        new.parameters = Some(BTreeMap::from([("x".into(), "y".into())]));
        let mut errs = FieldErrors::new();
        new.validate_update(&old, &mut errs);
        assert_eq!(fields(&errs), ["driver", "parameters"]);
    }
}
