//! Stowage's NFS provider (`nfs.stowage.dev`): a subdirectory per volume on an NFS export, the
//! way nfs-subdir-external-provisioner and csi-driver-nfs work, spoken from userspace (no
//! kernel mount on the Stowage host) in NFSv4.1 or NFSv3.
//!
//! Everything about a share is in its StorageClass ([`params`]), so the provider needs no
//! configuration and a new server is just a new class. Volume directories are placed by the
//! class's `subDir` template ([`subdir`]), which can never point outside the share. Each
//! volume has a record on the share itself ([`records`]), which makes creates idempotent
//! across restarts, accounts the requested sizes against the share's size and an optional cap,
//! and remembers what to do with the directory on delete (`delete`, `retain`, `archive`) even
//! when the class is gone. [`share`] holds the NFS connection, with per-request timeouts and
//! reconnects, so one dead server never holds up another.
//!
//! There is no attach step: `attach` checks the directory is there and answers with what a
//! node needs to `mount -t nfs` it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use stowage_provider::{
    AccessMode, AttachRequest, Capabilities, CreateVolumeRequest, DeleteVolumeRequest,
    DetachRequest, ExpandRequest, Expanded, Provider, ProviderError, PublishInfo, Result, Volume,
    VolumeInfo, validate_volume_name,
};

pub mod config;
pub mod handle;
pub mod params;
pub mod records;
pub mod share;
pub mod subdir;
pub mod testing;

pub use config::Config;
use handle::VolumeHandle;
use params::{ClassParams, Version};
use records::Record;
use share::{Counters, Failure, Share, ShareKey};
use subdir::Names;

pub const NAME: &str = "nfs.stowage.dev";

pub struct NfsProvider {
    config: Config,
    /// This Stowage installation: written into records, and only its own records are listed
    /// (so an orphan sweep never touches another installation's volumes on a shared export).
    owner: String,
    shares: Mutex<HashMap<ShareKey, Arc<Share>>>,
    counters: Arc<Counters>,
}

impl NfsProvider {
    pub fn new(config: Config, owner: impl Into<String>) -> NfsProvider {
        NfsProvider {
            config,
            owner: owner.into(),
            shares: Mutex::new(HashMap::new()),
            counters: Arc::new(Counters::default()),
        }
    }

    fn share(&self, key: ShareKey) -> Arc<Share> {
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
    fn share_of(&self, h: &VolumeHandle, attributes: &BTreeMap<String, String>) -> Arc<Share> {
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

    fn handle(share: &Share, sub_dir: &str, name: &str) -> String {
        VolumeHandle {
            server: share.key.server.clone(),
            share: share.key.path.clone(),
            sub_dir: sub_dir.to_string(),
            name: name.to_string(),
        }
        .encode()
    }

    /// Makes the volume's directory (and missing parents), and says whether it was there
    /// already and what it held. The caller decides: a directory that holds data is taken
    /// only when a record proves whose it is (one that no record accounts for may hold
    /// anybody's data); an empty one holds nothing to take, and is what an interrupted create
    /// of this very volume leaves behind.
    async fn make_directory(&self, share: &Share, sub_dir: &str, mode: u32) -> Result<Made> {
        let what = || format!("making {sub_dir} on {}", share.key.describe());
        let (parent, last) = match sub_dir.rsplit_once('/') {
            Some((p, l)) => (
                share
                    .dir(p, Some(mode))
                    .await
                    .map_err(|f| f.into_error(&what()))?,
                l,
            ),
            None => (
                share
                    .dir("", None)
                    .await
                    .map_err(|f| f.into_error(&what()))?,
                sub_dir,
            ),
        };
        let (dir, created) = share
            .mkdir(&parent, last, mode)
            .await
            .map_err(|f| f.into_error(&what()))?;
        if !created {
            let empty = share
                .list(&dir.fh)
                .await
                .map_err(|f| f.into_error(&what()))?
                .iter()
                .all(|e| e.name == "." || e.name == "..");
            return Ok(if empty {
                Made::FoundEmpty
            } else {
                Made::FoundNonEmpty
            });
        }
        // The server may apply its own umask; the class's mode is what the volume gets.
        let actual = dir.attr.as_ref().map(|a| a.file_mode & 0o7777);
        if actual != Some(mode) {
            share
                .chmod(&dir.fh, mode)
                .await
                .map_err(|f| f.into_error(&what()))?;
        }
        Ok(Made::Created)
    }

    /// Takes back a pending record this create wrote, after the create was refused. If that
    /// fails the record stays pending: it proves nothing, and the orphan sweep removes it.
    async fn forget(&self, share: &Share, name: &str) {
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

    /// Whether a new volume in `namespace` may take `sub_dir` despite `overlaps`: only when the
    /// one thing there is a retained record of exactly that directory, made by this
    /// installation for a claim of the same namespace. Returns that record's name.
    fn adoptable(
        &self,
        overlaps: &[records::Overlap],
        sub_dir: &str,
        namespace: &str,
        on: &str,
    ) -> Result<Option<String>> {
        let [o, rest @ ..] = overlaps else {
            return Ok(None);
        };
        if rest.is_empty()
            && o.sub_dir == sub_dir
            && o.owner == self.owner
            && o.retained
                .as_ref()
                .is_some_and(|ns| ns.as_deref() == Some(namespace))
        {
            return Ok(Some(o.volume.clone()));
        }
        // The refusal reaches the claim's events, which its tenant reads: it does not name the
        // other volume or its directory (another tenant's). The log does, for the admin.
        tracing::warn!(
            share = on,
            directory = sub_dir,
            other_volume = o.volume,
            other_directory = o.sub_dir,
            retained = o.retained.is_some(),
            "refused a volume directory that overlaps another volume's"
        );
        Err(ProviderError::precondition(
            if o.retained.is_some() && o.sub_dir == sub_dir && rest.is_empty() {
                format!(
                    "directory {sub_dir} on {on} holds the retained data of a volume made for another namespace or installation"
                )
            } else {
                format!(
                    "directory {sub_dir} on {on} would overlap another volume's directory: no volume's directory may be, contain or lie inside another's"
                )
            },
        ))
    }

    /// The second half of a create, once its pending record is on the share: the
    /// authoritative overlap check (every record written before ours, by any class or
    /// installation sharing this export, is seen now; two racers may both step back, neither
    /// can win against the other), the directory, and the record made final.
    async fn finish_create(
        &self,
        share: &Share,
        name: &str,
        record: &Record,
        mode: u32,
        namespace: &str,
        on: &str,
    ) -> Result<()> {
        share
            .sync_since(std::time::Instant::now())
            .await
            .map_err(|f| f.into_error(&format!("reading the volume records on {on}")))?;
        let overlaps = share.ledger.lock().overlaps(&record.sub_dir, name);
        let adopted = self.adoptable(&overlaps, &record.sub_dir, namespace, on)?;
        let made = self.make_directory(share, &record.sub_dir, mode).await?;
        if made == Made::FoundNonEmpty && adopted.is_none() {
            return Err(ProviderError::precondition(format!(
                "{} already exists on {on} and holds data no volume record accounts for; it is not handed to a new volume",
                record.sub_dir
            )));
        }
        let done = Record {
            pending: false,
            ..record.clone()
        };
        share
            .replace_record(name, &done)
            .await
            .map_err(|f| f.into_error(&format!("recording {name} on {on}")))?;
        share.ledger.lock().put(name, done);
        if let Some(retained) = adopted {
            // The directory has passed to the new volume; the retained record goes.
            share.remove_record(&retained).await.map_err(|f| {
                f.into_error(&format!("removing the retained record {retained} on {on}"))
            })?;
            share.ledger.lock().remove(&retained);
        }
        Ok(())
    }

    /// Removes a pending create's directory if it is there and empty (RMDIR refuses otherwise).
    async fn remove_if_empty(&self, share: &Share, record: &Record) -> Result<()> {
        let what = format!("removing {} on {}", record.sub_dir, share.key.describe());
        let (parent_path, last) = record
            .sub_dir
            .rsplit_once('/')
            .unwrap_or(("", record.sub_dir.as_str()));
        let parent = match share.dir(parent_path, None).await {
            Ok(p) => p,
            Err(Failure::NotFound) => return Ok(()),
            Err(f) => return Err(f.into_error(&what)),
        };
        match share.rmdir(&parent, last).await {
            Ok(()) | Err(Failure::NotFound | Failure::NotEmpty | Failure::Exists) => Ok(()),
            Err(f) => Err(f.into_error(&what)),
        }
    }

    /// Deletes, archives or keeps a volume's directory. Touches nothing but that directory.
    async fn dispose_directory(&self, share: &Share, record: &Record) -> Result<()> {
        let what = |verb: &str| format!("{verb} {} on {}", record.sub_dir, share.key.describe());
        let (parent_path, last) = record
            .sub_dir
            .rsplit_once('/')
            .unwrap_or(("", record.sub_dir.as_str()));
        let parent = match share.dir(parent_path, None).await {
            Ok(p) => p,
            Err(Failure::NotFound) => return Ok(()),
            Err(f) => return Err(f.into_error(&what("finding"))),
        };
        match record.on_delete {
            params::OnDelete::Retain => Ok(()),
            params::OnDelete::Delete => {
                let dir = match share.lookup(&parent, last).await {
                    Ok(d) => d,
                    Err(Failure::NotFound) => return Ok(()),
                    Err(f) => return Err(f.into_error(&what("finding"))),
                };
                share
                    .empty_dir(&dir.fh, 0)
                    .await
                    .map_err(|f| f.into_error(&what("emptying")))?;
                match share.rmdir(&parent, last).await {
                    Ok(()) | Err(Failure::NotFound) => Ok(()),
                    Err(f) => Err(f.into_error(&what("removing"))),
                }
            }
            params::OnDelete::Archive => {
                match share.lookup(&parent, last).await {
                    Ok(_) => {}
                    Err(Failure::NotFound) => return Ok(()),
                    Err(f) => return Err(f.into_error(&what("finding"))),
                }
                // Never over an earlier archive: RENAME would silently replace an empty one.
                for attempt in 0u32.. {
                    let target = match attempt {
                        0 => format!("archived-{last}"),
                        n => format!("archived-{last}-{n}"),
                    };
                    match share.lookup(&parent, &target).await {
                        Ok(_) => continue,
                        Err(Failure::NotFound) => {}
                        Err(f) => return Err(f.into_error(&what("archiving"))),
                    }
                    match share.rename(&parent, last, &target).await {
                        Ok(()) => {
                            tracing::info!(
                                share = share.key.describe(),
                                from = record.sub_dir,
                                to = target,
                                "archived a deleted volume's directory"
                            );
                            return Ok(());
                        }
                        // Someone made that name meanwhile: try the next one.
                        Err(Failure::Exists | Failure::NotEmpty) => continue,
                        Err(f) => return Err(f.into_error(&what("archiving"))),
                    }
                }
                unreachable!("the archive name loop only ends by returning")
            }
        }
    }

    /// The record of a volume: from the ledger, else from the share (another instance, or a
    /// create this process abandoned).
    async fn record_of(&self, share: &Share, name: &str) -> Result<Option<Record>> {
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

/// What making a volume's directory found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Made {
    Created,
    FoundEmpty,
    FoundNonEmpty,
}

/// Releases a create's reserved bytes unless the create finished (also when it is cancelled).
struct Reservation<'a> {
    share: &'a Share,
    name: &'a str,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.share.ledger.lock().release(self.name);
    }
}

fn join_path(share: &str, sub_dir: &str) -> String {
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
            snapshots: false,
            access_modes: AccessMode::ALL.to_vec(),
            topology: false,
            max_attachments_per_node: None,
        }
    }

    async fn create_volume(&self, req: &CreateVolumeRequest) -> Result<Volume> {
        validate_volume_name(&req.name)?;
        if req.block {
            return Err(ProviderError::invalid(
                "NFS volumes are directories: volumeMode Block is not supported",
            ));
        }
        if req.content_source.is_some() {
            return Err(ProviderError::invalid(
                "the NFS provider cannot make a volume from a snapshot",
            ));
        }
        if req.capacity_bytes < 0 {
            return Err(ProviderError::invalid("a negative size"));
        }
        let params = ClassParams::parse(&req.parameters)?;
        let sub_dir = params.sub_dir.render(&Names {
            claim_namespace: &req.claim.namespace,
            claim_name: &req.claim.name,
            volume_name: &req.name,
            claim_annotations: &req.claim.annotations,
        })?;
        let share = self.share(ShareKey {
            server: params.server.clone(),
            path: params.share.clone(),
            version: params.version,
        });
        let on = synced(&share).await?;
        let _one_at_a_time = share.volume_locks.lock(&req.name).await;

        let record = Record {
            sub_dir: sub_dir.clone(),
            bytes: req.capacity_bytes,
            on_delete: params.on_delete,
            owner: self.owner.clone(),
            claim_namespace: Some(req.claim.namespace.clone()),
            retained: false,
            pending: true,
        };
        let same = |r: &Record| {
            !r.retained
                && r.sub_dir == record.sub_dir
                && r.bytes == record.bytes
                && r.on_delete == record.on_delete
        };
        let mut existing = share.ledger.lock().get(&req.name).cloned();
        if let Some(r) = &existing
            && !same(r)
        {
            return Err(ProviderError::already_exists(format!(
                "volume {} exists on {on} with directory {} and {} bytes",
                req.name, r.sub_dir, r.bytes
            )));
        }
        if existing.is_none() {
            // Fail fast on what this process already knows (including creates in flight).
            let known = share.ledger.lock().overlaps(&sub_dir, &req.name);
            self.adoptable(&known, &sub_dir, &req.claim.namespace, &on)?;
            let total = share
                .total_bytes()
                .await
                .map_err(|f| f.into_error(&format!("asking {on} for its size")))?;
            let limit = params.capacity_cap.map_or(total, |cap| cap.min(total));
            {
                let mut ledger = share.ledger.lock();
                let used = ledger.used();
                if used.saturating_add(req.capacity_bytes) > limit {
                    return Err(ProviderError::exhausted(format!(
                        "{on} has {} of {limit} bytes free for volumes; {} requested",
                        (limit - used).max(0),
                        req.capacity_bytes
                    )));
                }
                ledger.reserve(&req.name, &sub_dir, req.capacity_bytes);
            }
            let _reserved = Reservation {
                share: &share,
                name: &req.name,
            };
            match share.write_record(&req.name, &record).await {
                Ok(()) => {
                    share.ledger.lock().put(&req.name, record.clone());
                    existing = Some(record.clone());
                }
                Err(Failure::Exists) => match self.record_of(&share, &req.name).await? {
                    Some(r) if same(&r) => existing = Some(r),
                    _ => {
                        return Err(ProviderError::already_exists(format!(
                            "volume {} exists on {on} with other parameters",
                            req.name
                        )));
                    }
                },
                Err(f) => {
                    return Err(f.into_error(&format!("recording {} on {on}", req.name)));
                }
            }
        }
        // A record still pending was written by this create, or by one that was interrupted
        // before it had checked the share: nothing is proven yet, so check now. A finished
        // record means the directory is this volume's.
        if existing.is_some_and(|r| r.pending) {
            let finished = self
                .finish_create(
                    &share,
                    &req.name,
                    &record,
                    params.mode,
                    &req.claim.namespace,
                    &on,
                )
                .await;
            if let Err(e) = finished {
                self.forget(&share, &req.name).await;
                return Err(e);
            }
        } else {
            self.make_directory(&share, &sub_dir, params.mode).await?;
        }

        let mut attributes = BTreeMap::from([
            ("server".to_string(), share.key.server.display()),
            ("share".to_string(), share.key.path.clone()),
            ("subDir".to_string(), sub_dir.clone()),
            ("nfsvers".to_string(), params.version.as_str().to_string()),
            (
                "onDelete".to_string(),
                serde_json::to_value(params.on_delete)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
            ),
        ]);
        if let Some(cap) = params.capacity_cap {
            attributes.insert("shareCapacity".to_string(), cap.to_string());
        }
        Ok(Volume {
            handle: Self::handle(&share, &sub_dir, &req.name),
            capacity_bytes: req.capacity_bytes,
            attributes,
            accessible_topology: Vec::new(),
        })
    }

    async fn delete_volume(&self, req: &DeleteVolumeRequest) -> Result<()> {
        let h = match VolumeHandle::parse(&req.handle) {
            Ok(h) => h,
            Err(_) => {
                tracing::warn!(
                    handle = req.handle,
                    "not an NFS volume handle: nothing to delete"
                );
                return Ok(());
            }
        };
        let share = self.share_of(&h, &req.attributes);
        let on = synced(&share).await?;
        let _one_at_a_time = share.volume_locks.lock(&h.name).await;
        let Some(record) = self.record_of(&share, &h.name).await? else {
            return Ok(());
        };
        if record.sub_dir != h.sub_dir {
            tracing::warn!(
                volume = h.name,
                handle_dir = h.sub_dir,
                record_dir = record.sub_dir,
                "the handle and the record disagree; following the record"
            );
        }
        if record.retained {
            return Ok(());
        }
        if record.pending {
            // A create that never finished: its directory, if it made one, is empty; one that
            // holds anything is not provably this volume's, so it stays.
            self.remove_if_empty(&share, &record).await?;
            share
                .remove_record(&h.name)
                .await
                .map_err(|f| f.into_error(&format!("removing the record of {} on {on}", h.name)))?;
            share.ledger.lock().remove(&h.name);
            return Ok(());
        }
        // Never remove or move a directory that another volume's lies in or around. New
        // overlaps are refused when they are made; records from before that rule could still
        // have them, and the ledger has read every record on the share.
        if let Some(o) = share.ledger.lock().overlapping(&record.sub_dir, &h.name) {
            tracing::warn!(
                volume = h.name,
                directory = record.sub_dir,
                other_volume = o.volume,
                other_directory = o.sub_dir,
                "not disposing of a directory that overlaps another volume's"
            );
            return Err(ProviderError::precondition(format!(
                "the directory of {} on {on} overlaps another volume's; it is left for an admin",
                h.name
            )));
        }
        self.dispose_directory(&share, &record).await?;
        if record.on_delete == params::OnDelete::Retain {
            // The directory stays, and so does a record of whose it was: nothing else may
            // take or nest in it, and only its own namespace may adopt it.
            let retained = Record {
                retained: true,
                ..record
            };
            share
                .replace_record(&h.name, &retained)
                .await
                .map_err(|f| f.into_error(&format!("recording {} as retained on {on}", h.name)))?;
            share.ledger.lock().put(&h.name, retained);
            return Ok(());
        }
        share
            .remove_record(&h.name)
            .await
            .map_err(|f| f.into_error(&format!("removing the record of {} on {on}", h.name)))?;
        share.ledger.lock().remove(&h.name);
        Ok(())
    }

    async fn attach(&self, req: &AttachRequest) -> Result<PublishInfo> {
        let h = VolumeHandle::parse(&req.handle)?;
        let share = self.share_of(&h, &req.attributes);
        let there = share.exists(&h.sub_dir).await.map_err(|f| {
            f.into_error(&format!(
                "looking for {} on {}",
                h.sub_dir,
                share.key.describe()
            ))
        })?;
        if !there {
            return Err(ProviderError::not_found(format!(
                "the directory {} of volume {} is not on {}",
                h.sub_dir,
                h.name,
                share.key.describe()
            )));
        }
        let path = join_path(&h.share, &h.sub_dir);
        let mut options = Vec::new();
        if !req
            .mount_options
            .iter()
            .any(|o| o.starts_with("nfsvers=") || o.starts_with("vers="))
        {
            options.push(format!("nfsvers={}", share.key.version.as_str()));
        }
        if let Some(port) = h.server.port {
            options.push(format!("port={port}"));
        }
        options.extend(req.mount_options.iter().cloned());
        if req.read_only {
            options.push("ro".to_string());
        }
        let mut info = PublishInfo::from([
            ("type".to_string(), "nfs".to_string()),
            ("server".to_string(), h.server.host.clone()),
            ("share".to_string(), path.clone()),
            ("source".to_string(), format!("{}:{path}", h.server.host)),
            (
                "nfsvers".to_string(),
                share.key.version.as_str().to_string(),
            ),
            ("mountOptions".to_string(), options.join(",")),
            ("readOnly".to_string(), req.read_only.to_string()),
        ]);
        if let Some(port) = h.server.port {
            info.insert("port".to_string(), port.to_string());
        }
        Ok(info)
    }

    async fn detach(&self, _req: &DetachRequest) -> Result<()> {
        // Nothing was attached: nodes mount NFS themselves.
        Ok(())
    }

    async fn expand_volume(&self, req: &ExpandRequest) -> Result<Expanded> {
        let h = VolumeHandle::parse(&req.handle)?;
        let share = self.share_of(&h, &req.attributes);
        let on = synced(&share).await?;
        let _one_at_a_time = share.volume_locks.lock(&h.name).await;
        let Some(record) = self.record_of(&share, &h.name).await? else {
            return Err(ProviderError::not_found(format!(
                "volume {} has no record on {on}",
                h.name
            )));
        };
        if req.capacity_bytes <= record.bytes {
            return Ok(Expanded {
                capacity_bytes: record.bytes,
                in_progress: None,
            });
        }
        let total = share
            .total_bytes()
            .await
            .map_err(|f| f.into_error(&format!("asking {on} for its size")))?;
        let cap = req
            .attributes
            .get("shareCapacity")
            .and_then(|c| c.parse::<i64>().ok());
        let limit = cap.map_or(total, |c| c.min(total));
        let growth = req.capacity_bytes - record.bytes;
        let used = share.ledger.lock().used();
        if used.saturating_add(growth) > limit {
            return Err(ProviderError::exhausted(format!(
                "{on} has {} of {limit} bytes free for volumes; growing {} needs {growth} more",
                (limit - used).max(0),
                h.name
            )));
        }
        let grown = Record {
            bytes: req.capacity_bytes,
            ..record
        };
        share
            .replace_record(&h.name, &grown)
            .await
            .map_err(|f| f.into_error(&format!("recording the new size of {} on {on}", h.name)))?;
        share.ledger.lock().put(&h.name, grown);
        Ok(Expanded {
            capacity_bytes: req.capacity_bytes,
            in_progress: None,
        })
    }

    async fn list_volumes(&self) -> Result<Vec<VolumeInfo>> {
        let shares: Vec<Arc<Share>> = self.shares.lock().values().cloned().collect();
        let mut out = Vec::new();
        for share in shares {
            share.sync_records().await.map_err(|f| {
                f.into_error(&format!(
                    "reading the volume records on {}",
                    share.key.describe()
                ))
            })?;
            let ledger = share.ledger.lock();
            for (name, record) in ledger.records() {
                if record.owner == self.owner && !record.retained {
                    out.push(VolumeInfo {
                        name: name.clone(),
                        handle: Self::handle(&share, &record.sub_dir, name),
                        capacity_bytes: record.bytes,
                    });
                }
            }
        }
        Ok(out)
    }

    fn backend_requests(&self) -> BTreeMap<(String, String), u64> {
        self.counters.snapshot()
    }
}

/// Reads the share's volume records if they have not been read yet; returns how messages name
/// the share.
async fn synced(share: &Share) -> Result<String> {
    let on = share.key.describe();
    share
        .ensure_synced()
        .await
        .map_err(|f| f.into_error(&format!("reading the volume records on {on}")))?;
    Ok(on)
}
