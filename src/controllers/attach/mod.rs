//! Attach/detach: volumes follow their pods to nodes, safely.
//!
//! Two controllers, as in Kubernetes (attach-detach controller and external attacher):
//! - [`desired`] turns pods into VolumeAttachments: one per (volume, node) pair that a
//!   scheduled, running pod needs; it refuses a second node for single-node volumes, a node
//!   outside the volume's node affinity, and a node at its attachment limit, and it deletes
//!   attachments no longer needed only when that is safe (the node does not report the volume
//!   in use, or the node is out of service, or it has been unhealthy for too long);
//! - [`attacher`] turns VolumeAttachments into provider calls, writes `status.attached`,
//!   `attachmentMetadata` and errors, holds a finalizer until detach succeeded, and keeps
//!   `Node.status.volumesAttached` current.
//!
//! Every provider gets VolumeAttachments, including those with nothing to attach (local, NFS),
//! so an orchestrator always has one flow: create the pod, wait for its attachments, read how
//! to mount from `status.attachmentMetadata`.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use sha2::{Digest, Sha256};

pub mod attacher;
pub mod desired;

use crate::resources::names::node::{MAX_ATTACHMENTS_ANNOTATION, OUT_OF_SERVICE_TAINT};

/// The VolumeAttachment name for a volume on a node, as Kubernetes' CSI attacher derives it.
pub fn attachment_name(driver: &str, handle: &str, node: &str) -> String {
    let digest = Sha256::digest(format!("{handle}{driver}{node}").as_bytes());
    format!("csi-{}", hex::encode(digest))
}

/// The name a node uses for a volume in `status.volumesInUse` and `volumesAttached`.
pub fn unique_volume_name(driver: &str, handle: &str) -> String {
    format!("kubernetes.io/csi/{driver}^{handle}")
}

/// Whether the node is declared out of service.
pub fn out_of_service(node: &Node) -> bool {
    crate::resources::node::has_taint(node, OUT_OF_SERVICE_TAINT)
}

/// Since when the node has been unhealthy (its Ready condition not True), if it is; `now`
/// when its condition says no time.
pub fn unhealthy_since(node: &Node, now: Timestamp) -> Option<Timestamp> {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))?;
    (ready.status != "True").then(|| {
        ready
            .last_transition_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(now)
    })
}

/// Whether `volume` (a unique volume name) is reported in use by the node.
pub fn in_use(node: &Node, volume: &str) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.volumes_in_use.as_ref())
        .is_some_and(|v| v.iter().any(|u| u == volume))
}

/// The attachment limit an admin set on a node, for `driver` or for all drivers.
pub fn node_limit(node: Option<&Node>, driver: &str) -> Option<u32> {
    let meta = &node?.metadata;
    let per_driver = format!("{MAX_ATTACHMENTS_ANNOTATION}.{driver}");
    [&meta.annotations, &meta.labels]
        .into_iter()
        .flatten()
        .find_map(|m| {
            m.get(&per_driver)
                .or_else(|| m.get(MAX_ATTACHMENTS_ANNOTATION))
        })
        .and_then(|v| v.parse().ok())
}

/// A node as providers are told of it for `driver`'s volumes (also when the Node object is
/// missing: its name is then all there is).
pub fn node_info(name: &str, node: Option<&Node>, driver: &str) -> stowage_provider::NodeInfo {
    stowage_provider::NodeInfo {
        name: name.to_string(),
        labels: crate::resources::node::labels_for(name, node),
        provider_id: node.and_then(|n| n.spec.as_ref()?.provider_id.clone()),
        max_attachments: node_limit(node, driver),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_names_are_deterministic_and_distinct() {
        let a = attachment_name("local.stowage.dev", "pvc-1", "n1");
        assert_eq!(a, attachment_name("local.stowage.dev", "pvc-1", "n1"));
        assert_ne!(a, attachment_name("local.stowage.dev", "pvc-1", "n2"));
        assert!(a.starts_with("csi-") && a.len() == 4 + 64);
    }
}
