//! Topology: a class's allowed topologies and a selected node's labels, as the provider's
//! topology requirement; a volume's accessible topology, as a PersistentVolume's node affinity.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, VolumeNodeAffinity,
};
use stowage_provider::{Topology, TopologyRequirement};

use crate::resources::StorageClass;

pub(crate) fn to_topology_requirement(
    class: &StorageClass,
    node: Option<(&str, &BTreeMap<String, String>)>,
) -> TopologyRequirement {
    let mut allowed = Vec::new();
    for term in class.allowed_topologies.iter().flatten() {
        // Each term is a product of its expressions' values.
        let mut combos = vec![BTreeMap::new()];
        for e in term.match_label_expressions.iter().flatten() {
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    e.values.iter().map(move |v| {
                        let mut c: BTreeMap<String, String> = c.clone();
                        c.insert(e.key.clone(), v.clone());
                        c
                    })
                })
                .collect();
        }
        allowed.extend(combos.into_iter().map(Topology));
    }
    match node {
        Some((_, labels)) => {
            let segments: BTreeMap<String, String> = labels
                .iter()
                .filter(|(k, _)| {
                    k.as_str() == "kubernetes.io/hostname" || k.starts_with("topology.")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let here = Topology(segments);
            TopologyRequirement {
                requisite: vec![here.clone()],
                preferred: vec![here],
            }
        }
        None => TopologyRequirement {
            requisite: allowed.clone(),
            preferred: allowed,
        },
    }
}

pub(super) fn node_affinity(topologies: &[Topology]) -> Option<VolumeNodeAffinity> {
    if topologies.is_empty() {
        return None;
    }
    Some(VolumeNodeAffinity {
        required: Some(NodeSelector {
            node_selector_terms: topologies
                .iter()
                .map(|t| NodeSelectorTerm {
                    match_expressions: Some(
                        t.0.iter()
                            .map(|(k, v)| NodeSelectorRequirement {
                                key: k.clone(),
                                operator: "In".into(),
                                values: Some(vec![v.clone()]),
                            })
                            .collect(),
                    ),
                    match_fields: None,
                })
                .collect(),
        }),
    })
}
