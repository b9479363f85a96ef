//! Building a [`LocalProvider`] from its configuration: resolving defaults, checking the root,
//! and detecting hard-quota support.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use stowage_provider::quantity::parse_bytes;
use stowage_provider::{
    AccessMode, AttachRequest, Capabilities, CapacityReport, CreateVolumeRequest,
    DeleteVolumeRequest, DetachRequest, ExpandRequest, Expanded, NodeDriverInfo, NodeInfo,
    Provider, PublishInfo, Snapshot, SnapshotRequest, Topology, Volume, VolumeInfo,
};

use crate::config::Config;
use crate::core::Core;
use crate::quota::QuotaMode;

/// The local provider. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct LocalProvider {
    pub(crate) core: Arc<Core>,
}

impl stowage_provider::factory::Build for LocalProvider {
    const SECTION: &'static str = "local";
    const ON_BY_DEFAULT: bool = true;
    const NODE_LOCAL: bool = true;
    type Config = Config;

    async fn build(
        config: Config,
        env: &stowage_provider::factory::Env,
    ) -> Result<Self, stowage_provider::factory::BuildError> {
        LocalProvider::open(&config, &env.data_dir).map_err(stowage_provider::factory::BuildError)
    }
}

impl LocalProvider {
    /// Opens the provider; `data_dir` supplies the default root.
    pub fn open(config: &Config, data_dir: &Path) -> Result<LocalProvider, String> {
        let root = config
            .root
            .clone()
            .unwrap_or_else(|| data_dir.join("volumes"));
        std::fs::create_dir_all(&root)
            .map_err(|e| format!("local provider: cannot create root {}: {e}", root.display()))?;
        let root = root
            .canonicalize()
            .map_err(|e| format!("local provider: root {}: {e}", root.display()))?;
        let node = match &config.node {
            Some(n) if !n.is_empty() => n.clone(),
            _ => host_name(),
        };
        let capacity_bytes = match &config.capacity {
            Some(q) => parse_bytes(q).filter(|b| *b > 0).ok_or_else(|| {
                format!("local provider: capacity {q:?} is not a positive size like 100Gi")
            })?,
            None => filesystem_size(&root)?,
        };
        let quota = QuotaMode::detect(&root);
        tracing::info!(
            root = %root.display(),
            node,
            capacity_bytes,
            quota = quota.describe(),
            "local provider ready"
        );
        let core = Core::open(root, node, capacity_bytes, quota)
            .map_err(|e| format!("local provider: {e}"))?;
        Ok(LocalProvider {
            core: Arc::new(core),
        })
    }

    pub fn root(&self) -> &Path {
        &self.core.root
    }

    pub fn node(&self) -> &str {
        &self.core.node
    }

    pub fn capacity_bytes(&self) -> i64 {
        self.core.capacity_bytes
    }

    /// How capacity is enforced: `accounting` or `xfs-project-quota`.
    pub fn quota_mode(&self) -> &'static str {
        self.core.quota.describe()
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

fn filesystem_size(root: &Path) -> Result<i64, String> {
    let st = nix::sys::statvfs::statvfs(root)
        .map_err(|e| format!("local provider: statvfs {}: {e}", root.display()))?;
    Ok((st.blocks() as i64).saturating_mul(st.fragment_size() as i64))
}

/// Runs a blocking filesystem operation off the async runtime.
async fn blocking<T: Send + 'static>(
    core: &Arc<Core>,
    f: impl FnOnce(&Core) -> stowage_provider::Result<T> + Send + 'static,
) -> stowage_provider::Result<T> {
    let core = core.clone();
    tokio::task::spawn_blocking(move || f(&core))
        .await
        .map_err(|e| stowage_provider::ProviderError::temporary(format!("local provider: {e}")))?
}

#[async_trait::async_trait]
impl Provider for LocalProvider {
    fn name(&self) -> &str {
        crate::NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            dynamic_provisioning: true,
            attach_required: false,
            expansion: true,
            node_expansion: false,
            snapshots: true,
            clones: true,
            access_modes: vec![
                AccessMode::ReadWriteOnce,
                AccessMode::ReadWriteOncePod,
                AccessMode::ReadOnlyMany,
                AccessMode::ReadWriteMany,
            ],
            topology: true,
            max_attachments_per_node: None,
            volume_modification: false,
            storage_capacity: true,
        }
    }

    /// A node's local volumes are reachable from that node only.
    fn node_driver_info(&self, node: &NodeInfo) -> NodeDriverInfo {
        NodeDriverInfo {
            node_id: node.name.clone(),
            topology_keys: vec![crate::HOSTNAME_LABEL.to_string()],
            max_volumes: node.max_attachments,
        }
    }

    /// The room left on this node: the configured capacity less what volumes were promised.
    fn class_parameters(&self) -> Vec<stowage_provider::params::ClassParameter> {
        crate::create::CLASS_PARAMETERS.to_vec()
    }

    fn check_class_parameters(
        &self,
        parameters: &BTreeMap<String, String>,
    ) -> stowage_provider::Result<()> {
        crate::create::validate_parameters(parameters).map(|_| ())
    }

    async fn capacity(
        &self,
        _parameters: &BTreeMap<String, String>,
    ) -> stowage_provider::Result<Vec<CapacityReport>> {
        blocking(&self.core, |core| {
            let used = core
                .locked(|ledger| Ok(ledger.used_except("")))
                .map_err(|e| {
                    stowage_provider::ProviderError::temporary(format!("local provider: {e}"))
                })?;
            Ok(vec![CapacityReport {
                topology: Topology::one(crate::HOSTNAME_LABEL, &core.node),
                available_bytes: (core.capacity_bytes - used).max(0),
                maximum_volume_bytes: None,
            }])
        })
        .await
    }

    async fn create_volume(&self, req: &CreateVolumeRequest) -> stowage_provider::Result<Volume> {
        let req = req.clone();
        let core = self.core.clone();
        tokio::task::spawn_blocking(move || crate::create::create(&core, &req))
            .await
            .map_err(|e| {
                stowage_provider::ProviderError::temporary(format!("local provider: {e}"))
            })?
    }

    async fn delete_volume(&self, req: &DeleteVolumeRequest) -> stowage_provider::Result<()> {
        let req = req.clone();
        blocking(&self.core, move |core| crate::delete::delete(core, &req)).await
    }

    async fn attach(&self, req: &AttachRequest) -> stowage_provider::Result<PublishInfo> {
        let req = req.clone();
        blocking(&self.core, move |core| crate::attach::attach(core, &req)).await
    }

    async fn detach(&self, req: &DetachRequest) -> stowage_provider::Result<()> {
        crate::attach::detach(&self.core, req)
    }

    async fn expand_volume(&self, req: &ExpandRequest) -> stowage_provider::Result<Expanded> {
        let req = req.clone();
        blocking(&self.core, move |core| crate::expand::expand(core, &req)).await
    }

    async fn list_volumes(&self) -> stowage_provider::Result<Vec<VolumeInfo>> {
        blocking(&self.core, crate::list::list).await
    }

    /// A copy of the volume's tree, made in the background: not ready (with progress) until
    /// the copy is done.
    async fn create_snapshot(&self, req: &SnapshotRequest) -> stowage_provider::Result<Snapshot> {
        let req = req.clone();
        let core = self.core.clone();
        tokio::task::spawn_blocking(move || crate::snapshot::create_snapshot(&core, &req))
            .await
            .map_err(|e| {
                stowage_provider::ProviderError::temporary(format!("local provider: {e}"))
            })?
    }

    async fn snapshot_info(&self, id: &str) -> stowage_provider::Result<Snapshot> {
        let id = id.to_string();
        blocking(&self.core, move |core| {
            crate::snapshot::snapshot_info(core, &id)
        })
        .await
    }

    async fn delete_snapshot(&self, id: &str) -> stowage_provider::Result<()> {
        let id = id.to_string();
        blocking(&self.core, move |core| {
            crate::snapshot::delete_snapshot(core, &id)
        })
        .await
    }
}
