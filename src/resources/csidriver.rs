//! CSIDriver (storage.k8s.io/v1): what a storage driver needs from the rest of the cluster.
//! Cluster-scoped, no status. The server keeps one per provider, true to what the provider
//! and Stowage's node agent do (see [`crate::controllers::csi`]); others (drivers run outside
//! Stowage) are stored as given.

use serde_json::{Value, json};

use super::table::{self, Column};
use super::validate;
use super::{KindInfo, KindStrategy, NameRule};
use crate::machinery::validation::{FieldErrors, Path};

pub use k8s_openapi::api::storage::v1::{CSIDriver, CSIDriverSpec};

crate::string_enum! {
    /// Whether the kubelet (here, the node agent) may change a volume's ownership to a pod's
    /// `fsGroup`.
    pub enum FsGroupPolicy { ReadWriteOnceWithFSType, File, None }
}

crate::string_enum! {
    /// How a driver's volumes may be used: as PersistentVolumes, or inline in a pod.
    pub enum LifecycleMode { Persistent, Ephemeral }
}

/// Kubernetes' shortest period between two updates of a node's allocatable count.
const MIN_ALLOCATABLE_UPDATE_SECONDS: i64 = 10;

impl KindStrategy for CSIDriver {
    const INFO: KindInfo = KindInfo {
        kind: "CSIDriver",
        list_kind: "CSIDriverList",
        plural: "csidrivers",
        singular: "csidriver",
        group: "storage.k8s.io",
        version: "v1",
        api_version: "storage.k8s.io/v1",
        namespaced: false,
        short_names: &[],
        categories: &[],
        has_status: false,
        allow_create_on_update: false,
        name_rule: NameRule::Subdomain,
        field_labels: &[],
    };

    /// Kubernetes' defaults (`SetDefaults_CSIDriver`).
    fn default(&mut self) {
        let s = &mut self.spec;
        s.attach_required.get_or_insert(true);
        s.pod_info_on_mount.get_or_insert(false);
        s.storage_capacity.get_or_insert(false);
        s.requires_republish.get_or_insert(false);
        s.se_linux_mount.get_or_insert(false);
        s.fs_group_policy
            .get_or_insert_with(|| FsGroupPolicy::ReadWriteOnceWithFSType.as_str().into());
        if s.volume_lifecycle_modes.as_ref().is_none_or(Vec::is_empty) {
            s.volume_lifecycle_modes = Some(vec![LifecycleMode::Persistent.as_str().into()]);
        }
    }

    fn validate(&self, errs: &mut FieldErrors) {
        // The name is a DNS subdomain (checked with all metadata); a driver name is shorter.
        if self.metadata.name.as_deref().is_some_and(|n| n.len() > 63) {
            errs.too_long(&Path::root("metadata").child("name"), 63);
        }
        let p = Path::root("spec");
        let s = &self.spec;
        validate::one_of(
            s.fs_group_policy.as_ref(),
            FsGroupPolicy::NAMES,
            &p.child("fsGroupPolicy"),
            errs,
        );
        for (i, mode) in s.volume_lifecycle_modes.iter().flatten().enumerate() {
            if LifecycleMode::parse(mode).is_none() {
                errs.not_supported(
                    &p.child("volumeLifecycleModes").index(i),
                    mode,
                    LifecycleMode::NAMES,
                );
            }
        }
        let mut audiences = std::collections::BTreeSet::new();
        for (i, t) in s.token_requests.iter().flatten().enumerate() {
            let tp = p.child("tokenRequests").index(i);
            if !audiences.insert(t.audience.as_str()) {
                errs.duplicate(&tp.child("audience"), &t.audience);
            }
            match t.expiration_seconds {
                Some(secs) if secs < 600 => errs.invalid_raw(
                    &tp.child("expirationSeconds"),
                    secs,
                    "may not specify a duration less than 10 minutes",
                ),
                Some(secs) if secs > 1 << 32 => errs.invalid_raw(
                    &tp.child("expirationSeconds"),
                    secs,
                    "may not specify a duration larger than 2^32 seconds",
                ),
                _ => {}
            }
        }
        if let Some(period) = s.node_allocatable_update_period_seconds
            && period < MIN_ALLOCATABLE_UPDATE_SECONDS
        {
            errs.invalid_raw(
                &p.child("nodeAllocatableUpdatePeriodSeconds"),
                period,
                "must be greater than or equal to 10 seconds",
            );
        }
    }

    /// As Kubernetes: whether volumes attach, and how they may be used, never change under
    /// the volumes already made.
    fn validate_update(&self, old: &Self, errs: &mut FieldErrors) {
        let p = Path::root("spec");
        if self.spec.attach_required != old.spec.attach_required {
            errs.immutable(&p.child("attachRequired"));
        }
        if self.spec.volume_lifecycle_modes != old.spec.volume_lifecycle_modes {
            errs.immutable(&p.child("volumeLifecycleModes"));
        }
    }

    fn table_columns() -> &'static [Column] {
        const COLUMNS: &[Column] = &[
            Column::name_column(),
            Column::new(
                "AttachRequired",
                "boolean",
                "Whether volumes of this driver are attached before they are mounted.",
            ),
            Column::new(
                "PodInfoOnMount",
                "boolean",
                "Whether the driver is told which pod a volume is mounted for.",
            ),
            Column::new(
                "StorageCapacity",
                "boolean",
                "Whether the driver publishes CSIStorageCapacity objects.",
            ),
            Column::new(
                "TokenRequests",
                "string",
                "The audiences of the service account tokens passed to the driver.",
            ),
            Column::new(
                "RequiresRepublish",
                "boolean",
                "Whether volumes are mounted again periodically.",
            ),
            Column::new(
                "Modes",
                "string",
                "How the driver's volumes may be used (Persistent, Ephemeral).",
            ),
            Column::age(),
        ];
        COLUMNS
    }

    fn table_row(&self, now: jiff::Timestamp) -> Vec<Value> {
        let s = &self.spec;
        let audiences: Vec<&str> = s
            .token_requests
            .iter()
            .flatten()
            .map(|t| t.audience.as_str())
            .collect();
        let modes = s.volume_lifecycle_modes.clone().unwrap_or_default();
        vec![
            table::name(&self.metadata),
            json!(s.attach_required.unwrap_or(true)),
            json!(s.pod_info_on_mount.unwrap_or(false)),
            json!(s.storage_capacity.unwrap_or(false)),
            json!(if audiences.is_empty() {
                "<unset>".to_string()
            } else {
                audiences.join(",")
            }),
            json!(s.requires_republish.unwrap_or(false)),
            json!(modes.join(",")),
            table::meta_age(&self.metadata, now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn driver(name: &str) -> CSIDriver {
        let mut d = CSIDriver {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Default::default(),
        };
        d.default();
        d
    }

    fn fields(errs: &FieldErrors) -> Vec<&str> {
        errs.0.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn defaults_are_kubernetes_own() {
        let d = driver("nfs.stowage.dev");
        assert_eq!(d.spec.attach_required, Some(true));
        assert_eq!(d.spec.pod_info_on_mount, Some(false));
        assert_eq!(d.spec.storage_capacity, Some(false));
        assert_eq!(
            d.spec.fs_group_policy.as_deref(),
            Some("ReadWriteOnceWithFSType")
        );
        assert_eq!(
            d.spec.volume_lifecycle_modes,
            Some(vec!["Persistent".into()])
        );
        let mut empty = driver("d.example.com");
        empty.spec.volume_lifecycle_modes = Some(vec![]);
        empty.default();
        assert_eq!(
            empty.spec.volume_lifecycle_modes,
            Some(vec!["Persistent".into()]),
            "an empty list is defaulted too"
        );
        let mut errs = FieldErrors::new();
        d.validate(&mut errs);
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn bad_names_policies_modes_and_periods_are_refused() {
        let mut d = driver("nfs.example.com");
        d.spec.fs_group_policy = Some("Always".into());
        d.spec.volume_lifecycle_modes = Some(vec!["Persistent".into(), "Inline".into()]);
        d.spec.node_allocatable_update_period_seconds = Some(5);
        let mut errs = FieldErrors::new();
        d.validate(&mut errs);
        assert_eq!(
            fields(&errs),
            [
                "spec.fsGroupPolicy",
                "spec.volumeLifecycleModes[1]",
                "spec.nodeAllocatableUpdatePeriodSeconds"
            ]
        );
        let mut errs = FieldErrors::new();
        driver(&"d".repeat(64)).validate(&mut errs);
        assert_eq!(fields(&errs), ["metadata.name"]);
    }

    #[test]
    fn attach_required_and_modes_are_immutable_the_rest_is_not() {
        let old = driver("d.example.com");
        let mut new = old.clone();
        new.spec.attach_required = Some(false);
        new.spec.volume_lifecycle_modes = Some(vec!["Ephemeral".into()]);
        new.spec.storage_capacity = Some(true);
        new.spec.pod_info_on_mount = Some(true);
        let mut errs = FieldErrors::new();
        new.validate_update(&old, &mut errs);
        assert_eq!(
            fields(&errs),
            ["spec.attachRequired", "spec.volumeLifecycleModes"]
        );
    }
}
