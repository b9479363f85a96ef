//! CSINode (storage.k8s.io/v1): the storage drivers on one node, with the node's id in each
//! driver's terms, the topology keys it places volumes by, and how many of its volumes the node
//! can hold. Cluster-scoped, named after its Node. Its status (storage health, new in 1.37) is
//! stored as given; Stowage reports none yet. The server keeps one per Node
//! (see [`crate::controllers::csi`]).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::table::{self, Column};
use super::validate;
use super::{KindInfo, KindStrategy, NameRule};
use crate::machinery::validation::{FieldErrors, Path, qualified_name};

pub use k8s_openapi::api::storage::v1::{CSINode, CSINodeDriver, CSINodeSpec};

/// Kubernetes' longest driver node id (the API server allows the long form, 256).
const MAX_NODE_ID_LENGTH: usize = 256;

impl KindStrategy for CSINode {
    const INFO: KindInfo = KindInfo {
        kind: "CSINode",
        list_kind: "CSINodeList",
        plural: "csinodes",
        singular: "csinode",
        group: "storage.k8s.io",
        version: "v1",
        api_version: "storage.k8s.io/v1",
        namespaced: false,
        short_names: &[],
        categories: &[],
        has_status: true,
        allow_create_on_update: false,
        name_rule: NameRule::Subdomain,
        field_labels: &[],
    };

    fn prepare_for_create(&mut self) {
        self.status = None;
    }

    fn validate(&self, errs: &mut FieldErrors) {
        let p = Path::root("spec").child("drivers");
        let mut names = BTreeSet::new();
        for (i, d) in self.spec.drivers.iter().enumerate() {
            let dp = p.index(i);
            validate::csi_driver_name(&d.name, &dp.child("name"), errs);
            if !names.insert(d.name.as_str()) {
                errs.duplicate(&dp.child("name"), &d.name);
            }
            if d.node_id.is_empty() {
                errs.required(&dp.child("nodeID"), "");
            } else if d.node_id.len() > MAX_NODE_ID_LENGTH {
                errs.too_long(&dp.child("nodeID"), MAX_NODE_ID_LENGTH);
            }
            let mut keys = BTreeSet::new();
            for (j, k) in d.topology_keys.iter().flatten().enumerate() {
                let kp = dp.child("topologyKeys").index(j);
                errs.syntax(&kp, k, qualified_name(k));
                if !keys.insert(k.as_str()) {
                    errs.duplicate(&kp, k);
                }
            }
            if let Some(count) = d.allocatable.as_ref().and_then(|a| a.count)
                && count < 0
            {
                errs.invalid_raw(
                    &dp.child("allocatable").child("count"),
                    count,
                    "must be greater than or equal to 0",
                );
            }
        }
    }

    /// As Kubernetes: a driver's node id and topology keys never change while it is listed (a
    /// driver that re-registers differently is removed first, then added).
    fn validate_update(&self, old: &Self, errs: &mut FieldErrors) {
        let p = Path::root("spec").child("drivers");
        for (i, d) in self.spec.drivers.iter().enumerate() {
            let Some(before) = old.spec.drivers.iter().find(|o| o.name == d.name) else {
                continue;
            };
            if d.node_id != before.node_id {
                errs.immutable(&p.index(i).child("nodeID"));
            }
            if d.topology_keys.clone().unwrap_or_default()
                != before.topology_keys.clone().unwrap_or_default()
            {
                errs.immutable(&p.index(i).child("topologyKeys"));
            }
        }
    }

    fn table_columns() -> &'static [Column] {
        const COLUMNS: &[Column] = &[
            Column::name_column(),
            Column::new(
                "Drivers",
                "integer",
                "The number of storage drivers on the node.",
            ),
            Column::age(),
        ];
        COLUMNS
    }

    fn table_row(&self, now: jiff::Timestamp) -> Vec<Value> {
        vec![
            table::name(&self.metadata),
            json!(self.spec.drivers.len()),
            table::meta_age(&self.metadata, now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::storage::v1::VolumeNodeResources;

    fn entry(name: &str, node_id: &str, keys: &[&str]) -> CSINodeDriver {
        CSINodeDriver {
            name: name.into(),
            node_id: node_id.into(),
            topology_keys: Some(keys.iter().map(|k| k.to_string()).collect()),
            allocatable: Some(VolumeNodeResources { count: Some(26) }),
        }
    }

    fn fields(errs: &FieldErrors) -> Vec<&str> {
        errs.0.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn drivers_need_unique_names_a_node_id_and_valid_keys() {
        let mut n = <CSINode as Default>::default();
        n.spec.drivers = vec![
            entry(
                "ebs.stowage.dev",
                "i-0123",
                &["topology.kubernetes.io/zone"],
            ),
            entry("ebs.stowage.dev", "", &["bad key!", "k", "k"]),
        ];
        n.spec.drivers[0].allocatable = Some(VolumeNodeResources { count: Some(-1) });
        let mut errs = FieldErrors::new();
        n.validate(&mut errs);
        assert_eq!(
            fields(&errs),
            [
                "spec.drivers[0].allocatable.count",
                "spec.drivers[1].name",
                "spec.drivers[1].nodeID",
                "spec.drivers[1].topologyKeys[0]",
                "spec.drivers[1].topologyKeys[2]",
            ]
        );
    }

    #[test]
    fn a_listed_drivers_id_and_keys_are_immutable_its_count_and_the_list_are_not() {
        let mut old = <CSINode as Default>::default();
        old.spec.drivers = vec![entry("a.example.com", "n1", &["k"])];
        let mut new = old.clone();
        new.spec.drivers[0].allocatable = Some(VolumeNodeResources { count: Some(3) });
        new.spec.drivers.push(entry("b.example.com", "n1", &[]));
        let mut errs = FieldErrors::new();
        new.validate_update(&old, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");

        new.spec.drivers[0].node_id = "n2".into();
        new.spec.drivers[0].topology_keys = None;
        let mut errs = FieldErrors::new();
        new.validate_update(&old, &mut errs);
        assert_eq!(
            fields(&errs),
            ["spec.drivers[0].nodeID", "spec.drivers[0].topologyKeys"]
        );
    }
}
