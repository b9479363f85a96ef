//! VolumeSnapshot (snapshot.storage.k8s.io/v1): a point-in-time copy of a claim's volume, which a
//! new claim can name as its `dataSource` to start from. Namespaced, with a status subresource.
//!
//! Kubernetes splits a snapshot over three kinds (VolumeSnapshot, VolumeSnapshotContent,
//! VolumeSnapshotClass). Stowage serves only the first, in the same wire shape, and keeps what
//! Kubernetes puts in the content object in the snapshot's own status, as two Stowage fields:
//! `status.snapshotHandle` (the provider's id) and `status.driver` (the provider). So
//! `spec.volumeSnapshotClassName` and `spec.source.volumeSnapshotContentName` (pre-provisioned
//! snapshots) are refused with a clear error rather than accepted and ignored.

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
    /// Not supported by Stowage (there are no snapshot classes); must be absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotSource {
    /// The claim, in the snapshot's namespace, whose volume is copied. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_name: Option<String>,
    /// Not supported by Stowage (pre-provisioned snapshots); must be absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_content_name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotStatus {
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
    /// Stowage: the provider's id of the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_handle: Option<String>,
    /// Stowage: the provider that holds it; a claim restored from it must use the same one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
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

impl schemars::JsonSchema for VolumeSnapshot {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        Wire::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        Wire::json_schema(generator)
    }
}

impl k8s_openapi::Resource for VolumeSnapshot {
    const API_VERSION: &'static str = "snapshot.storage.k8s.io/v1";
    const GROUP: &'static str = GROUP;
    const KIND: &'static str = KIND;
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "volumesnapshots";
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::Metadata for VolumeSnapshot {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

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
        api_version: "snapshot.storage.k8s.io/v1",
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
        match (
            &source.persistent_volume_claim_name,
            &source.volume_snapshot_content_name,
        ) {
            (_, Some(_)) => errs.forbidden(
                &sp.child("volumeSnapshotContentName"),
                "pre-provisioned snapshots (VolumeSnapshotContent) are not supported; name a claim in persistentVolumeClaimName",
            ),
            (None, None) => errs.required(&sp.child("persistentVolumeClaimName"), ""),
            (Some(claim), None) if claim.is_empty() => {
                errs.required(&sp.child("persistentVolumeClaimName"), "")
            }
            (Some(claim), None) => validate::optional_name(
                Some(claim),
                &sp.child("persistentVolumeClaimName"),
                errs,
            ),
        }
        if self.spec.volume_snapshot_class_name.is_some() {
            errs.forbidden(
                &p.child("volumeSnapshotClassName"),
                "VolumeSnapshotClasses are not supported; the snapshot is taken by the claim's own provider",
            );
        }
        if let Some(size) = self.status.as_ref().and_then(|s| s.restore_size.as_ref()) {
            validate::quantity(size, &Path::root("status").child("restoreSize"), errs);
        }
    }

    fn validate_update(&self, old: &Self, errs: &mut FieldErrors) {
        if self.spec.source != old.spec.source {
            errs.immutable(&Path::root("spec").child("source"));
        }
    }

    fn field_value(&self, field: &str) -> Option<String> {
        match field {
            "spec.source.persistentVolumeClaimName" => source_claim(self).map(str::to_string),
            _ => None,
        }
    }

    fn table_columns() -> &'static [Column] {
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
                "Name of the source PVC from where a dynamically taken snapshot will be created.",
            ),
            Column::new(
                "RestoreSize",
                "string",
                "Represents the minimum size of volume required to rehydrate from this snapshot.",
            ),
            Column::new(
                "SnapshotHandle",
                "string",
                "The provider's id of the snapshot.",
            )
            .wide(),
            Column::new(
                "CreationTime",
                "date",
                "The timestamp when the point-in-time snapshot was taken by the provider.",
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
                status
                    .restore_size
                    .as_ref()
                    .map(|q| q.0.clone())
                    .unwrap_or_default()
            ),
            table::or_none(status.snapshot_handle.as_deref()),
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
    fn content_sources_and_classes_are_refused() {
        let mut s = <VolumeSnapshot as Default>::default();
        s.spec.source.volume_snapshot_content_name = Some("content".into());
        s.spec.volume_snapshot_class_name = Some("csi".into());
        let mut errs = FieldErrors::new();
        s.validate(&mut errs);
        let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.source.volumeSnapshotContentName",
                "spec.volumeSnapshotClassName"
            ]
        );

        let mut errs = FieldErrors::new();
        <VolumeSnapshot as Default>::default().validate(&mut errs);
        let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.source.persistentVolumeClaimName"]);
    }
}
