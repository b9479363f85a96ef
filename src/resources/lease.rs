//! Lease (coordination.k8s.io/v1): node heartbeats and leader election. Namespaced, no status.

use serde_json::{Value, json};

use super::table::{self, Column};
use super::{KindInfo, KindStrategy, Lease, NameRule};
use crate::machinery::validation::{FieldErrors, Path};

impl KindStrategy for Lease {
    const INFO: KindInfo = KindInfo {
        kind: "Lease",
        list_kind: "LeaseList",
        plural: "leases",
        singular: "lease",
        group: "coordination.k8s.io",
        version: "v1",
        api_version: "coordination.k8s.io/v1",
        namespaced: true,
        short_names: &[],
        categories: &[],
        has_status: false,
        allow_create_on_update: true,
        name_rule: NameRule::Subdomain,
        field_labels: &["spec.holderIdentity"],
    };

    fn validate(&self, errs: &mut FieldErrors) {
        let Some(spec) = &self.spec else {
            return;
        };
        let p = Path::root("spec");
        if let Some(d) = spec.lease_duration_seconds
            && d <= 0
        {
            errs.invalid_raw(
                &p.child("leaseDurationSeconds"),
                d,
                "must be greater than 0",
            );
        }
        if let Some(t) = spec.lease_transitions
            && t < 0
        {
            errs.invalid_raw(
                &p.child("leaseTransitions"),
                t,
                "must be greater than or equal to 0",
            );
        }
    }

    fn field_value(&self, field: &str) -> Option<String> {
        match field {
            "spec.holderIdentity" => self.spec.as_ref().and_then(|s| s.holder_identity.clone()),
            _ => None,
        }
    }

    fn table_columns() -> &'static [Column] {
        const COLUMNS: &[Column] = &[
            Column::name_column(),
            Column::new("Holder", "string", "The holder of the lease."),
            Column::age(),
        ];
        COLUMNS
    }

    fn table_row(&self, now: jiff::Timestamp) -> Vec<Value> {
        vec![
            table::name(&self.metadata),
            json!(
                self.spec
                    .as_ref()
                    .and_then(|s| s.holder_identity.clone())
                    .unwrap_or_default()
            ),
            table::meta_age(&self.metadata, now),
        ]
    }
}
