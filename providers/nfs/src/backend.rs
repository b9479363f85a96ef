//! The provider: building it, its shares, and `impl Provider` (each operation is in its own
//! file).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use stowage_provider::copies::Copies;
use stowage_provider::{
    AccessMode, AttachRequest, Capabilities, CreateVolumeRequest, DeleteVolumeRequest,
    DetachRequest, ExpandRequest, Expanded, Provider, PublishInfo, Result, Snapshot,
    SnapshotRequest, Volume, VolumeInfo,
};

use crate::NAME;

use crate::config::Config;
use crate::copy::Throttle;
use crate::handle::VolumeHandle;
use crate::params::Version;
use crate::records::Record;
use crate::share::{Counters, Share, ShareKey};

pub struct NfsProvider {
    pub(crate) config: Config,
    /// This Stowage installation: written into records, and only its own records are listed
    /// (so an orphan sweep never touches another installation's volumes on a shared export).
    pub(crate) owner: String,
    pub(crate) shares: Mutex<HashMap<ShareKey, Arc<Share>>>,
    pub(crate) counters: Arc<Counters>,
    /// Snapshot, restore and clone copies running now.
    pub(crate) copies: Arc<Copies>,
    /// Bounds what all those copies take at once (memory, open files).
    pub(crate) throttle: Arc<Throttle>,
}

impl stowage_provider::factory::Build for NfsProvider {
    const SECTION: &'static str = "nfs";
    const ON_BY_DEFAULT: bool = true;
    type Config = Config;

    async fn build(
        config: Config,
        env: &stowage_provider::factory::Env,
    ) -> std::result::Result<Self, stowage_provider::factory::BuildError> {
        Ok(NfsProvider::new(config, env.installation_id()?))
    }
}

impl NfsProvider {
    /// A provider marking what it makes as `owner`'s (the installation's id).
    pub fn new(config: Config, owner: impl Into<String>) -> NfsProvider {
        NfsProvider {
            config,
            owner: owner.into(),
            shares: Mutex::new(HashMap::new()),
            counters: Arc::new(Counters::default()),
            copies: Arc::new(Copies::default()),
            throttle: Arc::new(Throttle::default()),
        }
    }

    pub(crate) fn share(&self, key: ShareKey) -> Arc<Share> {
        self.shares
            .lock()
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Share::new(
                    key,
                    self.config.call_timeout,
                    self.counters.clone(),
                ))
            })
            .clone()
    }

    /// The share a volume lives on, from its handle; the protocol version comes from the
    /// volume's attributes, else from a share already in use, else 4.1.
    pub(crate) fn share_of(
        &self,
        h: &VolumeHandle,
        attributes: &BTreeMap<String, String>,
    ) -> Arc<Share> {
        let version = attributes
            .get("nfsvers")
            .and_then(|v| Version::parse(v).ok())
            .or_else(|| {
                self.shares
                    .lock()
                    .keys()
                    .find(|k| k.server == h.server && k.path == h.share)
                    .map(|k| k.version)
            })
            .unwrap_or(Version::V41);
        self.share(ShareKey {
            server: h.server.clone(),
            path: h.share.clone(),
            version,
        })
    }

    pub(crate) fn handle(share: &Share, sub_dir: &str, name: &str) -> String {
        VolumeHandle {
            server: share.key.server.clone(),
            share: share.key.path.clone(),
            sub_dir: sub_dir.to_string(),
            name: name.to_string(),
        }
        .encode()
    }

    /// Takes back a pending record this create wrote, after the create was refused. If that
    /// fails the record stays pending: it proves nothing, and the orphan sweep removes it.
    pub(crate) async fn forget(&self, share: &Share, name: &str) {
        match share.remove_record(name).await {
            Ok(()) => {
                share.ledger.lock().remove(name);
            }
            Err(f) => tracing::warn!(
                volume = name,
                share = share.key.describe(),
                error = %f.into_error("removing a refused volume's record"),
                "the pending record stays; the orphan sweep will remove it"
            ),
        }
    }

    /// The record of a volume: from the ledger, else from the share (another instance, or a
    /// create this process abandoned).
    pub(crate) async fn record_of(&self, share: &Share, name: &str) -> Result<Option<Record>> {
        if let Some(r) = share.ledger.lock().get(name).cloned() {
            return Ok(Some(r));
        }
        let found = share.read_record(name).await.map_err(|f| {
            f.into_error(&format!(
                "reading the record of {name} on {}",
                share.key.describe()
            ))
        })?;
        if let Some(r) = &found {
            share.ledger.lock().put(name, r.clone());
        }
        Ok(found)
    }
}

pub(crate) fn join_path(share: &str, sub_dir: &str) -> String {
    if share == "/" {
        format!("/{sub_dir}")
    } else {
        format!("{share}/{sub_dir}")
    }
}

#[async_trait::async_trait]
impl Provider for NfsProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            dynamic_provisioning: true,
            attach_required: false,
            expansion: true,
            node_expansion: false,
            snapshots: true,
            clones: true,
            access_modes: AccessMode::ALL.to_vec(),
            topology: false,
            max_attachments_per_node: None,
            volume_modification: false,
            storage_capacity: true,
        }
    }

    fn class_parameters(&self) -> Vec<stowage_provider::params::ClassParameter> {
        crate::params::CLASS_PARAMETERS.to_vec()
    }

    fn check_class_parameters(&self, parameters: &BTreeMap<String, String>) -> Result<()> {
        crate::params::ClassParams::parse(parameters).map(|_| ())
    }

    async fn create_volume(&self, req: &CreateVolumeRequest) -> Result<Volume> {
        self.create(req).await
    }

    async fn capacity(
        &self,
        parameters: &BTreeMap<String, String>,
    ) -> Result<Vec<stowage_provider::CapacityReport>> {
        self.capacity_of(parameters).await
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

    fn backend_requests(&self) -> BTreeMap<(String, String), u64> {
        self.counters.snapshot()
    }

    /// A copy of the volume's directory on the same share, made in the background: not ready
    /// (with progress) until the copy is done.
    async fn create_snapshot(&self, req: &SnapshotRequest) -> Result<Snapshot> {
        self.snapshot(req).await
    }

    async fn snapshot_info(&self, id: &str) -> Result<Snapshot> {
        self.snapshot_info_of(id).await
    }

    async fn delete_snapshot(&self, id: &str) -> Result<()> {
        self.delete_snapshot_of(id).await
    }
}

/// Reads the share's volume records if they have not been read yet; returns how messages name
/// the share.
pub(crate) async fn synced(share: &Share) -> Result<String> {
    let on = share.key.describe();
    share
        .ensure_synced()
        .await
        .map_err(|f| f.into_error(&format!("reading the volume records on {on}")))?;
    Ok(on)
}
