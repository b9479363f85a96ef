//! The Stowage provider SDK: the contract between Stowage's controllers and a storage backend.
//!
//! A provider turns volume operations into real storage: a directory, an NFS subdirectory, an
//! EBS volume. It knows nothing of Kubernetes objects; the controllers translate claims,
//! classes, volumes and nodes into the plain requests defined here, and the provider's answers
//! back into objects.
//!
//! Every operation is **idempotent and keyed by the volume name** (`pvc-<claim uid>`), because
//! the controllers retry after errors, timeouts and crashes: a second `create_volume` with the
//! same name and parameters must return the same volume, a `delete_volume` of a volume that is
//! already gone must succeed.
//!
//! Errors are classified ([`ErrorKind`]); the controllers retry only what is
//! [`ProviderError::is_temporary`] quickly, and report the rest on the claim.
//!
//! [`conformance`] is the behaviour suite every provider runs against itself; see
//! `providers/sdk/README.md` for how to write a provider and run it.

use std::collections::BTreeMap;
use std::fmt;

pub mod conformance;
pub mod copies;
pub mod duration;
pub mod factory;
pub mod faults;
pub mod keyed_lock;
pub mod memory;
pub mod params;
pub mod quantity;
pub mod redact;
#[cfg(feature = "testing")]
pub mod testing;

/// Access modes, as in Kubernetes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccessMode {
    ReadWriteOnce,
    ReadOnlyMany,
    ReadWriteMany,
    ReadWriteOncePod,
}

impl AccessMode {
    pub const ALL: [AccessMode; 4] = [
        AccessMode::ReadWriteOnce,
        AccessMode::ReadOnlyMany,
        AccessMode::ReadWriteMany,
        AccessMode::ReadWriteOncePod,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ReadWriteOnce" => Some(Self::ReadWriteOnce),
            "ReadOnlyMany" => Some(Self::ReadOnlyMany),
            "ReadWriteMany" => Some(Self::ReadWriteMany),
            "ReadWriteOncePod" => Some(Self::ReadWriteOncePod),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadWriteOnce => "ReadWriteOnce",
            Self::ReadOnlyMany => "ReadOnlyMany",
            Self::ReadWriteMany => "ReadWriteMany",
            Self::ReadWriteOncePod => "ReadWriteOncePod",
        }
    }

    /// Whether a volume with this mode may be attached to one node only.
    pub fn is_single_node(self) -> bool {
        matches!(self, Self::ReadWriteOnce | Self::ReadWriteOncePod)
    }
}

/// What a provider can do. A plain value: the controllers read it to decide which operations to
/// call, and the conformance kit to decide which behaviours to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// `create_volume` and `delete_volume` work (dynamic provisioning).
    pub dynamic_provisioning: bool,
    /// `attach` does real work that takes time (EBS). When false, attach is a check that
    /// answers at once (local, NFS); the controllers still call it, so every provider gets
    /// VolumeAttachments with mount information.
    pub attach_required: bool,
    /// `expand_volume` works.
    pub expansion: bool,
    /// After `expand_volume` the filesystem on the volume must still be grown on the node that
    /// mounts it (a block device: EBS). The claim then shows `FileSystemResizePending` until a
    /// node agent has grown it, as in Kubernetes.
    pub node_expansion: bool,
    /// The snapshot operations work: `create_snapshot`, `snapshot_info`, `delete_snapshot`, and
    /// `create_volume` from [`ContentSource::Snapshot`].
    pub snapshots: bool,
    /// `create_volume` from [`ContentSource::Volume`] works: a new volume starts as a copy of an
    /// existing one of this provider (a PersistentVolumeClaim `dataSource`).
    pub clones: bool,
    /// The access modes volumes of this provider support.
    pub access_modes: Vec<AccessMode>,
    /// Volumes are reachable only from some nodes; `Volume::accessible_topology` says which.
    pub topology: bool,
    /// At most this many volumes of this provider attached to one node (`None`: no limit).
    pub max_attachments_per_node: Option<u32>,
    /// `modify_volume` works: a live volume's mutable attributes (a VolumeAttributesClass's
    /// parameters) can change.
    pub volume_modification: bool,
    /// `capacity` reports the room left for new volumes (published as CSIStorageCapacity).
    pub storage_capacity: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            dynamic_provisioning: true,
            attach_required: false,
            expansion: false,
            node_expansion: false,
            snapshots: false,
            clones: false,
            access_modes: vec![AccessMode::ReadWriteOnce],
            topology: false,
            max_attachments_per_node: None,
            volume_modification: false,
            storage_capacity: false,
        }
    }
}

/// A set of topology labels, e.g. `{"kubernetes.io/hostname": "node-1"}` or
/// `{"topology.kubernetes.io/zone": "us-east-1a"}`. A node is in a topology if it carries every
/// label with the same value.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Topology(pub BTreeMap<String, String>);

impl Topology {
    pub fn one(key: &str, value: &str) -> Self {
        Topology(BTreeMap::from([(key.to_string(), value.to_string())]))
    }

    /// Whether a node with `labels` lies in this topology.
    pub fn admits(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// Where a new volume must (requisite) or should (preferred) be reachable from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopologyRequirement {
    /// The volume must be accessible from at least one of these; empty means anywhere.
    pub requisite: Vec<Topology>,
    /// In order of preference (the first is the node a consuming pod was scheduled to).
    pub preferred: Vec<Topology>,
}

/// The claim a volume is created for, for naming templates and tags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClaimRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The claim's annotations (for naming templates such as the NFS provider's `subDir`).
    pub annotations: BTreeMap<String, String>,
}

/// Where a new volume's content comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContentSource {
    /// A snapshot of this provider, by its id.
    Snapshot { snapshot_id: String },
    /// A copy of an existing volume of this provider (a clone), by its handle and attributes.
    Volume {
        handle: String,
        attributes: BTreeMap<String, String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateVolumeRequest {
    /// The idempotency key: `pvc-<claim uid>`. Only `[a-z0-9-]`, at most 63 characters.
    pub name: String,
    /// The requested size; the volume may be larger, never smaller.
    pub capacity_bytes: i64,
    pub access_modes: Vec<AccessMode>,
    /// True for raw block volumes (`volumeMode: Block`).
    pub block: bool,
    /// The StorageClass parameters, passed as given: the provider validates them.
    pub parameters: BTreeMap<String, String>,
    pub mount_options: Vec<String>,
    pub topology: TopologyRequirement,
    pub claim: ClaimRef,
    pub content_source: Option<ContentSource>,
    /// The claim's VolumeAttributesClass parameters (`spec.volumeAttributesClassName`), which
    /// `modify_volume` may change later; empty without one. Requires `volume_modification`.
    pub mutable_parameters: BTreeMap<String, String>,
}

/// A volume as the provider made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    /// The provider's handle (`spec.csi.volumeHandle`): what every later call names.
    pub handle: String,
    pub capacity_bytes: i64,
    /// Stored on the PersistentVolume (`spec.csi.volumeAttributes`) and passed back to
    /// `delete_volume` and `attach`: whatever the provider needs then, since the class may be
    /// gone by that time.
    pub attributes: BTreeMap<String, String>,
    /// Where the volume is reachable from (becomes the PV's node affinity); empty: everywhere.
    pub accessible_topology: Vec<Topology>,
}

/// A volume as `list_volumes` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeInfo {
    /// The name it was created with (`pvc-<uid>`).
    pub name: String,
    pub handle: String,
    pub capacity_bytes: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteVolumeRequest {
    pub handle: String,
    /// The attributes the volume was created with.
    pub attributes: BTreeMap<String, String>,
}

/// The node a volume attaches to, as the controllers know it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    /// The Node's labels (topology, instance type); `kubernetes.io/hostname` is always present.
    pub labels: BTreeMap<String, String>,
    /// `spec.providerID`, e.g. `aws:///us-east-1a/i-0123`.
    pub provider_id: Option<String>,
    /// Per-node attachment limit set by an admin (label or annotation), overriding the default.
    pub max_attachments: Option<u32>,
}

/// What a provider is on one node, as the node's CSINode publishes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeDriverInfo {
    /// The provider's own name for the node (an EC2 instance id; the node's name otherwise).
    pub node_id: String,
    /// The node labels the provider's volumes are placed by (`kubernetes.io/hostname`,
    /// `topology.kubernetes.io/zone`); empty when its volumes are reachable everywhere.
    pub topology_keys: Vec<String>,
    /// At most this many of its volumes attached to the node (`None`: no limit).
    pub max_volumes: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachRequest {
    pub handle: String,
    pub attributes: BTreeMap<String, String>,
    pub node: NodeInfo,
    pub read_only: bool,
    pub access_modes: Vec<AccessMode>,
    pub mount_options: Vec<String>,
    pub fs_type: Option<String>,
}

/// How a node uses an attached volume: written to `VolumeAttachment.status.attachmentMetadata`.
/// Conventional keys: `type` (`local`, `nfs`, `block`), `path`, `server`, `share`, `devicePath`,
/// `fsType`, `mountOptions` (comma-separated), `readOnly`.
pub type PublishInfo = BTreeMap<String, String>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetachRequest {
    pub handle: String,
    pub attributes: BTreeMap<String, String>,
    pub node: NodeInfo,
    /// Detach even if the node may still use the volume (the node is out of service).
    pub force: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpandRequest {
    pub handle: String,
    pub attributes: BTreeMap<String, String>,
    pub capacity_bytes: i64,
}

/// The result of an expansion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expanded {
    pub capacity_bytes: i64,
    /// A state to report while the backend is still modifying the volume (EBS `optimizing`).
    pub in_progress: Option<String>,
}

/// Room for new volumes in one topology, as CSI's GetCapacity answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapacityReport {
    /// Where this room is reachable from; empty: from every node.
    pub topology: Topology,
    /// Bytes new volumes may still take in all.
    pub available_bytes: i64,
    /// The largest single volume that fits now (`None`: as large as `available_bytes`).
    pub maximum_volume_bytes: Option<i64>,
}

/// A change of a live volume's mutable attributes, as a VolumeAttributesClass names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModifyRequest {
    pub handle: String,
    /// The attributes the volume was created with.
    pub attributes: BTreeMap<String, String>,
    /// The class's parameters, as given: the provider validates them.
    pub parameters: BTreeMap<String, String>,
}

/// A request to snapshot a volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRequest {
    /// The idempotency key: `snapshot-<VolumeSnapshot uid>`, in the same alphabet as volume names.
    pub name: String,
    pub source_handle: String,
    /// The attributes the source volume was created with.
    pub source_attributes: BTreeMap<String, String>,
    /// The VolumeSnapshotClass's parameters, as given: the provider validates them.
    pub parameters: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub id: String,
    pub source_handle: String,
    /// The smallest volume it restores into (the source volume's size).
    pub size_bytes: i64,
    pub ready: bool,
    /// How far a snapshot that is not ready yet has got, where the provider knows.
    pub progress: Option<Progress>,
}

/// How far a long operation (a copy) has got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub done_bytes: i64,
    pub total_bytes: i64,
}

impl Progress {
    /// Whole percent done, 0–100.
    pub fn percent(&self) -> i64 {
        if self.total_bytes <= 0 {
            return 100;
        }
        (self.done_bytes.clamp(0, self.total_bytes) as i128 * 100 / self.total_bytes as i128) as i64
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} copied ({}%)",
            quantity::Quantity::from_units(self.done_bytes).canonical(),
            quantity::Quantity::from_units(self.total_bytes).canonical(),
            self.percent()
        )
    }
}

/// The class of a failure, in the manner of CSI status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request can never succeed as given (bad parameter, bad size). Final.
    InvalidArgument,
    /// The volume, node or snapshot does not exist.
    NotFound,
    /// A volume with this name exists with different parameters. Final.
    AlreadyExists,
    /// Out of capacity, or a per-node attachment limit reached. May succeed later.
    ResourceExhausted,
    /// The operation cannot happen in the current state (a volume still attached). Retry.
    FailedPrecondition,
    /// A transient failure (timeout, throttling, server unreachable). Retry with backoff.
    Temporary,
    /// The provider does not do this.
    Unsupported,
    /// The operation started earlier is still running (a long copy); asking again with the same
    /// request continues it. The message says how far it got. Retried, not reported as a failure.
    InProgress,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "InvalidArgument",
            ErrorKind::NotFound => "NotFound",
            ErrorKind::AlreadyExists => "AlreadyExists",
            ErrorKind::ResourceExhausted => "ResourceExhausted",
            ErrorKind::FailedPrecondition => "FailedPrecondition",
            ErrorKind::Temporary => "Temporary",
            ErrorKind::Unsupported => "Unsupported",
            ErrorKind::InProgress => "InProgress",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderError {
    pub kind: ErrorKind,
    pub message: String,
    /// How far the operation got, for `InProgress`.
    pub progress: Option<Progress>,
}

impl ProviderError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ProviderError {
            kind,
            message: message.into(),
            progress: None,
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlreadyExists, message)
    }
    pub fn exhausted(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ResourceExhausted, message)
    }
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::FailedPrecondition, message)
    }
    pub fn temporary(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Temporary, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }
    /// Still running: `progress` says how far.
    pub fn in_progress(what: &str, progress: Progress) -> Self {
        ProviderError {
            progress: Some(progress),
            ..Self::new(ErrorKind::InProgress, format!("{what}: {progress}"))
        }
    }

    /// Whether retrying soon may help.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Temporary | ErrorKind::FailedPrecondition | ErrorKind::InProgress
        )
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for ProviderError {}

pub type Result<T> = std::result::Result<T, ProviderError>;

/// The contract. Each method's documentation is its required behaviour; the conformance kit
/// checks it.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The provisioner name StorageClasses use (`local.stowage.dev`). Also the CSI driver name on
    /// PersistentVolumes and the attacher name on VolumeAttachments.
    fn name(&self) -> &str;

    fn capabilities(&self) -> Capabilities;

    /// The StorageClass parameters this provider takes, described for people: the console's
    /// class form and `stowage providers` show them. Empty when the provider does not say. A
    /// provider that describes its parameters describes all of them and refuses any other
    /// name (the conformance kit checks it), so a typo is an error, not a silent default.
    fn class_parameters(&self) -> Vec<params::ClassParameter> {
        Vec::new()
    }

    /// Checks a class's parameters as `create_volume` would, before any claim exists: refuses
    /// (with `InvalidArgument` and the message `create_volume` would give) what no claim
    /// could be provisioned with. Rules that depend on a claim's size are left to
    /// `create_volume`. Must not call the backend.
    fn check_class_parameters(&self, _parameters: &BTreeMap<String, String>) -> Result<()> {
        Ok(())
    }

    /// Creates a volume of at least `capacity_bytes`, named `req.name`.
    ///
    /// Requires `dynamic_provisioning`. Behaviour:
    /// - the same name with the same size and parameters returns the existing volume (same
    ///   handle), also from another provider instance (after a restart);
    /// - the same name with a different size or parameters fails with `AlreadyExists`;
    /// - concurrent calls with one name create one volume;
    /// - invalid parameters fail with `InvalidArgument` before anything is created;
    /// - no room fails with `ResourceExhausted`, and creates nothing;
    /// - a volume the request's topology cannot reach is never created;
    /// - with a `content_source`, the volume starts with that snapshot's or volume's data. A
    ///   source larger than the request fails with `InvalidArgument`; a missing one with
    ///   `NotFound`. A provider that copies data may answer `InProgress` (with progress) until
    ///   the copy is done; the same request is then asked again.
    async fn create_volume(&self, req: &CreateVolumeRequest) -> Result<Volume>;

    /// Deletes a volume. A volume that does not exist is success. A volume that cannot be
    /// deleted yet (still attached) fails with `FailedPrecondition`. Deletes nothing but the
    /// volume itself.
    async fn delete_volume(&self, req: &DeleteVolumeRequest) -> Result<()>;

    /// Makes the volume usable on `req.node` and says how to mount it.
    ///
    /// Behaviour: attaching twice returns the same information; an unknown node or volume fails
    /// with `NotFound`; a node outside the volume's topology fails with `InvalidArgument`; a node
    /// at its attachment limit fails with `ResourceExhausted`.
    async fn attach(&self, req: &AttachRequest) -> Result<PublishInfo>;

    /// Undoes `attach`. Detaching a volume that is not attached (or does not exist) is success.
    async fn detach(&self, req: &DetachRequest) -> Result<()>;

    /// Grows a volume to at least `capacity_bytes`. Requires `expansion`. Never shrinks:
    /// a smaller size than the current one returns the current size.
    async fn expand_volume(&self, _req: &ExpandRequest) -> Result<Expanded> {
        Err(ProviderError::unsupported(
            "this provider cannot expand volumes",
        ))
    }

    /// Changes a live volume's mutable attributes to `req.parameters` (a VolumeAttributesClass's).
    /// Requires `volume_modification`. Behaviour:
    /// - parameters this provider does not know, or values it can never reach for this volume
    ///   (outside the backend's limits), fail with `InvalidArgument` before anything changes:
    ///   the claim shows the target as Infeasible;
    /// - modifying to what the volume already is succeeds and changes nothing;
    /// - a temporary failure (throttling, a modification still running) is retried.
    async fn modify_volume(&self, _req: &ModifyRequest) -> Result<()> {
        Err(ProviderError::unsupported(
            "this provider cannot modify a volume's attributes",
        ))
    }

    /// The room left for new volumes of a class with these parameters, per topology (one
    /// report per node for node-local storage, one reachable everywhere for a network share).
    /// Requires `storage_capacity`. Must not count what is only reserved by creates that
    /// failed, and must be cheap enough to ask every few seconds.
    async fn capacity(
        &self,
        _parameters: &BTreeMap<String, String>,
    ) -> Result<Vec<CapacityReport>> {
        Err(ProviderError::unsupported(
            "this provider does not report its capacity",
        ))
    }

    /// What this provider is on `node`: the node's CSINode entry. By default, the node's name,
    /// no topology keys, and the attachment limit the node's labels or annotations set, else
    /// the provider's own.
    fn node_driver_info(&self, node: &NodeInfo) -> NodeDriverInfo {
        NodeDriverInfo {
            node_id: node.name.clone(),
            topology_keys: Vec::new(),
            max_volumes: node
                .max_attachments
                .or(self.capabilities().max_attachments_per_node),
        }
    }

    /// Every volume this provider manages (made by `create_volume`), for orphan checks; and
    /// what a `create_volume` still in progress has made so far (a copy under way, a temporary
    /// snapshot), under the volume's name, with a handle `delete_volume` removes. The orphan
    /// sweep deletes whatever is listed for a claim that is gone, so a claim deleted halfway
    /// through its volume's creation leaves nothing behind.
    async fn list_volumes(&self) -> Result<Vec<VolumeInfo>>;

    /// Requests this provider has made to its backend since it started, by request type (an
    /// NFS procedure, an EC2 action) and outcome (`ok`, or what went wrong), retries included.
    /// The server exports them as `stowage_provider_backend_requests_total`; benchmarks read
    /// them to report requests per volume.
    fn backend_requests(&self) -> BTreeMap<(String, String), u64> {
        BTreeMap::new()
    }

    /// Creates a snapshot named `req.name` of the volume. Requires `snapshots`. Idempotent by
    /// name: asking again returns the same snapshot, with `ready` once it can be restored from
    /// (and `progress` meanwhile, where the provider copies). Unknown class parameters fail with
    /// `InvalidArgument`; a missing source volume with `NotFound`.
    async fn create_snapshot(&self, _req: &SnapshotRequest) -> Result<Snapshot> {
        Err(ProviderError::unsupported("this provider has no snapshots"))
    }

    /// An existing snapshot by id, for importing one made outside Stowage (a pre-provisioned
    /// VolumeSnapshotContent). A missing one fails with `NotFound`. Requires `snapshots`.
    async fn snapshot_info(&self, _id: &str) -> Result<Snapshot> {
        Err(ProviderError::unsupported("this provider has no snapshots"))
    }

    /// Deletes a snapshot; a missing one is success. Requires `snapshots`.
    async fn delete_snapshot(&self, _id: &str) -> Result<()> {
        Err(ProviderError::unsupported("this provider has no snapshots"))
    }
}

/// Checks a volume name is a safe idempotency key: lowercase letters, digits and dashes, at most
/// 63 characters, starting with a letter. Providers build paths and tags from it, so nothing
/// else may pass.
pub fn validate_volume_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ProviderError::invalid(format!(
            "invalid volume name {name:?}: only lowercase letters, digits and '-', at most 63 characters, starting with a letter"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_are_restricted_to_a_safe_alphabet() {
        assert!(validate_volume_name("pvc-0d9c8e7f-1234-4abc-9def-0123456789ab").is_ok());
        for bad in [
            "",
            "../etc",
            "a/b",
            "PVC",
            "-x",
            "x y",
            &"a".repeat(64),
            "1abc",
        ] {
            assert!(validate_volume_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn topology_admits_nodes_with_every_label() {
        let t = Topology::one("kubernetes.io/hostname", "n1");
        let mut labels = BTreeMap::new();
        assert!(!t.admits(&labels));
        labels.insert("kubernetes.io/hostname".into(), "n1".into());
        assert!(t.admits(&labels));
        assert!(Topology::default().admits(&labels));
    }

    #[test]
    fn only_transient_failures_are_temporary() {
        assert!(ProviderError::temporary("x").is_temporary());
        assert!(ProviderError::precondition("x").is_temporary());
        assert!(!ProviderError::invalid("x").is_temporary());
        assert!(!ProviderError::exhausted("x").is_temporary());
    }
}
