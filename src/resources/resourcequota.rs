//! ResourceQuota: an admin's limit on what a namespace may consume, with Kubernetes' resource
//! names for storage and object counts. Namespaced, with a status subresource (`hard` as in
//! force, `used` as charged). Enforcement is in `registry::quota`; this module says what each
//! object consumes ([`usage`]), which resource names a quota may limit, and ([`scope`]) which
//! objects a scoped quota counts.

pub mod scope;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceQuotaStatus;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use serde_json::{Value, json};

use super::table::{self, Column};
use super::validate;
use super::{AnyObject, Kind, KindInfo, KindStrategy, NameRule, pvc};
use crate::machinery::quantity::Quantity;
use crate::machinery::validation::{FieldErrors, Path};

pub use k8s_openapi::api::core::v1::ResourceQuota;

/// The suffix of per-class resource names: `<class>.storageclass.storage.k8s.io/requests.storage`.
pub const CLASS_SUFFIX: &str = ".storageclass.storage.k8s.io/";

/// What one object consumes, by resource name. Amounts are exact integers (bytes or counts).
pub type Usage = BTreeMap<String, i128>;

/// The resource names an object of `kind` is counted under as an object (`count/<plural>[.<group>]`).
pub fn count_name(kind: Kind) -> String {
    let i = kind.info();
    if i.group.is_empty() {
        format!("count/{}", i.plural)
    } else {
        format!("count/{}.{}", i.plural, i.group)
    }
}

/// What `obj` consumes. Storage counts the larger of the request and what the volume was
/// already grown to (a claim whose expansion failed keeps using what it was given).
pub fn usage(obj: &AnyObject) -> Usage {
    let mut u = Usage::new();
    let kind = obj.kind();
    if !kind.info().namespaced {
        return u;
    }
    u.insert(count_name(kind), 1);
    match obj {
        AnyObject::PersistentVolumeClaim(c) => {
            let requested = pvc::request_bytes(c).unwrap_or(0).max(0);
            let allocated = c
                .status
                .as_ref()
                .and_then(|s| s.allocated_resources.as_ref())
                .and_then(|a| a.get("storage"))
                .and_then(crate::machinery::quantity::bytes_of)
                .unwrap_or(0);
            let storage = i128::from(requested.max(allocated));
            u.insert("persistentvolumeclaims".into(), 1);
            u.insert("requests.storage".into(), storage);
            if let Some(class) = c
                .spec
                .as_ref()
                .and_then(|s| s.storage_class_name.as_deref())
                .filter(|c| !c.is_empty())
            {
                u.insert(format!("{class}{CLASS_SUFFIX}persistentvolumeclaims"), 1);
                u.insert(format!("{class}{CLASS_SUFFIX}requests.storage"), storage);
            }
        }
        // `pods` counts pods that still run (or may), as Kubernetes does.
        AnyObject::Pod(p) if !super::pod::is_terminated(p) => {
            u.insert("pods".into(), 1);
        }
        AnyObject::ResourceQuota(_) => {
            u.insert("resourcequotas".into(), 1);
        }
        _ => {}
    }
    u
}

/// Resource names a quota may limit here. Compute resources (cpu, memory) are refused rather
/// than accepted and never enforced.
fn supported(name: &str) -> bool {
    if let Some(rest) = name.strip_prefix("count/") {
        return !rest.is_empty() && !rest.contains('/');
    }
    if let Some((class, resource)) = name.split_once(CLASS_SUFFIX) {
        return crate::machinery::validation::dns1123_subdomain(class).is_empty()
            && matches!(resource, "requests.storage" | "persistentvolumeclaims");
    }
    matches!(
        name,
        "requests.storage" | "persistentvolumeclaims" | "pods" | "resourcequotas"
    )
}

/// Whether `name` counts bytes (printed as a binary quantity) rather than objects.
pub fn is_storage(name: &str) -> bool {
    name.ends_with("requests.storage")
}

/// Formats an amount of `name` as Kubernetes prints it in quota messages and status.
pub fn format_amount(name: &str, amount: i128) -> String {
    let clamped = amount.clamp(0, i128::from(i64::MAX)) as i64;
    if is_storage(name) {
        Quantity::from_units(clamped).canonical()
    } else {
        clamped.to_string()
    }
}

/// Parses a quota map (`spec.hard`, `status.used`) into exact amounts; skips what does not parse.
pub fn amounts(map: Option<&BTreeMap<String, K8sQuantity>>) -> Usage {
    map.into_iter()
        .flatten()
        .filter_map(|(k, q)| Some((k.clone(), Quantity::parse(&q.0).ok()?.units_ceil())))
        .collect()
}

/// The quota's limits, from its spec.
pub fn hard(q: &ResourceQuota) -> Usage {
    amounts(q.spec.as_ref().and_then(|s| s.hard.as_ref()))
}

/// What the quota has charged so far, from its status.
pub fn used(q: &ResourceQuota) -> Usage {
    amounts(q.status.as_ref().and_then(|s| s.used.as_ref()))
}

/// A status that says `used` for every limited resource.
pub fn status_for(q: &ResourceQuota, used: &Usage) -> ResourceQuotaStatus {
    let limits = q.spec.as_ref().and_then(|s| s.hard.clone());
    let used = limits.as_ref().map(|h| {
        h.keys()
            .map(|k| {
                let amount = used.get(k).copied().unwrap_or(0);
                (k.clone(), K8sQuantity(format_amount(k, amount)))
            })
            .collect()
    });
    ResourceQuotaStatus { hard: limits, used }
}

impl KindStrategy for ResourceQuota {
    const INFO: KindInfo = KindInfo {
        kind: "ResourceQuota",
        list_kind: "ResourceQuotaList",
        plural: "resourcequotas",
        singular: "resourcequota",
        group: "",
        version: "v1",
        api_version: "v1",
        namespaced: true,
        short_names: &["quota"],
        categories: &[],
        has_status: true,
        allow_create_on_update: false,
        name_rule: NameRule::Subdomain,
        field_labels: &[],
    };

    fn prepare_for_create(&mut self) {
        self.status = None;
    }

    fn default(&mut self) {
        if let Some(spec) = self.spec.as_mut() {
            validate::canonicalize_quantities(spec.hard.as_mut());
        }
    }

    fn validate(&self, errs: &mut FieldErrors) {
        let p = Path::root("spec");
        let Some(spec) = &self.spec else {
            return;
        };
        for (name, q) in spec.hard.iter().flatten() {
            let qp = p.child("hard").key(name);
            if !supported(name) {
                errs.not_supported(
                    &qp,
                    name,
                    &[
                        "requests.storage",
                        "persistentvolumeclaims",
                        "<class>.storageclass.storage.k8s.io/requests.storage",
                        "<class>.storageclass.storage.k8s.io/persistentvolumeclaims",
                        "pods",
                        "resourcequotas",
                        "count/<resource>[.<group>]",
                    ],
                );
                continue;
            }
            if let Some(v) = validate::quantity(q, &qp, errs)
                && v.is_negative()
            {
                errs.invalid(&qp, &q.0, "must be greater than or equal to 0");
            }
        }
        scope::validate(spec, &p, errs);
    }

    /// Kubernetes: a quota's scopes are fixed once it exists (what it counted would change
    /// under its status).
    fn validate_update(&self, old: &Self, errs: &mut FieldErrors) {
        let (new, old) = (self.spec.as_ref(), old.spec.as_ref());
        let p = Path::root("spec");
        if new.and_then(|s| s.scopes.clone()).unwrap_or_default()
            != old.and_then(|s| s.scopes.clone()).unwrap_or_default()
        {
            errs.invalid(&p.child("scopes"), "", "field is immutable");
        }
        if new.and_then(|s| s.scope_selector.clone()) != old.and_then(|s| s.scope_selector.clone())
        {
            errs.invalid(&p.child("scopeSelector"), "", "field is immutable");
        }
    }

    fn table_columns() -> &'static [Column] {
        const COLUMNS: &[Column] = &[
            Column::name_column(),
            Column::age(),
            Column::new(
                "Request",
                "string",
                "Used and hard amounts of each limited resource.",
            ),
            Column::new(
                "Limit",
                "string",
                "Used and hard limits of each limited resource.",
            ),
        ];
        COLUMNS
    }

    fn table_row(&self, now: jiff::Timestamp) -> Vec<Value> {
        let used = used(self);
        let cells: Vec<String> = hard(self)
            .iter()
            .map(|(k, h)| {
                format!(
                    "{k}: {}/{}",
                    format_amount(k, used.get(k).copied().unwrap_or(0)),
                    format_amount(k, *h)
                )
            })
            .collect();
        vec![
            table::name(&self.metadata),
            table::meta_age(&self.metadata, now),
            json!(cells.join(", ")),
            json!(""),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{PersistentVolumeClaim, Typed};

    fn claim(class: &str, size: &str) -> AnyObject {
        let c: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "c", "namespace": "a"},
            "spec": {"storageClassName": class, "resources": {"requests": {"storage": size}}},
        }))
        .unwrap();
        c.into_any()
    }

    #[test]
    fn a_claim_uses_its_storage_and_counts_once_per_name() {
        let u = usage(&claim("fast", "2Gi"));
        assert_eq!(u["requests.storage"], 2 << 30);
        assert_eq!(
            u["fast.storageclass.storage.k8s.io/requests.storage"],
            2 << 30
        );
        assert_eq!(
            u["fast.storageclass.storage.k8s.io/persistentvolumeclaims"],
            1
        );
        assert_eq!(u["persistentvolumeclaims"], 1);
        assert_eq!(u["count/persistentvolumeclaims"], 1);
        assert!(
            usage(&claim("", "1Gi"))
                .keys()
                .all(|k| !k.contains(CLASS_SUFFIX))
        );
    }

    #[test]
    fn scopes_cannot_change_once_a_quota_exists() {
        let q = |spec: serde_json::Value| -> ResourceQuota {
            serde_json::from_value(json!({"metadata": {"name": "q"}, "spec": spec})).unwrap()
        };
        let old = q(json!({"hard": {"pods": "1"}, "scopes": ["BestEffort"]}));
        let mut errs = FieldErrors::new();
        q(json!({"hard": {"pods": "2"}, "scopes": ["BestEffort"]}))
            .validate_update(&old, &mut errs);
        assert!(errs.is_empty(), "limits may change");
        q(json!({"hard": {"pods": "1"}, "scopes": ["NotBestEffort"]}))
            .validate_update(&old, &mut errs);
        q(json!({"hard": {"pods": "1"}, "scopes": ["BestEffort"], "scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "Exists"}]}}))
        .validate_update(&old, &mut errs);
        assert_eq!(errs.0.len(), 2, "{:?}", errs.0);
    }

    #[test]
    fn only_storage_and_count_resources_are_accepted() {
        for ok in [
            "requests.storage",
            "count/events",
            "count/volumesnapshots.snapshot.storage.k8s.io",
            "gold.storageclass.storage.k8s.io/requests.storage",
        ] {
            assert!(supported(ok), "{ok}");
        }
        for bad in [
            "cpu",
            "requests.memory",
            "count/",
            "Bad_Class.storageclass.storage.k8s.io/requests.storage",
        ] {
            assert!(!supported(bad), "{bad}");
        }
        assert_eq!(format_amount("requests.storage", 5 << 30), "5Gi");
        assert_eq!(format_amount("pods", 3), "3");
    }
}
