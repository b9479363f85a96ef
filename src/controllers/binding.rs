//! The bind write: a claim and a volume marked as each other's. The binder (matching an
//! existing volume) and the provisioner (a new one) both build it here, so a bound pair looks
//! the same whoever bound it: the volume's `claimRef` and phase, the claim's `volumeName`,
//! phase, capacity and access modes, and Kubernetes' bind annotations.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::resources::names::annotations::{BIND_COMPLETED, BOUND_BY_CONTROLLER};
use crate::resources::{PersistentVolume, PersistentVolumeClaim, pv, pvc};

/// Which side the controller chose (Kubernetes' `pv.kubernetes.io/bound-by-controller`): a
/// volume that already named the claim, or a claim that already named the volume, was bound
/// by the user who named it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChosenBy {
    pub volume: bool,
    pub claim: bool,
}

/// A reference to `claim`, as a volume's `claimRef`.
pub fn claim_ref(claim: &PersistentVolumeClaim) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: claim.metadata.namespace.clone(),
        name: claim.metadata.name.clone(),
        uid: claim.metadata.uid.clone(),
        resource_version: claim.metadata.resource_version.clone(),
        field_path: None,
    }
}

/// Marks `volume` and `claim` as bound to each other, at `now`.
pub fn bind(
    claim: &mut PersistentVolumeClaim,
    volume: &mut PersistentVolume,
    chosen: ChosenBy,
    now: Time,
) {
    let vspec = volume.spec.get_or_insert_with(Default::default);
    vspec.claim_ref = Some(claim_ref(claim));
    let capacity = vspec.capacity.clone();
    let modes = vspec.access_modes.clone();
    let attributes_class = vspec.volume_attributes_class_name.clone();
    if chosen.volume {
        volume
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(BOUND_BY_CONTROLLER.into(), "yes".into());
    }
    let vstatus = volume.status.get_or_insert_with(Default::default);
    vstatus.phase = Some(pv::Phase::Bound.as_str().into());
    vstatus.last_phase_transition_time = Some(now);
    vstatus.message = None;
    vstatus.reason = None;

    claim.spec.get_or_insert_with(Default::default).volume_name = volume.metadata.name.clone();
    let annotations = claim.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(BIND_COMPLETED.into(), "yes".into());
    if chosen.claim {
        annotations.insert(BOUND_BY_CONTROLLER.into(), "yes".into());
    }
    let cstatus = claim.status.get_or_insert_with(Default::default);
    cstatus.phase = Some(pvc::Phase::Bound.as_str().into());
    cstatus.capacity = capacity;
    cstatus.access_modes = modes;
    // The volume's attributes are what its class says (Kubernetes sets this on binding too).
    cstatus.current_volume_attributes_class_name = attributes_class;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PersistentVolumeSpec;

    #[test]
    fn a_bound_pair_names_each_other_and_the_claim_takes_the_volumes_size() {
        let mut claim = PersistentVolumeClaim::default();
        claim.metadata.name = Some("data".into());
        claim.metadata.namespace = Some("team-a".into());
        claim.metadata.uid = Some("u1".into());
        let mut volume = PersistentVolume::default();
        volume.metadata.name = Some("pv-1".into());
        volume.spec = Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([(
                "storage".to_string(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("5Gi".into()),
            )])),
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            ..Default::default()
        });
        let now = Time(jiff::Timestamp::UNIX_EPOCH);
        bind(
            &mut claim,
            &mut volume,
            ChosenBy {
                volume: true,
                claim: false,
            },
            now,
        );

        let r = volume.spec.as_ref().unwrap().claim_ref.as_ref().unwrap();
        assert_eq!(r.uid.as_deref(), Some("u1"));
        assert_eq!(pv::phase(&volume), Some(pv::Phase::Bound));
        assert!(
            volume
                .metadata
                .annotations
                .as_ref()
                .unwrap()
                .contains_key(BOUND_BY_CONTROLLER)
        );
        assert_eq!(
            claim.spec.as_ref().unwrap().volume_name.as_deref(),
            Some("pv-1")
        );
        assert!(pvc::is_bound(&claim));
        let a = claim.metadata.annotations.as_ref().unwrap();
        assert!(a.contains_key(BIND_COMPLETED));
        assert!(
            !a.contains_key(BOUND_BY_CONTROLLER),
            "the claim named its volume"
        );
        let status = claim.status.as_ref().unwrap();
        assert_eq!(status.capacity.as_ref().unwrap()["storage"].0, "5Gi");
        assert_eq!(
            status.access_modes.as_deref(),
            Some(&["ReadWriteOnce".to_string()][..])
        );
    }
}
