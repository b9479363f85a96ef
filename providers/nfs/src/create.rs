//! `create_volume`: a pending record on the share claims the name (and its bytes, and its
//! directory against overlaps), then the directory is made or adopted, then the record is
//! finished. A volume with a content source (a restore or a clone) claims a free path instead,
//! and is filled by a copy ([`crate::snapshot`]) before its record is finished.

use std::collections::BTreeMap;

use stowage_provider::{
    ContentSource, CreateVolumeRequest, ProviderError, Result, Volume, validate_volume_name,
};

use crate::backend::{NfsProvider, synced};
use crate::params::ClassParams;
use crate::records::{self, Record};
use crate::share::{Failure, Share, ShareKey};
use crate::subdir::Names;

/// What making a volume's directory found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Made {
    Created,
    FoundEmpty,
    FoundNonEmpty,
}

/// Releases a create's reserved bytes unless the create finished (also when it is cancelled).
pub(crate) struct Reservation<'a> {
    pub share: &'a Share,
    pub name: &'a str,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.share.ledger.lock().release(self.name);
    }
}

impl NfsProvider {
    /// The room a class's share has left for volumes: its size (or the class's
    /// `capacity` cap, if smaller) less what its volumes were promised, reachable from every
    /// node.
    pub(crate) async fn capacity_of(
        &self,
        parameters: &BTreeMap<String, String>,
    ) -> Result<Vec<stowage_provider::CapacityReport>> {
        let params = ClassParams::parse(parameters)?;
        let share = self.share(ShareKey {
            server: params.server.clone(),
            path: params.share.clone(),
            version: params.version,
        });
        let on = synced(&share).await?;
        let total = share
            .total_bytes()
            .await
            .map_err(|f| f.into_error(&format!("asking {on} for its size")))?;
        let limit = params.capacity_cap.map_or(total, |cap| cap.min(total));
        let used = share.ledger.lock().used();
        Ok(vec![stowage_provider::CapacityReport {
            topology: Default::default(),
            available_bytes: (limit - used).max(0),
            maximum_volume_bytes: None,
        }])
    }

    pub(crate) async fn create(&self, req: &CreateVolumeRequest) -> Result<Volume> {
        validate_volume_name(&req.name)?;
        if req.block {
            return Err(ProviderError::invalid(
                "NFS volumes are directories: volumeMode Block is not supported",
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
            source: req.content_source.as_ref().map(source_label),
            filling: false,
        };
        let same = |r: &Record| {
            !r.retained
                && r.sub_dir == record.sub_dir
                && r.bytes == record.bytes
                && r.on_delete == record.on_delete
                && r.source == record.source
        };
        let mut existing = share.ledger.lock().get(&req.name).cloned();
        if let Some(r) = &existing
            && !same(r)
        {
            return Err(ProviderError::already_exists(format!(
                "volume {} exists on {on} with directory {} and {} bytes{}",
                req.name,
                r.sub_dir,
                r.bytes,
                r.source
                    .as_ref()
                    .map(|s| format!(", copied from {s}"))
                    .unwrap_or_default()
            )));
        }
        // A restore or clone checks its source before anything is made (and again if an
        // earlier create was interrupted before it had made anything).
        let mut origin = None;
        if let Some(source) = &req.content_source
            && existing.as_ref().is_none_or(|r| r.pending)
        {
            let o = self.origin(&share, source, &req.name).await?;
            if req.capacity_bytes < o.size_bytes {
                return Err(ProviderError::invalid(format!(
                    "{} bytes requested, less than the {} bytes of {}",
                    req.capacity_bytes,
                    o.size_bytes,
                    o.label.replacen(':', " ", 1)
                )));
            }
            origin = Some(o);
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
        if let Some(source) = &req.content_source {
            let Some(mut current) = existing else {
                return Err(ProviderError::temporary(format!(
                    "the record of {} on {on} vanished",
                    req.name
                )));
            };
            if current.pending {
                let claimed = self
                    .claim_for_copy(
                        &share,
                        &req.name,
                        &current,
                        params.mode,
                        &req.claim.namespace,
                        &on,
                    )
                    .await;
                match claimed {
                    Ok(r) => current = r,
                    Err(e) => {
                        self.forget(&share, &req.name).await;
                        return Err(e);
                    }
                }
            }
            if current.filling {
                // Until the copy is done this answers InProgress; the record stays, so the next
                // call (or a delete) finds it.
                self.fill(
                    &share,
                    &req.name,
                    &current,
                    source,
                    origin,
                    params.mode,
                    &on,
                )
                .await?;
            }
        } else if existing.is_some_and(|r| r.pending) {
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

    /// Makes the volume's directory (and missing parents), and says whether it was there
    /// already and what it held. The caller decides: a directory that holds data is taken
    /// only when a record proves whose it is (one that no record accounts for may hold
    /// anybody's data); an empty one holds nothing to take, and is what an interrupted create
    /// of this very volume leaves behind.
    pub(crate) async fn make_directory(
        &self,
        share: &Share,
        sub_dir: &str,
        mode: u32,
    ) -> Result<Made> {
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

    /// Whether a new volume in `namespace` may take `sub_dir` despite `overlaps`: only when the
    /// one thing there is a retained record of exactly that directory, made by this
    /// installation for a claim of the same namespace. Returns that record's name.
    pub(crate) fn adoptable(
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
    pub(crate) async fn finish_create(
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
}

/// How a volume's record names its content source: `snapshot:<id>` or `volume:<handle>`.
fn source_label(source: &ContentSource) -> String {
    match source {
        ContentSource::Snapshot { snapshot_id } => format!("snapshot:{snapshot_id}"),
        ContentSource::Volume { handle, .. } => format!("volume:{handle}"),
    }
}
