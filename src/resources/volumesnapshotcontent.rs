//! VolumeSnapshotContent (snapshot.storage.k8s.io/v1): a snapshot as the provider holds it,
//! bound one-to-one to a VolumeSnapshot. Cluster-scoped, with a status subresource; as in
//! Kubernetes, only admins (and the controllers) see it.
//!
//! - Dynamic: the controller makes `snapcontent-<VolumeSnapshot uid>` with `source.volumeHandle`,
//!   and the provider's snapshot id lands in `status.snapshotHandle`.
//! - Pre-provisioned: an admin makes one with `source.snapshotHandle` (an existing provider
//!   snapshot, e.g. from a backup) and a `volumeSnapshotRef` naming the VolumeSnapshot that may
//!   bind it; the controller checks the snapshot exists and fills in the status.
//!
//! `deletionPolicy` says whether the provider's snapshot goes with the content (`Delete`) or
//! stays (`Retain`); it may change, which is how Velero keeps a snapshot past its VolumeSnapshot.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::table::{self, Column};
use super::validate;
use super::volumesnapshot::{VolumeSnapshotError, snapshot_kind};
use super::volumesnapshotclass::DELETION_POLICIES;
use super::{KindInfo, KindStrategy, NameRule};
use crate::machinery::validation::{FieldErrors, Path};

pub const KIND: &str = "VolumeSnapshotContent";

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct VolumeSnapshotContent {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: VolumeSnapshotContentSpec,
    #[serde(default)]
    pub status: Option<VolumeSnapshotContentStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotContentSpec {
    /// The VolumeSnapshot this content is bound to (name and namespace; uid once bound).
    #[serde(default)]
    pub volume_snapshot_ref: ObjectReference,
    /// `Delete` or `Retain`: what happens to the provider's snapshot when this content goes.
    #[serde(default)]
    pub deletion_policy: String,
    /// The provider that holds the snapshot.
    #[serde(default)]
    pub driver: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
    /// Exactly one of a volume to snapshot and an existing snapshot. Immutable.
    #[serde(default)]
    pub source: VolumeSnapshotContentSource,
    /// `Filesystem` or `Block`: the source volume's mode. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_volume_mode: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotContentSource {
    /// The provider's handle of the volume to snapshot (dynamic snapshots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_handle: Option<String>,
    /// The provider's id of an existing snapshot (pre-provisioned snapshots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_handle: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotContentStatus {
    /// The provider's id of the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_handle: Option<String>,
    /// When the provider cut it, in nanoseconds since the epoch (as CSI reports it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<i64>,
    /// The smallest volume it restores into, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    /// The last failure, if the snapshot could not be made or found (yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<VolumeSnapshotError>,
}

/// The wire form, with `apiVersion` and `kind`; also the source of the published schema.
#[derive(Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "io.k8s.api.snapshot.v1.VolumeSnapshotContent")]
#[schemars(description = "A snapshot as the provider holds it, bound to one VolumeSnapshot.")]
struct Wire<'a> {
    api_version: &'a str,
    kind: &'a str,
    metadata: &'a ObjectMeta,
    spec: &'a VolumeSnapshotContentSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: &'a Option<VolumeSnapshotContentStatus>,
}

impl Serialize for VolumeSnapshotContent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            api_version: super::volumesnapshot::API_VERSION,
            kind: KIND,
            metadata: &self.metadata,
            spec: &self.spec,
            status: &self.status,
        }
        .serialize(s)
    }
}

snapshot_kind!(
    VolumeSnapshotContent,
    KIND,
    "volumesnapshotcontents",
    k8s_openapi::ClusterResourceScope
);

impl VolumeSnapshotContent {
    /// The namespace and name of the VolumeSnapshot it is for.
    pub fn snapshot_ref(&self) -> (&str, &str) {
        let r = &self.spec.volume_snapshot_ref;
        (
            r.namespace.as_deref().unwrap_or_default(),
            r.name.as_deref().unwrap_or_default(),
        )
    }

    pub fn is_ready(&self) -> bool {
        self.status
            .as_ref()
            .and_then(|s| s.ready_to_use)
            .unwrap_or(false)
    }

    pub fn retains(&self) -> bool {
        self.spec.deletion_policy == "Retain"
    }
}

impl KindStrategy for VolumeSnapshotContent {
    const INFO: KindInfo = KindInfo {
        kind: KIND,
        list_kind: "VolumeSnapshotContentList",
        plural: "volumesnapshotcontents",
        singular: "volumesnapshotcontent",
        group: super::volumesnapshot::GROUP,
        version: "v1",
        api_version: super::volumesnapshot::API_VERSION,
        namespaced: false,
        short_names: &["vsc", "vscs"],
        categories: &[],
        has_status: true,
        allow_create_on_update: false,
        name_rule: NameRule::Subdomain,
        field_labels: &["spec.driver"],
    };

    fn validate(&self, errs: &mut FieldErrors) {
        let p = Path::root("spec");
        let r = &self.spec.volume_snapshot_ref;
        let rp = p.child("volumeSnapshotRef");
        for (field, value) in [("name", &r.name), ("namespace", &r.namespace)] {
            match value.as_deref() {
                None | Some("") => errs.required(
                    &rp.child(field),
                    "both spec.volumeSnapshotRef.name and spec.volumeSnapshotRef.namespace must be set",
                ),
                Some(v) => validate::optional_name(Some(&v.to_string()), &rp.child(field), errs),
            }
        }
        if self.spec.deletion_policy.is_empty() {
            errs.required(&p.child("deletionPolicy"), "");
        } else {
            validate::one_of(
                Some(&self.spec.deletion_policy),
                DELETION_POLICIES,
                &p.child("deletionPolicy"),
                errs,
            );
        }
        validate::csi_driver_name(&self.spec.driver, &p.child("driver"), errs);
        let source = &self.spec.source;
        let given = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.is_empty());
        if given(&source.volume_handle) == given(&source.snapshot_handle) {
            errs.required(
                &p.child("source"),
                "exactly one of volumeHandle and snapshotHandle must be set",
            );
        }
        for (field, value) in [
            ("volumeHandle", &source.volume_handle),
            ("snapshotHandle", &source.snapshot_handle),
        ] {
            if let Some(v) = value
                && v.len() > 1024
            {
                errs.too_long(&p.child("source").child(field), 1024);
            }
        }
        validate::one_of(
            self.spec.source_volume_mode.as_ref(),
            &["Filesystem", "Block"],
            &p.child("sourceVolumeMode"),
            errs,
        );
        validate::optional_name(
            self.spec.volume_snapshot_class_name.as_ref(),
            &p.child("volumeSnapshotClassName"),
            errs,
        );
        if let Some(size) = self.status.as_ref().and_then(|s| s.restore_size)
            && size < 0
        {
            errs.invalid(
                &Path::root("status").child("restoreSize"),
                &size.to_string(),
                "must be greater than or equal to 0",
            );
        }
    }

    fn validate_update(&self, old: &Self, errs: &mut FieldErrors) {
        let p = Path::root("spec");
        if self.spec.source != old.spec.source {
            errs.immutable(&p.child("source"));
        }
        if old.spec.source_volume_mode.is_some()
            && self.spec.source_volume_mode != old.spec.source_volume_mode
        {
            errs.immutable(&p.child("sourceVolumeMode"));
        }
        let (r, o) = (
            &self.spec.volume_snapshot_ref,
            &old.spec.volume_snapshot_ref,
        );
        // Once bound (a uid), the content stays with its snapshot.
        if o.uid.as_deref().is_some_and(|u| !u.is_empty())
            && (r.uid != o.uid || r.name != o.name || r.namespace != o.namespace)
        {
            errs.immutable(&p.child("volumeSnapshotRef"));
        }
    }

    fn field_value(&self, field: &str) -> Option<String> {
        match field {
            "spec.driver" => Some(self.spec.driver.clone()),
            _ => None,
        }
    }

    fn table_columns() -> &'static [Column] {
        // external-snapshotter's printer columns.
        const COLUMNS: &[Column] = &[
            Column::name_column(),
            Column::new(
                "ReadyToUse",
                "boolean",
                "Indicates if a snapshot is ready to be used to restore a volume.",
            ),
            Column::new(
                "RestoreSize",
                "integer",
                "Represents the complete size of the snapshot in bytes",
            ),
            Column::new(
                "DeletionPolicy",
                "string",
                "Determines whether this VolumeSnapshotContent and its physical snapshot on the underlying storage system should be deleted when its bound VolumeSnapshot is deleted.",
            ),
            Column::new(
                "Driver",
                "string",
                "Name of the CSI driver used to create the physical snapshot on the underlying storage system.",
            ),
            Column::new(
                "VolumeSnapshotClass",
                "string",
                "Name of the VolumeSnapshotClass to which this snapshot belongs.",
            ),
            Column::new(
                "VolumeSnapshot",
                "string",
                "Name of the VolumeSnapshot object to which this VolumeSnapshotContent object is bound.",
            ),
            Column::new(
                "VolumeSnapshotNamespace",
                "string",
                "Namespace of the VolumeSnapshot object to which this VolumeSnapshotContent object is bound.",
            ),
            Column::age(),
        ];
        COLUMNS
    }

    fn table_row(&self, now: jiff::Timestamp) -> Vec<Value> {
        let (namespace, name) = self.snapshot_ref();
        vec![
            table::name(&self.metadata),
            json!(self.is_ready()),
            json!(self.status.as_ref().and_then(|s| s.restore_size)),
            json!(self.spec.deletion_policy),
            json!(self.spec.driver),
            json!(
                self.spec
                    .volume_snapshot_class_name
                    .as_deref()
                    .unwrap_or_default()
            ),
            json!(name),
            json!(namespace),
            table::meta_age(&self.metadata, now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content() -> VolumeSnapshotContent {
        VolumeSnapshotContent {
            metadata: ObjectMeta {
                name: Some("c".into()),
                ..Default::default()
            },
            spec: VolumeSnapshotContentSpec {
                volume_snapshot_ref: ObjectReference {
                    name: Some("snap".into()),
                    namespace: Some("ns".into()),
                    ..Default::default()
                },
                deletion_policy: "Delete".into(),
                driver: "ebs.stowage.dev".into(),
                volume_snapshot_class_name: None,
                source: VolumeSnapshotContentSource {
                    volume_handle: None,
                    snapshot_handle: Some("snap-0123".into()),
                },
                source_volume_mode: None,
            },
            status: None,
        }
    }

    fn fields(c: &VolumeSnapshotContent) -> Vec<String> {
        let mut errs = FieldErrors::new();
        c.validate(&mut errs);
        errs.0.iter().map(|e| e.field.clone()).collect()
    }

    #[test]
    fn wire_form_round_trips() {
        let c = content();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["apiVersion"], "snapshot.storage.k8s.io/v1");
        assert_eq!(v["kind"], "VolumeSnapshotContent");
        assert_eq!(v["spec"]["source"]["snapshotHandle"], "snap-0123");
        assert_eq!(v["spec"]["volumeSnapshotRef"]["namespace"], "ns");
        let back: VolumeSnapshotContent = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn a_content_needs_its_snapshot_a_policy_a_driver_and_one_source() {
        assert!(fields(&content()).is_empty());
        let mut c = content();
        c.spec.volume_snapshot_ref.namespace = None;
        c.spec.deletion_policy = "Sometimes".into();
        c.spec.driver = String::new();
        c.spec.source.volume_handle = Some("vol-1".into());
        assert_eq!(
            fields(&c),
            [
                "spec.volumeSnapshotRef.namespace",
                "spec.deletionPolicy",
                "spec.driver",
                "spec.source"
            ]
        );
        c.spec.source = VolumeSnapshotContentSource::default();
        assert!(fields(&c).contains(&"spec.source".to_string()));
    }

    #[test]
    fn the_source_and_a_bound_reference_are_immutable_and_the_policy_is_not() {
        let mut old = content();
        old.spec.volume_snapshot_ref.uid = Some("u1".into());
        let mut new = old.clone();
        new.spec.deletion_policy = "Retain".into();
        let mut errs = FieldErrors::new();
        new.validate_update(&old, &mut errs);
        assert!(errs.is_empty());
        new.spec.source.snapshot_handle = Some("snap-other".into());
        new.spec.volume_snapshot_ref.name = Some("other".into());
        let mut errs = FieldErrors::new();
        new.validate_update(&old, &mut errs);
        let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.source", "spec.volumeSnapshotRef"]);
    }
}
