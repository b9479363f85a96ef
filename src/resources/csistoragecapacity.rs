//! CSIStorageCapacity (storage.k8s.io/v1): the room a class has left for new volumes in one
//! topology, which schedulers read to avoid nodes that cannot hold a claim. Namespaced, no
//! spec or status: its fields are at the top level. The server publishes them in
//! `stowage-system` for every class whose provider knows its capacity (see
//! [`crate::controllers::capacity`]).

use serde_json::{Value, json};

use super::table::{self, Column};
use super::validate;
use super::{KindInfo, KindStrategy, NameRule};
use crate::machinery::validation::{FieldErrors, Path};

pub use k8s_openapi::api::storage::v1::CSIStorageCapacity;

impl KindStrategy for CSIStorageCapacity {
    const INFO: KindInfo = KindInfo {
        kind: "CSIStorageCapacity",
        list_kind: "CSIStorageCapacityList",
        plural: "csistoragecapacities",
        singular: "csistoragecapacity",
        group: "storage.k8s.io",
        version: "v1",
        api_version: "storage.k8s.io/v1",
        namespaced: true,
        short_names: &[],
        categories: &[],
        has_status: false,
        allow_create_on_update: false,
        name_rule: NameRule::Subdomain,
        field_labels: &[],
    };

    fn validate(&self, errs: &mut FieldErrors) {
        let p = Path::default();
        // As Kubernetes' ValidateCSIStorageCapacity: a class name, a valid selector, and a
        // capacity that is not negative (maximumVolumeSize is only parsed).
        let class = p.child("storageClassName");
        if self.storage_class_name.is_empty() {
            errs.invalid(&class, "", "a class name is required");
        } else {
            validate::optional_name(Some(&self.storage_class_name), &class, errs);
        }
        validate::label_selector(self.node_topology.as_ref(), &p.child("nodeTopology"), errs);
        if let Some(q) = &self.capacity
            && let Some(parsed) = validate::quantity(q, &p.child("capacity"), errs)
            && parsed.is_negative()
        {
            errs.invalid(
                &p.child("capacity"),
                &q.0,
                "must be greater than or equal to 0",
            );
        }
        if let Some(q) = &self.maximum_volume_size {
            validate::quantity(q, &p.child("maximumVolumeSize"), errs);
        }
    }

    fn validate_update(&self, old: &Self, errs: &mut FieldErrors) {
        if self.storage_class_name != old.storage_class_name {
            errs.immutable(&Path::default().child("storageClassName"));
        }
        if self.node_topology != old.node_topology {
            errs.immutable(&Path::default().child("nodeTopology"));
        }
    }

    fn table_columns() -> &'static [Column] {
        const COLUMNS: &[Column] = &[
            Column::name_column(),
            Column::new(
                "StorageClassName",
                "string",
                "The class whose volumes this capacity is for.",
            ),
            Column::new(
                "Capacity",
                "string",
                "The room left for new volumes of the class, in this topology.",
            ),
            Column::age(),
        ];
        COLUMNS
    }

    fn table_row(&self, now: jiff::Timestamp) -> Vec<Value> {
        vec![
            table::name(&self.metadata),
            json!(self.storage_class_name),
            json!(
                self.capacity
                    .as_ref()
                    .map(|q| q.0.clone())
                    .unwrap_or_default()
            ),
            table::meta_age(&self.metadata, now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    #[test]
    fn a_capacity_needs_a_class_and_sizes_that_are_not_negative() {
        let mut c = CSIStorageCapacity {
            capacity: Some(Quantity("-1Gi".into())),
            maximum_volume_size: Some(Quantity("lots".into())),
            ..Default::default()
        };
        let mut errs = FieldErrors::new();
        c.validate(&mut errs);
        let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["storageClassName", "capacity", "maximumVolumeSize"]
        );
        c.storage_class_name = "fast".into();
        c.capacity = Some(Quantity("10Gi".into()));
        c.maximum_volume_size = None;
        let mut errs = FieldErrors::new();
        c.validate(&mut errs);
        assert!(errs.is_empty(), "{errs:?}");
    }
}
