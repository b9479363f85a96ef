//! Well-known names that several layers share: annotations, finalizers, labels, taints and
//! namespaces with a meaning, as Kubernetes defines them (or Stowage, under `stowage.dev/`).
//! They live here, below every layer that uses them, so that no layer reaches up for a name.

/// Annotations Kubernetes' volume controllers use, with the same meanings.
pub mod annotations {
    /// On a claim: the binder finished binding it.
    pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
    /// On a claim or volume: the binder (not a user) set `volumeName` / `claimRef`.
    pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
    /// On a claim: which provisioner is asked to make its volume.
    pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
    pub const BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
    /// On a claim of a WaitForFirstConsumer class: the node its first consumer runs on.
    pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
    /// On a volume: the provisioner that made it.
    pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
    /// On a claim: its volume is being filled from this data source (`<Kind>/<name>`); put
    /// there before the provider is first asked, so that what it copies from is held.
    pub const COPYING_FROM: &str = "stowage.dev/copying-from";
    /// On a VolumeAttachment being deleted: detach even though the node may still use the
    /// volume.
    pub const FORCE_DETACH: &str = "stowage.dev/force-detach";
    /// On a VolumeAttachment: the volume handle, so detach works even if the volume object
    /// is gone.
    pub const VOLUME_HANDLE: &str = "stowage.dev/volume-handle";
}

/// Finalizers the controllers own.
pub mod finalizers {
    /// The attacher's finalizer on a VolumeAttachment, held until the volume is detached.
    pub const ATTACHER: &str = "external-attacher/stowage";
    /// A claim used by a running pod is not removed.
    pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
    /// A bound volume is not removed.
    pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";
    /// A provisioned volume object stays until its backing storage is deleted.
    pub const PROVISIONED_VOLUME: &str = "external-provisioner.volume.kubernetes.io/finalizer";
    /// A VolumeSnapshot stays until its content is dealt with (deleted, or released when
    /// retained).
    pub const SNAPSHOT_BOUND: &str =
        "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection";
    /// A VolumeSnapshotContent stays until the provider's snapshot is deleted (or retained) and
    /// its VolumeSnapshot has let it go.
    pub const CONTENT_BOUND: &str =
        "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection";
    /// A claim stays while a snapshot of it is being taken (bounded: see the snapshot
    /// controllers).
    pub const PVC_AS_SNAPSHOT_SOURCE: &str =
        "snapshot.storage.kubernetes.io/pvc-as-source-protection";
    /// A claim stays while a clone of it is being made.
    pub const PVC_CLONE_SOURCE: &str = "provisioner.storage.kubernetes.io/cloning-protection";
}

/// Labels with a meaning.
pub mod labels {
    /// On a VolumeSnapshotContent: the node whose agent takes and deletes its snapshot (a
    /// node-local volume's), as Kubernetes' distributed snapshotting labels it.
    pub const SNAPSHOT_MANAGED_BY: &str = "snapshot.storage.kubernetes.io/managed-by";
}

/// Stowage's own objects, such as the controllers' leader-election Lease (as Kubernetes'
/// `kube-system`).
pub const SYSTEM_NAMESPACE: &str = "stowage-system";

/// The Lease whose holder runs the controllers when several replicas serve one database.
pub const CONTROLLERS_LEASE: &str = "stowage-controllers";

/// Where nodes keep their heartbeat Leases (as Kubernetes' `kube-node-lease`).
pub const LEASE_NAMESPACE: &str = "stowage-node-lease";

/// Events about cluster-scoped objects are filed here, as Kubernetes does.
pub const CLUSTER_EVENTS_NAMESPACE: &str = "default";

/// Node taints, labels and annotations with a meaning.
pub mod node {
    /// The taint that declares a node gone for good: its volumes are detached at once.
    pub const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";
    /// On a Node: the most volumes that may be attached to it (any provider), or
    /// `<this>.<driver>` for one provider.
    pub const MAX_ATTACHMENTS_ANNOTATION: &str = "stowage.dev/max-volume-attachments";
    pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
    pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
    pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
    pub const INSTANCE_TYPE_LABEL: &str = "node.kubernetes.io/instance-type";

    /// Labels (and annotations) that place a node or size it: once a node has registered, only
    /// an admin may change them, as Kubernetes' NodeRestriction has it. A node that could
    /// rewrite its zone would attract other zones' volumes; one that could raise its own
    /// attach limit would take more than its share.
    pub fn is_protected_key(key: &str) -> bool {
        // Any `topology.<domain>/` key: providers place volumes by them (the provisioner reads
        // every one, EBS reads `topology.ebs.csi.aws.com/zone`).
        key.starts_with("topology.")
            || key.starts_with("failure-domain.beta.kubernetes.io/")
            || key.starts_with("node-restriction.kubernetes.io/")
            || key.starts_with(MAX_ATTACHMENTS_ANNOTATION)
            || key == HOSTNAME_LABEL
            || key == INSTANCE_TYPE_LABEL
            || key == "beta.kubernetes.io/instance-type"
    }
}
