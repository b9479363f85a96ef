//! PersistentVolume: one real volume. Cluster-scoped, with a status subresource.

use k8s_openapi::api::core::v1::{PersistentVolumeSpec, PersistentVolumeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use super::table::{self, Column};
use super::validate;
use super::{KindInfo, KindStrategy, NameRule, PersistentVolume};
use crate::machinery::quantity;
use crate::machinery::validation::{FieldErrors, Path, qualified_name};

crate::string_enum! {
    /// Where a volume is in its life (`status.phase`).
    pub enum Phase { Pending, Available, Bound, Released, Failed }
}

crate::string_enum! {
    /// What happens to a volume's storage once its claim is gone.
    pub enum ReclaimPolicy { Delete, Recycle, Retain }
}

/// The one node a volume is reachable from, if its node affinity pins it there: every term
/// requires `kubernetes.io/hostname` to be that node (a node-local volume).
pub fn pinned_node(pv: &PersistentVolume) -> Option<&str> {
    let terms = pv
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms
        .as_slice();
    fn node_of(t: &k8s_openapi::api::core::v1::NodeSelectorTerm) -> Vec<&str> {
        t.match_expressions
            .iter()
            .flatten()
            .filter(|e| e.key == super::names::node::HOSTNAME_LABEL && e.operator == "In")
            .filter_map(|e| match e.values.as_deref() {
                Some([one]) => Some(one.as_str()),
                _ => None,
            })
            .collect()
    }
    let candidate = *node_of(terms.first()?).first()?;
    terms
        .iter()
        .all(|t| node_of(t).contains(&candidate))
        .then_some(candidate)
}

/// The capacity in bytes, if the volume declares one.
pub fn capacity_bytes(pv: &PersistentVolume) -> Option<i64> {
    pv.spec
        .as_ref()?
        .capacity
        .as_ref()?
        .get("storage")
        .and_then(quantity::bytes_of)
}

pub fn phase(pv: &PersistentVolume) -> Option<Phase> {
    pv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .and_then(Phase::parse)
}

/// Sets the phase (and when it changed, `lastPhaseTransitionTime`) and the message.
pub fn set_phase(pv: &mut PersistentVolume, phase: Phase, message: Option<String>) {
    let status = pv.status.get_or_insert_with(Default::default);
    if status.phase.as_deref() != Some(phase.as_str()) {
        status.phase = Some(phase.as_str().to_string());
        status.last_phase_transition_time = Some(Time(jiff::Timestamp::now()));
    }
    status.message = message;
}

/// The reclaim policy (Kubernetes' default for a volume made by hand: Retain).
pub fn reclaim_policy(pv: &PersistentVolume) -> ReclaimPolicy {
    pv.spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .and_then(ReclaimPolicy::parse)
        .unwrap_or(ReclaimPolicy::Retain)
}

/// How many volume sources a spec names; a valid PV names exactly one.
fn source_count(s: &PersistentVolumeSpec) -> usize {
    [
        s.aws_elastic_block_store.is_some(),
        s.azure_disk.is_some(),
        s.azure_file.is_some(),
        s.cephfs.is_some(),
        s.cinder.is_some(),
        s.csi.is_some(),
        s.fc.is_some(),
        s.flex_volume.is_some(),
        s.flocker.is_some(),
        s.gce_persistent_disk.is_some(),
        s.glusterfs.is_some(),
        s.host_path.is_some(),
        s.iscsi.is_some(),
        s.local.is_some(),
        s.nfs.is_some(),
        s.photon_persistent_disk.is_some(),
        s.portworx_volume.is_some(),
        s.quobyte.is_some(),
        s.rbd.is_some(),
        s.scale_io.is_some(),
        s.storageos.is_some(),
        s.vsphere_volume.is_some(),
    ]
    .into_iter()
    .filter(|b| *b)
    .count()
}

/// The volume source fields alone, for the immutability check.
fn source_of(s: &PersistentVolumeSpec) -> PersistentVolumeSpec {
    PersistentVolumeSpec {
        access_modes: None,
        capacity: None,
        claim_ref: None,
        mount_options: None,
        node_affinity: None,
        persistent_volume_reclaim_policy: None,
        storage_class_name: None,
        volume_attributes_class_name: None,
        volume_mode: None,
        ..s.clone()
    }
}

impl KindStrategy for PersistentVolume {
    const INFO: KindInfo = KindInfo {
        kind: "PersistentVolume",
        list_kind: "PersistentVolumeList",
        plural: "persistentvolumes",
        singular: "persistentvolume",
        group: "",
        version: "v1",
        api_version: "v1",
        namespaced: false,
        short_names: &["pv"],
        categories: &[],
        has_status: true,
        allow_create_on_update: false,
        name_rule: NameRule::Subdomain,
        field_labels: &[
            "status.phase",
            "spec.storageClassName",
            "spec.claimRef.name",
            "spec.claimRef.namespace",
        ],
    };

    fn prepare_for_create(&mut self) {
        self.status = Some(PersistentVolumeStatus {
            phase: Some(Phase::Pending.as_str().into()),
            last_phase_transition_time: Some(Time(jiff::Timestamp::now())),
            ..Default::default()
        });
    }

    /// As Kubernetes: every phase change is stamped `lastPhaseTransitionTime`, whoever makes it
    /// (a client writing `/status` need not).
    fn prepare_for_update(&mut self, old: &Self) {
        let phase_of = |v: &Self| v.status.as_ref().and_then(|s| s.phase.clone());
        if phase_of(self) == phase_of(old) {
            return;
        }
        let old_time = old
            .status
            .as_ref()
            .and_then(|s| s.last_phase_transition_time.clone());
        if let Some(status) = self.status.as_mut()
            && (status.last_phase_transition_time.is_none()
                || status.last_phase_transition_time == old_time)
        {
            status.last_phase_transition_time = Some(Time(jiff::Timestamp::now()));
        }
    }

    fn default(&mut self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        spec.persistent_volume_reclaim_policy
            .get_or_insert_with(|| ReclaimPolicy::Retain.as_str().into());
        spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
        validate::canonicalize_quantities(spec.capacity.as_mut());
    }

    fn validate(&self, errs: &mut FieldErrors) {
        let p = Path::root("spec");
        let Some(spec) = &self.spec else {
            errs.required(&p, "");
            return;
        };
        // As Kubernetes: a named attributes class, on CSI volumes only (a driver modifies it).
        if let Some(class) = &spec.volume_attributes_class_name {
            let cp = p.child("volumeAttributesClassName");
            if class.is_empty() {
                errs.required(&cp, "an empty string is disallowed");
            } else {
                validate::optional_name(Some(class), &cp, errs);
            }
            if spec.csi.is_none() {
                errs.required(
                    &p.child("csi"),
                    "has to be specified when using volumeAttributesClassName",
                );
            }
        }
        validate::storage_size(
            spec.capacity.as_ref().and_then(|c| c.get("storage")),
            &p.child("capacity").key("storage"),
            errs,
        );
        for k in spec.capacity.iter().flat_map(|c| c.keys()) {
            if k != "storage" {
                errs.not_supported(&p.child("capacity").key(k), k, &["storage"]);
            }
        }
        validate::access_modes(spec.access_modes.as_ref(), &p.child("accessModes"), errs);
        validate::one_of(
            spec.persistent_volume_reclaim_policy.as_ref(),
            ReclaimPolicy::NAMES,
            &p.child("persistentVolumeReclaimPolicy"),
            errs,
        );
        validate::volume_mode(spec.volume_mode.as_ref(), &p.child("volumeMode"), errs);
        validate::optional_name(
            spec.storage_class_name.as_ref(),
            &p.child("storageClassName"),
            errs,
        );
        validate::mount_options(spec.mount_options.as_ref(), &p.child("mountOptions"), errs);
        match source_count(spec) {
            0 => errs.required(&p, "must specify a volume type"),
            1 => {}
            _ => errs.forbidden(&p, "may not specify more than 1 volume type"),
        }
        if let Some(csi) = &spec.csi {
            let cp = p.child("csi");
            if csi.driver.is_empty() {
                errs.required(&cp.child("driver"), "");
            } else {
                errs.syntax(
                    &cp.child("driver"),
                    &csi.driver,
                    qualified_name(&csi.driver.to_ascii_lowercase()),
                );
            }
            if csi.volume_handle.is_empty() {
                errs.required(&cp.child("volumeHandle"), "");
            }
        }
        if let Some(local) = &spec.local {
            if local.path.is_empty() {
                errs.required(&p.child("local").child("path"), "");
            }
            if spec
                .node_affinity
                .as_ref()
                .and_then(|a| a.required.as_ref())
                .is_none()
            {
                errs.required(
                    &p.child("nodeAffinity"),
                    "Local volume requires node affinity",
                );
            }
        }
        if let Some(hp) = &spec.host_path
            && hp.path.is_empty()
        {
            errs.required(&p.child("hostPath").child("path"), "");
        }
        if let Some(nfs) = &spec.nfs {
            if nfs.server.is_empty() {
                errs.required(&p.child("nfs").child("server"), "");
            }
            if !nfs.path.starts_with('/') {
                errs.invalid(
                    &p.child("nfs").child("path"),
                    &nfs.path,
                    "must be an absolute path",
                );
            }
        }
        if let Some(claim) = &spec.claim_ref {
            let cp = p.child("claimRef");
            if claim.name.as_deref().unwrap_or_default().is_empty() {
                errs.required(&cp.child("name"), "");
            }
            if claim.namespace.as_deref().unwrap_or_default().is_empty() {
                errs.required(&cp.child("namespace"), "");
            }
        }
        if let Some(required) = spec
            .node_affinity
            .as_ref()
            .and_then(|a| a.required.as_ref())
        {
            validate::node_selector(required, &p.child("nodeAffinity").child("required"), errs);
        }
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
        let (Some(new), Some(old)) = (&self.spec, &old.spec) else {
            return;
        };
        let p = Path::root("spec");
        if source_of(new) != source_of(old) {
            errs.forbidden(
                &p.child("persistentvolumesource"),
                "spec.persistentvolumesource is immutable after creation",
            );
        }
        if new.volume_mode != old.volume_mode {
            errs.immutable(&p.child("volumeMode"));
        }
        if old.node_affinity.is_some() && new.node_affinity != old.node_affinity {
            errs.immutable(&p.child("nodeAffinity"));
        }
        if old.volume_attributes_class_name.is_some() && new.volume_attributes_class_name.is_none()
        {
            errs.forbidden(
                &p.child("volumeAttributesClassName"),
                "update from non-nil value to nil is forbidden",
            );
        }
    }

    fn field_value(&self, field: &str) -> Option<String> {
        let spec = self.spec.as_ref();
        let claim = spec.and_then(|s| s.claim_ref.as_ref());
        match field {
            "status.phase" => Some(raw_phase(self)),
            "spec.storageClassName" => spec.and_then(|s| s.storage_class_name.clone()),
            "spec.claimRef.name" => claim.and_then(|c| c.name.clone()),
            "spec.claimRef.namespace" => claim.and_then(|c| c.namespace.clone()),
            _ => None,
        }
    }

    fn table_columns() -> &'static [Column] {
        const COLUMNS: &[Column] = &[
            Column::name_column(),
            Column::new("Capacity", "string", "capacity is the description of the persistent volume's resources and capacity."),
            Column::new("Access Modes", "string", "accessModes contains all ways the volume can be mounted."),
            Column::new("Reclaim Policy", "string", "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim."),
            Column::new("Status", "string", "phase indicates if a volume is available, bound to a claim, or released by a claim."),
            Column::new("Claim", "string", "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim."),
            Column::new("StorageClass", "string", "storageClassName is the name of StorageClass to which this persistent volume belongs."),
            Column::new("VolumeAttributesClass", "string", "VolumeAttributesClass the PersistentVolume uses."),
            Column::new("Reason", "string", "reason is a brief CamelCase string that describes any failure."),
            Column::age(),
            Column::new("VolumeMode", "string", "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state.").wide(),
        ];
        COLUMNS
    }

    fn table_row(&self, now: jiff::Timestamp) -> Vec<Value> {
        let spec = self.spec.clone().unwrap_or_default();
        let capacity = spec
            .capacity
            .as_ref()
            .and_then(|c| c.get("storage"))
            .map(|q| q.0.clone())
            .unwrap_or_default();
        let claim = spec
            .claim_ref
            .as_ref()
            .map(|c| {
                format!(
                    "{}/{}",
                    c.namespace.as_deref().unwrap_or_default(),
                    c.name.as_deref().unwrap_or_default()
                )
            })
            .unwrap_or_default();
        vec![
            table::name(&self.metadata),
            json!(capacity),
            json!(table::access_modes(spec.access_modes.as_ref())),
            json!(spec.persistent_volume_reclaim_policy.unwrap_or_default()),
            json!(raw_phase(self)),
            json!(claim),
            json!(spec.storage_class_name.unwrap_or_default()),
            json!(
                spec.volume_attributes_class_name
                    .unwrap_or_else(|| "<unset>".into())
            ),
            json!(
                self.status
                    .as_ref()
                    .and_then(|s| s.reason.clone())
                    .unwrap_or_default()
            ),
            table::meta_age(&self.metadata, now),
            json!(spec.volume_mode.unwrap_or_default()),
        ]
    }
}

/// The phase as written (also one this version does not know), for tables and field selectors.
fn raw_phase(o: &PersistentVolume) -> String {
    o.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(class: Option<&str>, csi: bool) -> PersistentVolume {
        let source = if csi {
            serde_json::json!({"csi": {"driver": "d.example.com", "volumeHandle": "h"}})
        } else {
            serde_json::json!({"hostPath": {"path": "/srv/v"}})
        };
        let mut spec = serde_json::json!({"capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"], "volumeAttributesClassName": class});
        spec.as_object_mut()
            .unwrap()
            .extend(source.as_object().unwrap().clone());
        serde_json::from_value(serde_json::json!({"metadata": {"name": "v"}, "spec": spec}))
            .unwrap()
    }

    fn fields(errs: &FieldErrors) -> Vec<&str> {
        errs.0.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn every_phase_change_is_stamped() {
        let stamped = |phase: &str, at: &str| {
            let mut v = volume(None, true);
            v.status = Some(PersistentVolumeStatus {
                phase: Some(phase.into()),
                last_phase_transition_time: Some(Time(at.parse().unwrap())),
                ..Default::default()
            });
            v
        };
        let old = stamped("Available", "2026-01-01T00:00:00Z");
        let mut new = stamped("Released", "2026-01-01T00:00:00Z");
        new.prepare_for_update(&old);
        let t = new.status.unwrap().last_phase_transition_time.unwrap().0;
        assert!(
            t > "2026-06-01T00:00:00Z".parse().unwrap(),
            "stamped now: {t}"
        );
        // A writer's own stamp is kept; no change, no stamp.
        let mut new = stamped("Released", "2026-02-02T00:00:00Z");
        new.prepare_for_update(&old);
        assert_eq!(
            new.status.unwrap().last_phase_transition_time.unwrap().0,
            "2026-02-02T00:00:00Z".parse().unwrap()
        );
        let mut same = stamped("Available", "2026-01-01T00:00:00Z");
        same.prepare_for_update(&old);
        assert_eq!(same, old);
    }

    #[test]
    fn an_attributes_class_needs_a_name_and_a_csi_volume_and_stays() {
        for (v, want) in [
            (volume(Some("gold"), true), vec![]),
            (
                volume(Some(""), true),
                vec!["spec.volumeAttributesClassName"],
            ),
            (volume(Some("gold"), false), vec!["spec.csi"]),
        ] {
            let mut errs = FieldErrors::new();
            v.validate(&mut errs);
            assert_eq!(fields(&errs), want);
        }
        let mut errs = FieldErrors::new();
        volume(None, true).validate_update(&volume(Some("gold"), true), &mut errs);
        assert_eq!(fields(&errs), ["spec.volumeAttributesClassName"]);
    }

    #[test]
    fn a_volume_is_pinned_only_when_every_term_names_one_and_the_same_node() {
        let pv = |terms: serde_json::Value| -> PersistentVolume {
            serde_json::from_value(json!({"metadata": {"name": "v"},
                "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": terms}}}}))
            .unwrap()
        };
        let host = |values: serde_json::Value| json!({"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": values}]});
        assert_eq!(pinned_node(&pv(json!([host(json!(["n1"]))]))), Some("n1"));
        assert_eq!(
            pinned_node(&pv(json!([host(json!(["n1"])), host(json!(["n1"]))]))),
            Some("n1")
        );
        // Two nodes, or a term that allows another: not one node's.
        assert_eq!(pinned_node(&pv(json!([host(json!(["n1", "n2"]))]))), None);
        assert_eq!(
            pinned_node(&pv(json!([host(json!(["n1"])), host(json!(["n2"]))]))),
            None
        );
        assert_eq!(
            pinned_node(&pv(
                json!([{"matchExpressions": [{"key": "topology.kubernetes.io/zone",
                "operator": "In", "values": ["z"]}]}])
            )),
            None
        );
        assert_eq!(pinned_node(&pv(json!([]))), None);
    }
}
