//! Pod: the consumer of claims. Stowage reads only its metadata, `spec.nodeName`,
//! `spec.volumes[].persistentVolumeClaim` and `status.phase`. Namespaced, with a status subresource.
//!
//! Unlike Kubernetes, a pod needs no containers here: Stowage is not a kubelet, and an
//! orchestrator should be able to declare "these claims are used on this node" and nothing more.

use k8s_openapi::api::core::v1::PodStatus;
use serde_json::{Value, json};

use super::table::{self, Column};
use super::validate;
use super::{KindInfo, KindStrategy, NameRule, Pod};
use crate::machinery::validation::{FieldErrors, Path, dns1123_label, dns1123_subdomain};

crate::string_enum! {
    /// Where a pod is in its life (`status.phase`).
    pub enum Phase { Pending, Running, Succeeded, Failed, Unknown }
}

/// A pod that has finished for good no longer needs its volumes.
pub fn is_terminated(pod: &Pod) -> bool {
    matches!(
        pod.status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .and_then(Phase::parse),
        Some(Phase::Succeeded | Phase::Failed)
    )
}

pub fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// The names of the claims the pod's volumes use.
pub fn claim_names(pod: &Pod) -> impl Iterator<Item = &str> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.as_str())
}

impl KindStrategy for Pod {
    const INFO: KindInfo = KindInfo {
        kind: "Pod",
        list_kind: "PodList",
        plural: "pods",
        singular: "pod",
        group: "",
        version: "v1",
        api_version: "v1",
        namespaced: true,
        short_names: &["po"],
        categories: &["all"],
        has_status: true,
        allow_create_on_update: false,
        name_rule: NameRule::Subdomain,
        field_labels: &["spec.nodeName", "status.phase", "spec.restartPolicy"],
    };

    fn prepare_for_create(&mut self) {
        self.status = Some(PodStatus {
            phase: Some(Phase::Pending.as_str().into()),
            ..Default::default()
        });
    }

    fn validate(&self, errs: &mut FieldErrors) {
        let p = Path::root("spec");
        let Some(spec) = &self.spec else {
            errs.required(&p, "");
            return;
        };
        let mut seen = std::collections::BTreeSet::new();
        for (i, v) in spec.volumes.iter().flatten().enumerate() {
            let vp = p.child("volumes").index(i);
            if v.name.is_empty() {
                errs.required(&vp.child("name"), "");
            } else {
                errs.syntax(&vp.child("name"), &v.name, dns1123_label(&v.name));
                if !seen.insert(v.name.as_str()) {
                    errs.duplicate(&vp.child("name"), &v.name);
                }
            }
            if let Some(claim) = &v.persistent_volume_claim {
                let cp = vp.child("persistentVolumeClaim").child("claimName");
                if claim.claim_name.is_empty() {
                    errs.required(&cp, "");
                } else {
                    errs.syntax(&cp, &claim.claim_name, dns1123_subdomain(&claim.claim_name));
                }
            }
        }
        for (i, c) in spec.containers.iter().enumerate() {
            if c.name.is_empty() {
                errs.required(&p.child("containers").index(i).child("name"), "");
            }
        }
        validate::optional_name(spec.node_name.as_ref(), &p.child("nodeName"), errs);
        if let Some(status) = &self.status {
            validate::one_of(
                status.phase.as_ref(),
                Phase::NAMES,
                &Path::root("status").child("phase"),
                errs,
            );
        }
    }

    fn validate_update(&self, old: &Self, errs: &mut FieldErrors) {
        let (Some(new_spec), Some(old_spec)) = (&self.spec, &old.spec) else {
            return;
        };
        let p = Path::root("spec");
        if new_spec.volumes != old_spec.volumes {
            errs.forbidden(&p.child("volumes"), "pod volumes may not be changed");
        }
        if let Some(old_node) = node_name(old)
            && node_name(self) != Some(old_node)
        {
            errs.forbidden(
                &p.child("nodeName"),
                "nodeName may only be set once: a scheduled pod does not move",
            );
        }
    }

    fn field_value(&self, field: &str) -> Option<String> {
        match field {
            "spec.nodeName" => node_name(self).map(str::to_string),
            "status.phase" => self.status.as_ref().and_then(|s| s.phase.clone()),
            "spec.restartPolicy" => self.spec.as_ref().and_then(|s| s.restart_policy.clone()),
            _ => None,
        }
    }

    fn table_columns() -> &'static [Column] {
        const COLUMNS: &[Column] = &[
            Column::name_column(),
            Column::new(
                "Ready",
                "string",
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            Column::new(
                "Status",
                "string",
                "The aggregate status of the containers in this pod.",
            ),
            Column::new(
                "Restarts",
                "string",
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            Column::age(),
            Column::new("IP", "string", "The IP address assigned to the pod").wide(),
            Column::new(
                "Node",
                "string",
                "The name of the node to which the pod is assigned",
            )
            .wide(),
        ];
        COLUMNS
    }

    fn table_row(&self, now: jiff::Timestamp) -> Vec<Value> {
        let status = self.status.clone().unwrap_or_default();
        let statuses = status.container_statuses.unwrap_or_default();
        let total = self.spec.as_ref().map_or(0, |s| s.containers.len());
        let ready = statuses.iter().filter(|c| c.ready).count();
        let restarts: i32 = statuses.iter().map(|c| c.restart_count).sum();
        let phase = if self.metadata.deletion_timestamp.is_some() {
            "Terminating".to_string()
        } else {
            status
                .reason
                .clone()
                .or(status.phase.clone())
                .unwrap_or_default()
        };
        vec![
            table::name(&self.metadata),
            json!(format!("{ready}/{total}")),
            json!(phase),
            json!(restarts.to_string()),
            table::meta_age(&self.metadata, now),
            table::or_none(status.pod_ip.as_deref()),
            table::or_none(node_name(self)),
        ]
    }
}
