//! VolumeAttributesClass (storage.k8s.io/v1): a set of mutable volume attributes (IOPS,
//! throughput, a tier) that a claim names in `spec.volumeAttributesClassName`, at creation or
//! later; the provider then modifies the live volume (see [`crate::controllers::modifier`]).
//! Cluster-scoped, no status. Its driver and parameters never change: a new set of
//! attributes is a new class.

use serde_json::{Value, json};

use super::table::{self, Column};
use super::validate;
use super::{KindInfo, KindStrategy, NameRule};
use crate::machinery::validation::{FieldErrors, Path, qualified_name};

pub use k8s_openapi::api::storage::v1::VolumeAttributesClass;

/// The finalizer that keeps a class while claims or volumes name it, as Kubernetes'.
pub const PROTECTION_FINALIZER: &str = "kubernetes.io/vac-protection";

impl KindStrategy for VolumeAttributesClass {
    const INFO: KindInfo = KindInfo {
        kind: "VolumeAttributesClass",
        list_kind: "VolumeAttributesClassList",
        plural: "volumeattributesclasses",
        singular: "volumeattributesclass",
        group: "storage.k8s.io",
        version: "v1",
        api_version: "storage.k8s.io/v1",
        namespaced: false,
        short_names: &["vac"],
        categories: &[],
        has_status: false,
        allow_create_on_update: false,
        name_rule: NameRule::Subdomain,
        field_labels: &["driverName"],
    };

    fn validate(&self, errs: &mut FieldErrors) {
        let p = Path::default();
        // As a StorageClass's provisioner: a qualified name once lowercased.
        if self.driver_name.is_empty() {
            errs.required(&p.child("driverName"), "");
        } else {
            errs.syntax(
                &p.child("driverName"),
                &self.driver_name,
                qualified_name(&self.driver_name.to_ascii_lowercase()),
            );
        }
        validate::class_parameters(
            self.parameters.as_ref(),
            false,
            &p.child("parameters"),
            errs,
        );
    }

    fn validate_update(&self, old: &Self, errs: &mut FieldErrors) {
        let p = Path::default();
        if self.driver_name != old.driver_name {
            errs.forbidden(
                &p.child("driverName"),
                "updates to driverName are forbidden.",
            );
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
            "driverName" => Some(self.driver_name.clone()),
            _ => None,
        }
    }

    fn table_columns() -> &'static [Column] {
        const COLUMNS: &[Column] = &[
            Column::name_column(),
            Column::new(
                "DriverName",
                "string",
                "The driver that modifies volumes to this class.",
            ),
            Column::age(),
        ];
        COLUMNS
    }

    fn table_row(&self, now: jiff::Timestamp) -> Vec<Value> {
        vec![
            table::name(&self.metadata),
            json!(self.driver_name),
            table::meta_age(&self.metadata, now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn class(driver: &str, params: &[(&str, &str)]) -> VolumeAttributesClass {
        VolumeAttributesClass {
            driver_name: driver.into(),
            parameters: Some(
                params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    fn fields(errs: &FieldErrors) -> Vec<&str> {
        errs.0.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn a_class_needs_a_driver_and_at_least_one_parameter() {
        let mut errs = FieldErrors::new();
        class("", &[]).validate(&mut errs);
        assert_eq!(fields(&errs), ["driverName", "parameters"]);
        let mut errs = FieldErrors::new();
        class("ebs.stowage.dev", &[("iops", "4000")]).validate(&mut errs);
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn driver_and_parameters_never_change() {
        let old = class("ebs.stowage.dev", &[("iops", "4000")]);
        let mut new = class("memory.stowage.dev", &[("iops", "5000")]);
        new.metadata.labels = Some(BTreeMap::from([("tier".into(), "gold".into())]));
        let mut errs = FieldErrors::new();
        new.validate_update(&old, &mut errs);
        assert_eq!(fields(&errs), ["driverName", "parameters"]);
    }
}
