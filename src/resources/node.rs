//! Node: a machine volumes attach to. Cluster-scoped, with a status subresource.

use serde_json::{Value, json};

use super::table::{self, Column};
use super::{KindInfo, KindStrategy, NameRule, Node};
use crate::machinery::validation::{FieldErrors, Path, label_value, qualified_name};

const TAINT_EFFECTS: &[&str] = &["NoExecute", "NoSchedule", "PreferNoSchedule"];

/// The status of the node's Ready condition: `True`, `False` or `Unknown` (absent reads Unknown).
pub fn ready_status(node: &Node) -> &str {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str())
        .unwrap_or("Unknown")
}

pub fn has_taint(node: &Node, key: &str) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == key))
}

impl KindStrategy for Node {
    const INFO: KindInfo = KindInfo {
        kind: "Node",
        list_kind: "NodeList",
        plural: "nodes",
        singular: "node",
        group: "",
        version: "v1",
        api_version: "v1",
        namespaced: false,
        short_names: &["no"],
        categories: &[],
        has_status: true,
        allow_create_on_update: false,
        name_rule: NameRule::Subdomain,
        field_labels: &["spec.unschedulable", "spec.providerID"],
    };

    fn validate(&self, errs: &mut FieldErrors) {
        let p = Path::root("spec");
        for (i, t) in self
            .spec
            .iter()
            .flat_map(|s| s.taints.iter().flatten())
            .enumerate()
        {
            let tp = p.child("taints").index(i);
            errs.syntax(&tp.child("key"), &t.key, qualified_name(&t.key));
            if let Some(v) = &t.value {
                errs.syntax(&tp.child("value"), v, label_value(v));
            }
            if !TAINT_EFFECTS.contains(&t.effect.as_str()) {
                errs.not_supported(&tp.child("effect"), &t.effect, TAINT_EFFECTS);
            }
        }
        let sp = Path::root("status");
        for (i, v) in self
            .status
            .iter()
            .flat_map(|s| s.volumes_in_use.iter().flatten())
            .enumerate()
        {
            if v.is_empty() {
                errs.required(&sp.child("volumesInUse").index(i), "");
            }
        }
        for (i, v) in self
            .status
            .iter()
            .flat_map(|s| s.volumes_attached.iter().flatten())
            .enumerate()
        {
            if v.name.is_empty() {
                errs.required(&sp.child("volumesAttached").index(i).child("name"), "");
            }
        }
    }

    fn validate_update(&self, old: &Self, errs: &mut FieldErrors) {
        let provider = |n: &Node| n.spec.as_ref().and_then(|s| s.provider_id.clone());
        if let Some(old_id) = provider(old)
            && !old_id.is_empty()
            && provider(self) != Some(old_id)
        {
            errs.forbidden(
                &Path::root("spec").child("providerID"),
                "node updates may not change providerID except from \"\" to valid",
            );
        }
    }

    fn field_value(&self, field: &str) -> Option<String> {
        let spec = self.spec.as_ref();
        match field {
            "spec.unschedulable" => Some(
                spec.and_then(|s| s.unschedulable)
                    .unwrap_or(false)
                    .to_string(),
            ),
            "spec.providerID" => spec.and_then(|s| s.provider_id.clone()),
            _ => None,
        }
    }

    fn table_columns() -> &'static [Column] {
        const COLUMNS: &[Column] = &[
            Column::name_column(),
            Column::new("Status", "string", "The status of the node"),
            Column::new("Roles", "string", "The roles of the node"),
            Column::age(),
            Column::new("Version", "string", "Kubelet Version reported by the node.").wide(),
            Column::new(
                "Internal-IP",
                "string",
                "List of addresses reachable to the node.",
            )
            .wide(),
            Column::new(
                "External-IP",
                "string",
                "List of addresses reachable to the node.",
            )
            .wide(),
            Column::new(
                "Provider-ID",
                "string",
                "ID of the node assigned by the cloud provider.",
            )
            .wide(),
        ];
        COLUMNS
    }

    fn table_row(&self, now: jiff::Timestamp) -> Vec<Value> {
        let mut status = match ready_status(self) {
            "True" => "Ready".to_string(),
            "False" => "NotReady".to_string(),
            _ => "Unknown".to_string(),
        };
        if self.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
            status.push_str(",SchedulingDisabled");
        }
        let roles: Vec<&str> = self
            .metadata
            .labels
            .iter()
            .flatten()
            .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
            .collect();
        let address = |kind: &str| {
            self.status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .and_then(|a| a.iter().find(|a| a.type_ == kind))
                .map(|a| a.address.clone())
                .unwrap_or_else(|| "<none>".into())
        };
        let version = self
            .status
            .as_ref()
            .and_then(|s| s.node_info.as_ref())
            .map(|i| i.kubelet_version.clone())
            .unwrap_or_default();
        vec![
            table::name(&self.metadata),
            json!(status),
            table::or_none(Some(&roles.join(","))),
            table::meta_age(&self.metadata, now),
            json!(version),
            json!(address("InternalIP")),
            json!(address("ExternalIP")),
            table::or_none(self.spec.as_ref().and_then(|s| s.provider_id.as_deref())),
        ]
    }
}

/// The labels a node is known by: its Node object's labels, plus `kubernetes.io/hostname`
/// (so a node that has no Node object yet is still addressable by name).
pub fn labels_for(name: &str, node: Option<&Node>) -> std::collections::BTreeMap<String, String> {
    let mut labels = node
        .and_then(|n| n.metadata.labels.clone())
        .unwrap_or_default();
    labels
        .entry("kubernetes.io/hostname".to_string())
        .or_insert_with(|| name.to_string());
    labels
}

/// Whether a node satisfies a node selector: any term, every requirement of the term.
pub fn selector_admits(
    sel: &k8s_openapi::api::core::v1::NodeSelector,
    node_name: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    let name = node_name.to_string();
    sel.node_selector_terms.iter().any(|term| {
        let exprs = term.match_expressions.as_deref().unwrap_or_default();
        let fields = term.match_fields.as_deref().unwrap_or_default();
        // A term with no requirements selects nothing, as in Kubernetes.
        !(exprs.is_empty() && fields.is_empty())
            && exprs
                .iter()
                .all(|r| requirement_admits(r, labels.get(&r.key)))
            && fields
                .iter()
                .all(|r| r.key == "metadata.name" && requirement_admits(r, Some(&name)))
    })
}

fn requirement_admits(
    r: &k8s_openapi::api::core::v1::NodeSelectorRequirement,
    value: Option<&String>,
) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let number = |s: &String| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => !value.is_some_and(|v| values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => {
            matches!((value.and_then(number), values.first().and_then(number)), (Some(v), Some(b)) if v > b)
        }
        "Lt" => {
            matches!((value.and_then(number), values.first().and_then(number)), (Some(v), Some(b)) if v < b)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSelector, NodeSelectorRequirement, NodeSelectorTerm};

    fn selector(key: &str, op: &str, values: &[&str]) -> NodeSelector {
        NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: key.into(),
                    operator: op.into(),
                    values: Some(values.iter().map(|v| v.to_string()).collect()),
                }]),
                match_fields: None,
            }],
        }
    }

    #[test]
    fn node_selectors_match_labels_with_every_operator() {
        let labels = labels_for("n1", None);
        assert!(selector_admits(
            &selector("kubernetes.io/hostname", "In", &["n1", "n2"]),
            "n1",
            &labels
        ));
        assert!(!selector_admits(
            &selector("kubernetes.io/hostname", "In", &["n2"]),
            "n1",
            &labels
        ));
        assert!(selector_admits(
            &selector("zone", "DoesNotExist", &[]),
            "n1",
            &labels
        ));
        assert!(!selector_admits(
            &selector("zone", "Exists", &[]),
            "n1",
            &labels
        ));
        assert!(selector_admits(
            &selector("zone", "NotIn", &["a"]),
            "n1",
            &labels
        ));
        let mut numbered = labels.clone();
        numbered.insert("cpus".into(), "8".into());
        assert!(selector_admits(
            &selector("cpus", "Gt", &["4"]),
            "n1",
            &numbered
        ));
        assert!(!selector_admits(
            &selector("cpus", "Lt", &["4"]),
            "n1",
            &numbered
        ));
        assert!(!selector_admits(
            &NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm::default()]
            },
            "n1",
            &labels
        ));
    }
}
