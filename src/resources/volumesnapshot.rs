//! VolumeSnapshot (snapshot.storage.k8s.io/v1): a user's request for a point-in-time copy of a
//! claim's volume, which a new claim can name as its `dataSource` to start from. Namespaced,
//! with a status subresource.
//!
//! As in external-snapshotter, the snapshot itself is a cluster-scoped VolumeSnapshotContent
//! ([`super::volumesnapshotcontent`]), bound one-to-one to its VolumeSnapshot: dynamically
//! (the source is a claim, and the controller makes the content) or pre-provisioned (the source
//! names an existing content, which must name this snapshot back).

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::table::{self, Column};
use super::validate;
use super::{KindInfo, KindStrategy, NameRule};
use crate::machinery::validation::{FieldErrors, Path};

pub const GROUP: &str = "snapshot.storage.k8s.io";
pub const API_VERSION: &str = "snapshot.storage.k8s.io/v1";
pub const KIND: &str = "VolumeSnapshot";

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct VolumeSnapshot {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: VolumeSnapshotSpec,
    #[serde(default)]
    pub status: Option<VolumeSnapshotStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotSpec {
    /// What to snapshot.
    #[serde(default)]
    pub source: VolumeSnapshotSource,
    /// The VolumeSnapshotClass to take it with; unset: the default class of the claim's
    /// driver, which the controller then writes here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotSource {
    /// The claim, in the snapshot's namespace, whose volume is copied (a dynamic snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_name: Option<String>,
    /// An existing VolumeSnapshotContent to bind to (a pre-provisioned snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_content_name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotStatus {
    /// The VolumeSnapshotContent this snapshot is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_volume_snapshot_content_name: Option<String>,
    /// When the provider cut the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<Time>,
    /// Whether a claim can be restored from it now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    /// The smallest claim it can be restored into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_size: Option<Quantity>,
    /// The last failure, if the snapshot could not be made (yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<VolumeSnapshotError>,
    /// Read from snapshots stored by Stowage before VolumeSnapshotContents existed (it kept the
    /// provider's id here), so that they get a content; never written.
    #[serde(default, rename = "snapshotHandle", skip_serializing)]
    #[schemars(skip)]
    pub legacy_snapshot_handle: Option<String>,
    /// As `legacy_snapshot_handle`: the provider that held it.
    #[serde(default, rename = "driver", skip_serializing)]
    #[schemars(skip)]
    pub legacy_driver: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotError {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}

/// The wire form, with `apiVersion` and `kind` as every Kubernetes object has them; also the
/// source of the published schema.
#[derive(Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "io.k8s.api.snapshot.v1.VolumeSnapshot")]
#[schemars(description = "A point-in-time copy of a claim's volume.")]
struct Wire<'a> {
    api_version: &'a str,
    kind: &'a str,
    metadata: &'a ObjectMeta,
    spec: &'a VolumeSnapshotSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: &'a Option<VolumeSnapshotStatus>,
}

impl Serialize for VolumeSnapshot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct(KIND, 5)?;
        st.serialize_field("apiVersion", <Self as k8s_openapi::Resource>::API_VERSION)?;
        st.serialize_field("kind", KIND)?;
        st.serialize_field("metadata", &self.metadata)?;
        st.serialize_field("spec", &self.spec)?;
        if let Some(status) = &self.status {
            st.serialize_field("status", status)?;
        }
        st.end()
    }
}

/// The trait impls every snapshot.storage.k8s.io kind has alike: `k8s_openapi::Resource`,
/// `k8s_openapi::Metadata`, and the schema of its module's `Wire` form.
macro_rules! snapshot_kind {
    ($ty:ty, $kind:expr, $plural:expr, $scope:ty) => {
        impl schemars::JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                Wire::schema_name()
            }

            fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
                Wire::json_schema(generator)
            }
        }

        impl k8s_openapi::Resource for $ty {
            const API_VERSION: &'static str = $crate::resources::volumesnapshot::API_VERSION;
            const GROUP: &'static str = $crate::resources::volumesnapshot::GROUP;
            const KIND: &'static str = $kind;
            const VERSION: &'static str = "v1";
            const URL_PATH_SEGMENT: &'static str = $plural;
            type Scope = $scope;
        }

        impl k8s_openapi::Metadata for $ty {
            type Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

            fn metadata(&self) -> &Self::Ty {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut Self::Ty {
                &mut self.metadata
            }
        }
    };
}
pub(crate) use snapshot_kind;

snapshot_kind!(
    VolumeSnapshot,
    KIND,
    "volumesnapshots",
    k8s_openapi::NamespaceResourceScope
);

/// The claim a snapshot copies.
pub fn source_claim(s: &VolumeSnapshot) -> Option<&str> {
    s.spec.source.persistent_volume_claim_name.as_deref()
}

pub fn is_ready(s: &VolumeSnapshot) -> bool {
    s.status
        .as_ref()
        .and_then(|st| st.ready_to_use)
        .unwrap_or(false)
}

impl KindStrategy for VolumeSnapshot {
    const INFO: KindInfo = KindInfo {
        kind: KIND,
        list_kind: "VolumeSnapshotList",
        plural: "volumesnapshots",
        singular: "volumesnapshot",
        group: GROUP,
        version: "v1",
        api_version: API_VERSION,
        namespaced: true,
        short_names: &["vs"],
        categories: &[],
        has_status: true,
        allow_create_on_update: false,
        name_rule: NameRule::Subdomain,
        field_labels: &["spec.source.persistentVolumeClaimName"],
    };

    fn prepare_for_create(&mut self) {
        self.status = None;
    }

    fn validate(&self, errs: &mut FieldErrors) {
        let p = Path::root("spec");
        let source = &self.spec.source;
        let sp = p.child("source");
        let claim = source
            .persistent_volume_claim_name
            .as_ref()
            .filter(|n| !n.is_empty());
        let content = source
            .volume_snapshot_content_name
            .as_ref()
            .filter(|n| !n.is_empty());
        match (claim, content) {
            (Some(_), Some(_)) => errs.forbidden(
                &sp,
                "exactly one of volumeSnapshotContentName and persistentVolumeClaimName must be set",
            ),
            (None, None) => errs.required(
                &sp,
                "exactly one of volumeSnapshotContentName and persistentVolumeClaimName must be set",
            ),
            (Some(claim), None) => validate::optional_name(
                Some(claim),
                &sp.child("persistentVolumeClaimName"),
                errs,
            ),
            (None, Some(content)) => validate::optional_name(
                Some(content),
                &sp.child("volumeSnapshotContentName"),
                errs,
            ),
        }
        match &self.spec.volume_snapshot_class_name {
            Some(c) if c.is_empty() => errs.invalid(
                &p.child("volumeSnapshotClassName"),
                "",
                "volumeSnapshotClassName must not be the empty string when set",
            ),
            c => validate::optional_name(c.as_ref(), &p.child("volumeSnapshotClassName"), errs),
        }
        if let Some(size) = self.status.as_ref().and_then(|s| s.restore_size.as_ref()) {
            validate::quantity(size, &Path::root("status").child("restoreSize"), errs);
        }
    }

    fn validate_update(&self, old: &Self, errs: &mut FieldErrors) {
        if self.spec.source != old.spec.source {
            errs.immutable(&Path::root("spec").child("source"));
        }
        // The class may be filled in (the controller writes the default), never changed.
        if old.spec.volume_snapshot_class_name.is_some()
            && self.spec.volume_snapshot_class_name != old.spec.volume_snapshot_class_name
        {
            errs.immutable(&Path::root("spec").child("volumeSnapshotClassName"));
        }
    }

    fn field_value(&self, field: &str) -> Option<String> {
        match field {
            "spec.source.persistentVolumeClaimName" => source_claim(self).map(str::to_string),
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
                "Indicates if the snapshot is ready to be used to restore a volume.",
            ),
            Column::new(
                "SourcePVC",
                "string",
                "If a new snapshot needs to be created, this contains the name of the source PVC from which this snapshot was (or will be) created.",
            ),
            Column::new(
                "SourceSnapshotContent",
                "string",
                "If a snapshot already exists, this contains the name of the existing VolumeSnapshotContent object representing the existing snapshot.",
            ),
            Column::new(
                "RestoreSize",
                "string",
                "Represents the minimum size of volume required to rehydrate from this snapshot.",
            ),
            Column::new(
                "SnapshotClass",
                "string",
                "The name of the VolumeSnapshotClass requested by the VolumeSnapshot.",
            ),
            Column::new(
                "SnapshotContent",
                "string",
                "Name of the VolumeSnapshotContent object to which the VolumeSnapshot object intends to bind to. Please note that verification of binding actually requires checking both VolumeSnapshot and VolumeSnapshotContent to ensure both are pointing at each other. Binding MUST be verified prior to usage of this object.",
            ),
            Column::new(
                "CreationTime",
                "date",
                "Timestamp when the point-in-time snapshot was taken by the underlying storage system.",
            ),
            Column::age(),
        ];
        COLUMNS
    }

    fn table_row(&self, now: jiff::Timestamp) -> Vec<Value> {
        let status = self.status.clone().unwrap_or_default();
        vec![
            table::name(&self.metadata),
            json!(is_ready(self)),
            json!(source_claim(self).unwrap_or_default()),
            json!(
                self.spec
                    .source
                    .volume_snapshot_content_name
                    .as_deref()
                    .unwrap_or_default()
            ),
            json!(
                status
                    .restore_size
                    .as_ref()
                    .map(|q| q.0.clone())
                    .unwrap_or_default()
            ),
            json!(
                self.spec
                    .volume_snapshot_class_name
                    .as_deref()
                    .unwrap_or_default()
            ),
            json!(
                status
                    .bound_volume_snapshot_content_name
                    .as_deref()
                    .unwrap_or_default()
            ),
            table::age(status.creation_time.as_ref(), now),
            table::meta_age(&self.metadata, now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_has_api_version_and_kind_and_round_trips() {
        let s = VolumeSnapshot {
            metadata: ObjectMeta {
                name: Some("snap".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            spec: VolumeSnapshotSpec {
                source: VolumeSnapshotSource {
                    persistent_volume_claim_name: Some("data".into()),
                    volume_snapshot_content_name: None,
                },
                volume_snapshot_class_name: None,
            },
            status: None,
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["apiVersion"], "snapshot.storage.k8s.io/v1");
        assert_eq!(v["kind"], "VolumeSnapshot");
        assert_eq!(v["spec"]["source"]["persistentVolumeClaimName"], "data");
        assert!(v.get("status").is_none());
        let back: VolumeSnapshot = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn exactly_one_source_is_required() {
        let fields = |s: &VolumeSnapshot| {
            let mut errs = FieldErrors::new();
            s.validate(&mut errs);
            errs.0.iter().map(|e| e.field.clone()).collect::<Vec<_>>()
        };
        let mut s = <VolumeSnapshot as Default>::default();
        assert_eq!(fields(&s), ["spec.source"]);
        s.spec.source.volume_snapshot_content_name = Some("content".into());
        assert!(fields(&s).is_empty());
        s.spec.source.persistent_volume_claim_name = Some("data".into());
        assert_eq!(fields(&s), ["spec.source"]);
        s.spec.source.volume_snapshot_content_name = None;
        s.spec.volume_snapshot_class_name = Some(String::new());
        assert_eq!(fields(&s), ["spec.volumeSnapshotClassName"]);
    }

    #[test]
    fn the_class_may_be_filled_in_but_not_changed() {
        let mut old = <VolumeSnapshot as Default>::default();
        old.spec.source.persistent_volume_claim_name = Some("data".into());
        let mut new = old.clone();
        new.spec.volume_snapshot_class_name = Some("csi".into());
        let mut errs = FieldErrors::new();
        new.validate_update(&old, &mut errs);
        assert!(errs.is_empty());
        let mut newer = new.clone();
        newer.spec.volume_snapshot_class_name = Some("other".into());
        newer.spec.source.persistent_volume_claim_name = Some("else".into());
        let mut errs = FieldErrors::new();
        newer.validate_update(&new, &mut errs);
        let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.source", "spec.volumeSnapshotClassName"]);
    }

    #[test]
    fn legacy_status_fields_are_read_and_never_written() {
        let s: VolumeSnapshot = serde_json::from_value(serde_json::json!({
            "spec": {"source": {"persistentVolumeClaimName": "data"}},
            "status": {"snapshotHandle": "snap-1", "driver": "ebs.stowage.dev", "readyToUse": true}
        }))
        .unwrap();
        let status = s.status.clone().unwrap();
        assert_eq!(status.legacy_snapshot_handle.as_deref(), Some("snap-1"));
        assert_eq!(status.legacy_driver.as_deref(), Some("ebs.stowage.dev"));
        let v = serde_json::to_value(&s).unwrap();
        assert!(v["status"].get("snapshotHandle").is_none());
        assert!(v["status"].get("driver").is_none());
    }
}
