//! Quota scopes: which objects a ResourceQuota counts. A quota with `spec.scopes` or
//! `spec.scopeSelector` counts only the objects every one of them matches, as Kubernetes'
//! quota evaluators do:
//! - `VolumeAttributesClass` matches claims by the attributes classes they name (spec, current
//!   and modification target), so an admin can cap what a namespace puts on an expensive class;
//! - `Terminating`, `NotTerminating`, `BestEffort`, `NotBestEffort`, `PriorityClass` and
//!   `CrossNamespacePodAffinity` match pods.
//!
//! Objects of other kinds match no scope: a scoped quota never counts them.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, ResourceQuotaSpec};

use crate::machinery::validation::{FieldErrors, Path};
use crate::resources::AnyObject;

pub const VOLUME_ATTRIBUTES_CLASS: &str = "VolumeAttributesClass";
const TERMINATING: &str = "Terminating";
const NOT_TERMINATING: &str = "NotTerminating";
const BEST_EFFORT: &str = "BestEffort";
const NOT_BEST_EFFORT: &str = "NotBestEffort";
const PRIORITY_CLASS: &str = "PriorityClass";
const CROSS_NAMESPACE_POD_AFFINITY: &str = "CrossNamespacePodAffinity";

const SCOPES: &[&str] = &[
    TERMINATING,
    NOT_TERMINATING,
    BEST_EFFORT,
    NOT_BEST_EFFORT,
    PRIORITY_CLASS,
    CROSS_NAMESPACE_POD_AFFINITY,
    VOLUME_ATTRIBUTES_CLASS,
];
const OPERATORS: &[&str] = &["In", "NotIn", "Exists", "DoesNotExist"];
/// Scopes that are true or false of an object, with no value to compare.
const FLAG_SCOPES: &[&str] = &[
    TERMINATING,
    NOT_TERMINATING,
    BEST_EFFORT,
    NOT_BEST_EFFORT,
    CROSS_NAMESPACE_POD_AFFINITY,
];

/// One condition of a quota's scope: a scope name, an operator and its values.
#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    scope: String,
    operator: String,
    values: Vec<String>,
}

/// Which objects a quota counts: those every requirement matches (all objects when there is
/// none).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scope {
    requirements: Vec<Requirement>,
}

impl Scope {
    /// The scope of a quota: its `scopes` (each as `Exists`) and its `scopeSelector`.
    pub fn of(spec: Option<&ResourceQuotaSpec>) -> Scope {
        let Some(spec) = spec else {
            return Scope::default();
        };
        let mut requirements: Vec<Requirement> = spec
            .scopes
            .iter()
            .flatten()
            .map(|s| Requirement {
                scope: s.clone(),
                operator: "Exists".into(),
                values: Vec::new(),
            })
            .collect();
        requirements.extend(
            spec.scope_selector
                .iter()
                .flat_map(|s| s.match_expressions.iter().flatten())
                .map(|e| Requirement {
                    scope: e.scope_name.clone(),
                    operator: e.operator.clone(),
                    values: e.values.clone().unwrap_or_default(),
                }),
        );
        Scope { requirements }
    }

    /// Whether the quota counts every object of its namespace.
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether the quota counts `obj`.
    pub fn matches(&self, obj: &AnyObject) -> bool {
        self.requirements.iter().all(|r| r.matches(obj))
    }
}

impl Requirement {
    fn matches(&self, obj: &AnyObject) -> bool {
        match (obj, self.scope.as_str()) {
            (AnyObject::PersistentVolumeClaim(c), VOLUME_ATTRIBUTES_CLASS) => {
                self.matches_values(&attributes_classes(c))
            }
            (AnyObject::Pod(p), scope) => match scope {
                TERMINATING => is_terminating(p),
                NOT_TERMINATING => !is_terminating(p),
                BEST_EFFORT => is_best_effort(p),
                NOT_BEST_EFFORT => !is_best_effort(p),
                CROSS_NAMESPACE_POD_AFFINITY => uses_cross_namespace_affinity(p),
                PRIORITY_CLASS => {
                    let class = p
                        .spec
                        .as_ref()
                        .and_then(|s| s.priority_class_name.as_deref())
                        .filter(|c| !c.is_empty());
                    match self.operator.as_str() {
                        // Kubernetes compares a selector on {PriorityClass: <name>}, a key every
                        // pod has (empty or not): `DoesNotExist` never matches.
                        "DoesNotExist" => false,
                        "NotIn" => !self.values.iter().any(|v| Some(v.as_str()) == class),
                        _ => self.matches_values(&class.into_iter().collect()),
                    }
                }
                _ => false,
            },
            _ => false,
        }
    }

    /// The operator applied to the values an object has for this scope (none, one or several:
    /// a claim being modified names two attributes classes). `In` and `NotIn` hold when one of
    /// them satisfies it, as Kubernetes evaluates a label selector per value.
    fn matches_values(&self, have: &BTreeSet<&str>) -> bool {
        let listed = |v: &&str| self.values.iter().any(|x| x == v);
        match self.operator.as_str() {
            "Exists" => !have.is_empty(),
            "DoesNotExist" => have.is_empty(),
            "In" => have.iter().any(listed),
            // An object with no value has none of the listed ones.
            "NotIn" => have.is_empty() || have.iter().any(|v| !listed(v)),
            _ => false,
        }
    }
}

/// The attributes classes a claim names: the one it asks for, the one its volume has, and the
/// one a modification in progress moves it to.
fn attributes_classes(c: &k8s_openapi::api::core::v1::PersistentVolumeClaim) -> BTreeSet<&str> {
    let status = c.status.as_ref();
    [
        c.spec
            .as_ref()
            .and_then(|s| s.volume_attributes_class_name.as_deref()),
        status.and_then(|s| s.current_volume_attributes_class_name.as_deref()),
        status
            .and_then(|s| s.modify_volume_status.as_ref())
            .map(|m| {
                m.target_volume_attributes_class_name
                    .as_deref()
                    .unwrap_or("")
            }),
    ]
    .into_iter()
    .flatten()
    .filter(|n| !n.is_empty())
    .collect()
}

/// A pod with a deadline (`activeDeadlineSeconds`) ends by itself.
fn is_terminating(p: &Pod) -> bool {
    p.spec
        .as_ref()
        .and_then(|s| s.active_deadline_seconds)
        .is_some_and(|d| d >= 0)
}

/// Kubernetes' BestEffort class: no container asks for or is limited in cpu or memory.
fn is_best_effort(p: &Pod) -> bool {
    let Some(spec) = &p.spec else {
        return true;
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .filter_map(|c| c.resources.as_ref())
        .all(|r| {
            // Kubernetes' QoS counts only positive amounts: `cpu: 0` is still best effort.
            [&r.requests, &r.limits].into_iter().flatten().all(|m| {
                !m.iter().any(|(k, q)| {
                    (k == "cpu" || k == "memory")
                        && crate::machinery::quantity::Quantity::parse(&q.0)
                            .is_ok_and(|q| q.units_ceil() > 0)
                })
            })
        })
}

/// Whether a pod's affinity reaches into other namespaces (`namespaces` or a
/// `namespaceSelector` on any term).
fn uses_cross_namespace_affinity(p: &Pod) -> bool {
    let Some(affinity) = p.spec.as_ref().and_then(|s| s.affinity.as_ref()) else {
        return false;
    };
    let crosses = |t: &PodAffinityTerm| {
        t.namespace_selector.is_some() || t.namespaces.as_ref().is_some_and(|n| !n.is_empty())
    };
    let affinity_terms = affinity.pod_affinity.iter().flat_map(|a| {
        a.required_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
            .chain(
                a.preferred_during_scheduling_ignored_during_execution
                    .iter()
                    .flatten()
                    .map(|w| &w.pod_affinity_term),
            )
    });
    let anti_terms = affinity.pod_anti_affinity.iter().flat_map(|a| {
        a.required_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
            .chain(
                a.preferred_during_scheduling_ignored_during_execution
                    .iter()
                    .flatten()
                    .map(|w| &w.pod_affinity_term),
            )
    });
    affinity_terms.chain(anti_terms).any(crosses)
}

/// Whether a quota may limit `resource` under `scope`: pod scopes limit pods, the attributes
/// class scope limits claims and their storage. Names outside Kubernetes' standard set
/// (`count/...`, per-class names) are not checked, as Kubernetes does not check them.
fn valid_for(scope: &str, resource: &str) -> bool {
    let standard = matches!(
        resource,
        "requests.storage" | "persistentvolumeclaims" | "pods" | "resourcequotas"
    );
    if !standard {
        return true;
    }
    match scope {
        VOLUME_ATTRIBUTES_CLASS => {
            matches!(resource, "persistentvolumeclaims" | "requests.storage")
        }
        TERMINATING
        | NOT_TERMINATING
        | BEST_EFFORT
        | NOT_BEST_EFFORT
        | PRIORITY_CLASS
        | CROSS_NAMESPACE_POD_AFFINITY => resource == "pods",
        _ => true,
    }
}

/// Kubernetes' rules for `spec.scopes` and `spec.scopeSelector`, with its messages.
pub fn validate(spec: &ResourceQuotaSpec, p: &Path, errs: &mut FieldErrors) {
    let hard: Vec<&String> = spec.hard.iter().flatten().map(|(k, _)| k).collect();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    if let Some(scopes) = spec.scopes.as_ref().filter(|s| !s.is_empty()) {
        let sp = p.child("scopes");
        let shown = format!("{scopes:?}");
        for scope in scopes {
            if !SCOPES.contains(&scope.as_str()) {
                errs.invalid(&sp, &shown, "unsupported scope");
            }
            if hard.iter().any(|r| !valid_for(scope, r)) {
                errs.invalid(&sp, &shown, "unsupported scope applied to resource");
            }
            seen.insert(scope);
        }
        conflicts(&seen, &sp, &shown, errs);
    }
    let Some(selector) = &spec.scope_selector else {
        return;
    };
    let mp = p.child("scopeSelector").child("matchExpressions");
    let mut selected: BTreeSet<&str> = BTreeSet::new();
    for (i, e) in selector.match_expressions.iter().flatten().enumerate() {
        let ep = mp.index(i);
        if !SCOPES.contains(&e.scope_name.as_str()) {
            errs.invalid(&ep.child("scopeName"), &e.scope_name, "unsupported scope");
        }
        if hard.iter().any(|r| !valid_for(&e.scope_name, r)) {
            errs.invalid(&mp, &e.scope_name, "unsupported scope applied to resource");
        }
        if FLAG_SCOPES.contains(&e.scope_name.as_str()) && e.operator != "Exists" {
            errs.invalid(
                &ep.child("operator"),
                &e.operator,
                "must be 'Exist' when scope is any of ResourceQuotaScopeTerminating, ResourceQuotaScopeNotTerminating, ResourceQuotaScopeBestEffort, ResourceQuotaScopeNotBestEffort or ResourceQuotaScopeCrossNamespacePodAffinity",
            );
        }
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => errs.required(
                &ep.child("values"),
                "must be at least one value when `operator` is 'In' or 'NotIn' for scope selector",
            ),
            "Exists" | "DoesNotExist" if !values.is_empty() => errs.invalid(
                &ep.child("values"),
                &values.join(","),
                "must be no value when `operator` is 'Exist' or 'DoesNotExist' for scope selector",
            ),
            op if !OPERATORS.contains(&op) => {
                errs.not_supported(&ep.child("operator"), op, OPERATORS)
            }
            _ => {}
        }
        selected.insert(&e.scope_name);
    }
    conflicts(&selected, &mp, "", errs);
}

/// Scopes that no object can match at once.
fn conflicts(scopes: &BTreeSet<&str>, p: &Path, shown: &str, errs: &mut FieldErrors) {
    for (a, b) in [
        (BEST_EFFORT, NOT_BEST_EFFORT),
        (TERMINATING, NOT_TERMINATING),
    ] {
        if scopes.contains(a) && scopes.contains(b) {
            errs.invalid(p, shown, "conflicting scopes");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::machinery::validation::FieldErrors;
    use crate::resources::{PersistentVolumeClaim, Typed};

    fn scope(spec: serde_json::Value) -> Scope {
        Scope::of(Some(&serde_json::from_value(spec).unwrap()))
    }

    fn claim(spec_vac: Option<&str>, current: Option<&str>, target: Option<&str>) -> AnyObject {
        let mut status = json!({});
        if let Some(c) = current {
            status["currentVolumeAttributesClassName"] = json!(c);
        }
        if let Some(t) = target {
            status["modifyVolumeStatus"] =
                json!({"targetVolumeAttributesClassName": t, "status": "InProgress"});
        }
        let c: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "c", "namespace": "a"},
            "spec": {"volumeAttributesClassName": spec_vac},
            "status": status,
        }))
        .unwrap();
        c.into_any()
    }

    fn pod(spec: serde_json::Value) -> AnyObject {
        let p: Pod =
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap();
        p.into_any()
    }

    fn vac(op: &str, values: &[&str]) -> Scope {
        scope(json!({"scopeSelector": {"matchExpressions": [
            {"scopeName": "VolumeAttributesClass", "operator": op, "values": values}]}}))
    }

    #[test]
    fn the_attributes_class_scope_matches_every_class_a_claim_names() {
        let gold = vac("In", &["gold"]);
        assert!(gold.matches(&claim(Some("gold"), None, None)));
        assert!(!gold.matches(&claim(Some("silver"), None, None)));
        assert!(!gold.matches(&claim(None, None, None)));
        // Moving from gold to silver: still counted under gold until the volume has moved.
        assert!(gold.matches(&claim(Some("silver"), Some("gold"), Some("silver"))));
        assert!(!gold.matches(&claim(Some("silver"), Some("silver"), None)));

        let not_gold = vac("NotIn", &["gold"]);
        assert!(not_gold.matches(&claim(None, None, None)));
        assert!(not_gold.matches(&claim(Some("silver"), None, None)));
        assert!(!not_gold.matches(&claim(Some("gold"), Some("gold"), None)));

        assert!(vac("Exists", &[]).matches(&claim(None, Some("gold"), None)));
        assert!(!vac("Exists", &[]).matches(&claim(None, None, None)));
        assert!(vac("DoesNotExist", &[]).matches(&claim(None, None, None)));
        // It says nothing about pods, nor pod scopes about claims.
        assert!(!vac("Exists", &[]).matches(&pod(json!({"containers": []}))));
        assert!(!scope(json!({"scopes": ["NotTerminating"]})).matches(&claim(None, None, None)));
        assert!(Scope::default().matches(&claim(None, None, None)));
    }

    #[test]
    fn pod_scopes_follow_deadlines_resources_priority_and_affinity() {
        let plain = pod(json!({"containers": [{"name": "a"}]}));
        let deadline = pod(json!({"containers": [{"name": "a"}], "activeDeadlineSeconds": 60}));
        let sized = pod(json!({"containers": [{"name": "a",
            "resources": {"requests": {"memory": "1Gi"}}}]}));
        let high = pod(json!({"containers": [], "priorityClassName": "high"}));
        let crossing = pod(json!({"containers": [], "affinity": {"podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1,
                "podAffinityTerm": {"topologyKey": "k", "namespaces": ["b"]}}]}}}));
        let s = |scopes: &[&str]| scope(json!({"scopes": scopes}));
        assert!(s(&["Terminating"]).matches(&deadline));
        assert!(!s(&["Terminating"]).matches(&plain));
        assert!(s(&["NotTerminating"]).matches(&plain));
        assert!(s(&["BestEffort"]).matches(&plain));
        assert!(!s(&["BestEffort"]).matches(&sized));
        assert!(s(&["NotBestEffort", "NotTerminating"]).matches(&sized));
        assert!(s(&["CrossNamespacePodAffinity"]).matches(&crossing));
        assert!(!s(&["CrossNamespacePodAffinity"]).matches(&plain));
        let prio = |op: &str, values: &[&str]| {
            scope(json!({"scopeSelector": {"matchExpressions": [
                {"scopeName": "PriorityClass", "operator": op, "values": values}]}}))
        };
        assert!(prio("In", &["high"]).matches(&high));
        assert!(!prio("In", &["high"]).matches(&plain));
        assert!(prio("NotIn", &["high"]).matches(&plain));
        assert!(prio("Exists", &[]).matches(&high));
        assert!(!prio("Exists", &[]).matches(&plain));
        // As in Kubernetes, every pod has the key (empty or not): DoesNotExist never matches.
        assert!(!prio("DoesNotExist", &[]).matches(&plain));
        // Zero amounts do not make a pod anything but best effort.
        let zero = pod(json!({"containers": [{"name": "a",
            "resources": {"requests": {"cpu": "0"}, "limits": {"memory": "0"}}}]}));
        assert!(s(&["BestEffort"]).matches(&zero));
    }

    fn errors(spec: serde_json::Value) -> Vec<String> {
        let spec: ResourceQuotaSpec = serde_json::from_value(spec).unwrap();
        let mut errs = FieldErrors::new();
        validate(&spec, &Path::root("spec"), &mut errs);
        errs.0.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn scopes_are_validated_as_kubernetes_validates_them() {
        assert!(
            errors(
                json!({"hard": {"requests.storage": "1Gi", "persistentvolumeclaims": "2",
                "gold.storageclass.storage.k8s.io/requests.storage": "1Gi",
                "count/persistentvolumeclaims": "3"},
                "scopeSelector": {"matchExpressions": [{"scopeName": "VolumeAttributesClass",
                    "operator": "In", "values": ["gold"]}]}})
            )
            .is_empty()
        );
        assert!(errors(json!({"hard": {"pods": "2"}, "scopes": ["BestEffort"]})).is_empty());
        let cases = [
            (
                json!({"hard": {"pods": "2"}, "scopeSelector": {"matchExpressions": [
                    {"scopeName": "VolumeAttributesClass", "operator": "Exists"}]}}),
                "unsupported scope applied to resource",
            ),
            (
                json!({"hard": {"requests.storage": "1Gi"}, "scopes": ["Terminating"]}),
                "unsupported scope applied to resource",
            ),
            (json!({"scopes": ["Sometimes"]}), "unsupported scope"),
            (
                json!({"scopes": ["Terminating", "NotTerminating"]}),
                "conflicting scopes",
            ),
            (
                json!({"scopeSelector": {"matchExpressions": [
                    {"scopeName": "VolumeAttributesClass", "operator": "In"}]}}),
                "must be at least one value",
            ),
            (
                json!({"scopeSelector": {"matchExpressions": [
                    {"scopeName": "VolumeAttributesClass", "operator": "Exists", "values": ["x"]}]}}),
                "must be no value",
            ),
            (
                json!({"scopeSelector": {"matchExpressions": [
                    {"scopeName": "BestEffort", "operator": "In", "values": ["x"]}]}}),
                "must be 'Exist'",
            ),
            (
                json!({"scopeSelector": {"matchExpressions": [
                    {"scopeName": "VolumeAttributesClass", "operator": "Matches", "values": ["x"]}]}}),
                "Unsupported value",
            ),
        ];
        for (spec, expected) in cases {
            let errs = errors(spec.clone());
            assert!(
                errs.iter().any(|e| e.contains(expected)),
                "{spec}: {errs:?} lacks {expected}"
            );
        }
    }
}
