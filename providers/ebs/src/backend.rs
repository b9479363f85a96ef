//! The provider: building it from its configuration, its shared state, and `impl Provider`
//! (each operation is in its own file).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use stowage_provider::keyed_lock::KeyedLock;
use stowage_provider::{
    AccessMode, AttachRequest, Capabilities, CreateVolumeRequest, DeleteVolumeRequest,
    DetachRequest, ExpandRequest, Expanded, ModifyRequest, NodeDriverInfo, NodeInfo, Provider,
    ProviderError, PublishInfo, Result, Snapshot, SnapshotRequest, Topology, Volume, VolumeInfo,
};

use crate::config::Config;
use crate::devices::Devices;
use crate::ec2;
use crate::ec2::CallCounts;
use crate::instances::InstanceInfo;
use crate::params::{GIB, VolumeSpec};
use crate::poller::{Poller, VolumeView};
use crate::{NAME, ZONE_KEY};

pub struct EbsProvider {
    pub(crate) client: aws_sdk_ec2::Client,
    pub(crate) config: Config,
    pub(crate) owner: String,
    pub(crate) counts: Arc<CallCounts>,
    pub(crate) poller: Arc<Poller>,
    pub(crate) devices: Devices,
    /// Per volume name (creates) and per volume id (everything else).
    pub(crate) locks: KeyedLock,
    /// One DescribeInstances per instance, however many attaches to it start at once.
    pub(crate) instance_locks: KeyedLock,
    /// Our volumes by name; `None` until read from EC2.
    pub(crate) index: Mutex<Option<HashMap<String, String>>>,
    pub(crate) index_loading: tokio::sync::Mutex<()>,
    /// Names whose CreateVolume may or may not have happened (the call timed out).
    pub(crate) uncertain: Mutex<HashSet<String>>,
    pub(crate) instances: Mutex<HashMap<String, InstanceInfo>>,
}

impl stowage_provider::factory::Build for EbsProvider {
    const SECTION: &'static str = "ebs";
    type Config = Config;

    async fn build(
        config: Config,
        env: &stowage_provider::factory::Env,
    ) -> std::result::Result<Self, stowage_provider::factory::BuildError> {
        Ok(EbsProvider::new(config, env.installation_id()?).await)
    }
}

impl EbsProvider {
    /// Builds the EC2 client from the configuration and the AWS environment.
    /// A provider marking what it makes as `owner`'s (the installation's id).
    pub async fn new(config: Config, owner: impl Into<String>) -> EbsProvider {
        let counts = Arc::new(CallCounts::default());
        let client = ec2::client(&config, counts.clone()).await;
        Self::with_client(client, counts, config, owner)
    }

    /// A provider on an existing client (several instances may share one, as tests do to
    /// stand for restarts). `counts` is where the client's interceptor counts calls.
    pub fn with_client(
        client: aws_sdk_ec2::Client,
        counts: Arc<CallCounts>,
        config: Config,
        owner: impl Into<String>,
    ) -> EbsProvider {
        let owner = owner.into();
        EbsProvider {
            poller: Poller::start(client.clone(), owner.clone()),
            client,
            config,
            owner,
            counts,
            devices: Devices::default(),
            locks: KeyedLock::new(),
            instance_locks: KeyedLock::new(),
            index: Mutex::new(None),
            index_loading: tokio::sync::Mutex::new(()),
            uncertain: Mutex::new(HashSet::new()),
            instances: Mutex::new(HashMap::new()),
        }
    }

    /// EC2 calls made so far, by (API, outcome).
    pub fn calls(&self) -> &CallCounts {
        &self.counts
    }

    pub(crate) async fn wait_until(
        &self,
        id: &str,
        what: &str,
        done: impl Fn(&VolumeView) -> bool,
    ) -> Result<Option<VolumeView>> {
        let deadline = Instant::now() + self.config.state_timeout;
        let mut pause = Duration::from_millis(100);
        loop {
            let Some(view) = self.poller.describe(id).await? else {
                return Ok(None);
            };
            if done(&view) {
                return Ok(Some(view));
            }
            if view.state == "error" {
                return Err(ProviderError::temporary(format!(
                    "volume {id} is in state error while {what}"
                )));
            }
            if Instant::now() > deadline {
                return Err(ProviderError::temporary(format!(
                    "volume {id} is still {} after {:?} {what}",
                    view.state, self.config.state_timeout
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// The volume as EC2 has it (the request fills in only what EC2 does not report).
    pub(crate) fn volume(&self, view: &VolumeView, spec: &VolumeSpec) -> Volume {
        let volume_type = if view.volume_type.is_empty() {
            spec.volume_type.to_string()
        } else {
            view.volume_type.clone()
        };
        let mut attributes = BTreeMap::from([
            ("zone".to_string(), view.zone.clone()),
            ("type".to_string(), volume_type),
            (
                "fsType".to_string(),
                view.fs_type.clone().unwrap_or_else(|| spec.fs_type.clone()),
            ),
        ]);
        if let Some(i) = view.iops.or(spec.iops) {
            attributes.insert("iops".into(), i.to_string());
        }
        if let Some(t) = view.throughput.or(spec.throughput) {
            attributes.insert("throughput".into(), t.to_string());
        }
        if view.encrypted {
            attributes.insert("encrypted".into(), "true".into());
        }
        Volume {
            handle: view.id.clone(),
            capacity_bytes: view.size_gib * GIB,
            attributes,
            accessible_topology: vec![Topology::one(ZONE_KEY, &view.zone)],
        }
    }
}

/// The well-known node label that names an instance's type.
const INSTANCE_TYPE_LABEL: &str = "node.kubernetes.io/instance-type";

#[async_trait::async_trait]
impl Provider for EbsProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            dynamic_provisioning: true,
            attach_required: true,
            expansion: true,
            node_expansion: true,
            snapshots: true,
            clones: true,
            access_modes: vec![AccessMode::ReadWriteOnce, AccessMode::ReadWriteOncePod],
            topology: true,
            max_attachments_per_node: Some(self.config.max_attachments_per_node),
            volume_modification: true,
            storage_capacity: false,
        }
    }

    /// The node as EC2 knows it: its instance id (from `spec.providerID`), its zone, and the
    /// attachment limit of its instance type (the `node.kubernetes.io/instance-type` label),
    /// unless the node's labels or annotations set one.
    fn node_driver_info(&self, node: &NodeInfo) -> NodeDriverInfo {
        let instance = node
            .provider_id
            .as_deref()
            .and_then(crate::parse_provider_id)
            .map(|(_, instance)| instance);
        let limit = node
            .max_attachments
            .or_else(|| {
                node.labels
                    .get(INSTANCE_TYPE_LABEL)
                    .and_then(|t| crate::devices::attach_limit_for(t))
            })
            .unwrap_or(self.config.max_attachments_per_node);
        NodeDriverInfo {
            node_id: instance.unwrap_or_else(|| node.name.clone()),
            topology_keys: vec![ZONE_KEY.to_string()],
            max_volumes: Some(limit),
        }
    }

    fn class_parameters(&self) -> Vec<stowage_provider::params::ClassParameter> {
        crate::params::CLASS_PARAMETERS.to_vec()
    }

    fn check_class_parameters(&self, parameters: &BTreeMap<String, String>) -> Result<()> {
        crate::params::check_class(parameters)
    }

    async fn modify_volume(&self, req: &ModifyRequest) -> Result<()> {
        self.modify(req).await
    }

    async fn create_volume(&self, req: &CreateVolumeRequest) -> Result<Volume> {
        self.create(req).await
    }

    async fn delete_volume(&self, req: &DeleteVolumeRequest) -> Result<()> {
        self.delete(req).await
    }

    async fn attach(&self, req: &AttachRequest) -> Result<PublishInfo> {
        self.attach_to(req).await
    }

    async fn detach(&self, req: &DetachRequest) -> Result<()> {
        self.detach_from(req).await
    }

    async fn expand_volume(&self, req: &ExpandRequest) -> Result<Expanded> {
        self.expand(req).await
    }

    async fn list_volumes(&self) -> Result<Vec<VolumeInfo>> {
        self.list().await
    }

    async fn create_snapshot(&self, req: &SnapshotRequest) -> Result<Snapshot> {
        self.snapshot(req).await
    }

    async fn snapshot_info(&self, id: &str) -> Result<Snapshot> {
        self.snapshot_by_id(id).await
    }

    async fn delete_snapshot(&self, id: &str) -> Result<()> {
        self.delete_snapshot_by_id(id).await
    }

    fn backend_requests(&self) -> BTreeMap<(String, String), u64> {
        self.counts.snapshot()
    }
}
