//! StorageClass: how volumes of a class are provisioned. Cluster-scoped, no status.

use serde_json::{Value, json};

use super::table::{self, Column};
use super::validate;
use super::{KindInfo, KindStrategy, NameRule, StorageClass};
use crate::machinery::validation::{FieldErrors, Path, label_value, qualified_name};

/// The annotation that marks the default class.
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
/// The older annotation Kubernetes still honours.
pub const BETA_DEFAULT_CLASS_ANNOTATION: &str = "storageclass.beta.kubernetes.io/is-default-class";

pub use super::pv::ReclaimPolicy;

crate::string_enum! {
    /// When a class's claims are bound or provisioned.
    pub enum BindingMode { Immediate, WaitForFirstConsumer }
}

/// The reclaim policies a class may give (Recycle is deprecated and refused).
const CLASS_RECLAIM_POLICIES: &[&str] = &["Delete", "Retain"];

pub fn is_default(sc: &StorageClass) -> bool {
    sc.metadata.annotations.as_ref().is_some_and(|a| {
        a.get(DEFAULT_CLASS_ANNOTATION).map(String::as_str) == Some("true")
            || a.get(BETA_DEFAULT_CLASS_ANNOTATION).map(String::as_str) == Some("true")
    })
}

pub fn binding_mode(sc: &StorageClass) -> BindingMode {
    sc.volume_binding_mode
        .as_deref()
        .and_then(BindingMode::parse)
        .unwrap_or(BindingMode::Immediate)
}

pub fn is_wait_for_first_consumer(sc: &StorageClass) -> bool {
    binding_mode(sc) == BindingMode::WaitForFirstConsumer
}

/// The reclaim policy of volumes the class makes (Kubernetes' default: Delete).
pub fn reclaim_policy(sc: &StorageClass) -> ReclaimPolicy {
    sc.reclaim_policy
        .as_deref()
        .and_then(ReclaimPolicy::parse)
        .unwrap_or(ReclaimPolicy::Delete)
}

impl KindStrategy for StorageClass {
    const INFO: KindInfo = KindInfo {
        kind: "StorageClass",
        list_kind: "StorageClassList",
        plural: "storageclasses",
        singular: "storageclass",
        group: "storage.k8s.io",
        version: "v1",
        api_version: "storage.k8s.io/v1",
        namespaced: false,
        short_names: &["sc"],
        categories: &[],
        has_status: false,
        allow_create_on_update: false,
        name_rule: NameRule::Subdomain,
        field_labels: &["provisioner"],
    };

    fn default(&mut self) {
        self.reclaim_policy
            .get_or_insert_with(|| ReclaimPolicy::Delete.as_str().into());
        self.volume_binding_mode
            .get_or_insert_with(|| BindingMode::Immediate.as_str().into());
    }

    fn validate(&self, errs: &mut FieldErrors) {
        let p = Path::default();
        if self.provisioner.is_empty() {
            errs.required(&p.child("provisioner"), "");
        } else {
            errs.syntax(
                &p.child("provisioner"),
                &self.provisioner,
                qualified_name(&self.provisioner.to_ascii_lowercase()),
            );
        }
        validate::class_parameters(self.parameters.as_ref(), true, &p.child("parameters"), errs);
        validate::one_of(
            self.reclaim_policy.as_ref(),
            CLASS_RECLAIM_POLICIES,
            &p.child("reclaimPolicy"),
            errs,
        );
        validate::one_of(
            self.volume_binding_mode.as_ref(),
            BindingMode::NAMES,
            &p.child("volumeBindingMode"),
            errs,
        );
        validate::mount_options(self.mount_options.as_ref(), &p.child("mountOptions"), errs);
        for (i, term) in self.allowed_topologies.iter().flatten().enumerate() {
            let tp = p.child("allowedTopologies").index(i);
            let exprs = term.match_label_expressions.as_deref().unwrap_or_default();
            if exprs.is_empty() {
                errs.required(
                    &tp.child("matchLabelExpressions"),
                    "must have at least one term",
                );
            }
            for (j, e) in exprs.iter().enumerate() {
                let ep = tp.child("matchLabelExpressions").index(j);
                errs.syntax(&ep.child("key"), &e.key, qualified_name(&e.key));
                if e.values.is_empty() {
                    errs.required(&ep.child("values"), "must specify as least one value");
                }
                for (k, v) in e.values.iter().enumerate() {
                    errs.syntax(&ep.child("values").index(k), v, label_value(v));
                }
            }
        }
    }

    fn validate_update(&self, old: &Self, errs: &mut FieldErrors) {
        let p = Path::default();
        if self.provisioner != old.provisioner {
            errs.forbidden(
                &p.child("provisioner"),
                "updates to provisioner are forbidden.",
            );
        }
        if self.parameters.clone().unwrap_or_default() != old.parameters.clone().unwrap_or_default()
        {
            errs.forbidden(
                &p.child("parameters"),
                "updates to parameters are forbidden.",
            );
        }
        if self.reclaim_policy != old.reclaim_policy {
            errs.forbidden(
                &p.child("reclaimPolicy"),
                "updates to reclaimPolicy are forbidden.",
            );
        }
        if self.volume_binding_mode != old.volume_binding_mode {
            errs.forbidden(&p.child("volumeBindingMode"), "field is immutable");
        }
    }

    fn field_value(&self, field: &str) -> Option<String> {
        match field {
            "provisioner" => Some(self.provisioner.clone()),
            _ => None,
        }
    }

    fn table_columns() -> &'static [Column] {
        const COLUMNS: &[Column] = &[
            Column::name_column(),
            Column::new(
                "Provisioner",
                "string",
                "Indicates the type of the provisioner.",
            ),
            Column::new(
                "ReclaimPolicy",
                "string",
                "Indicates the type of the reclaim policy.",
            ),
            Column::new(
                "VolumeBindingMode",
                "string",
                "Indicates how volume binding is done.",
            ),
            Column::new(
                "AllowVolumeExpansion",
                "string",
                "Indicates whether the storage class allow volume expand.",
            ),
            Column::age(),
        ];
        COLUMNS
    }

    fn table_row(&self, now: jiff::Timestamp) -> Vec<Value> {
        let mut name = self.metadata.name.clone().unwrap_or_default();
        if is_default(self) {
            name.push_str(" (default)");
        }
        vec![
            json!(name),
            json!(self.provisioner),
            json!(reclaim_policy(self).as_str()),
            json!(binding_mode(self).as_str()),
            json!(self.allow_volume_expansion.unwrap_or(false).to_string()),
            table::meta_age(&self.metadata, now),
        ]
    }
}
