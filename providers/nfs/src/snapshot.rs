//! Snapshots, restores and clones: each is a copy of a directory tree on the share itself
//! ([`crate::copy`], through the NFS client), run in the background
//! ([`stowage_provider::copies`]) and moved into place (one RENAME) only when complete, so a
//! half copy is never taken for a finished one.
//!
//! On the share, next to the volume records (`.stowage/volumes/`):
//!
//! - a snapshot `<name>` is `.stowage/snapshots/<name>/`: the copied tree `data/` and `meta`, a
//!   symbolic link whose target is a small JSON text (like a volume record) naming the volume it
//!   was taken of and that volume's size. A snapshot exists once complete; `meta` goes first
//!   when it is deleted. A copy under way lives in `.stowage/scratch/snapshots/<name>/`.
//! - a restore or clone into volume `<name>` copies into `.stowage/scratch/volumes/<name>/`,
//!   then renames that to the volume's directory. The volume's record says where the data
//!   comes from (`source`) and, while it is copied, `filling`: the directory's path was free
//!   when it was claimed, so a directory there is the finished copy (even one moved into place
//!   just before a restart).
//!
//! Snapshot ids carry the server, the share and the protocol version ([`SnapshotId`]), so the
//! id alone finds the snapshot. A restart forgets copies under way; the next call starts them
//! again from an empty scratch. Snapshots are not counted against the share's capacity for
//! volumes (as with CSI drivers' snapshots, they are not volumes).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use stowage_provider::copies::{CopyState, Tracker};
use stowage_provider::{
    ContentSource, ProviderError, Result, Snapshot, SnapshotRequest, validate_volume_name,
};

use crate::backend::{NfsProvider, synced};
use crate::copy::{Throttle, copy_tree};
use crate::handle::{SnapshotId, VolumeHandle};
use crate::records::Record;
use crate::share::{Failure, Share, ShareKey, TYPE_DIR};

/// Finished snapshots, relative to the share.
pub const SNAPSHOTS_DIR: &str = ".stowage/snapshots";
/// Snapshots being copied.
pub const SCRATCH_SNAPSHOTS_DIR: &str = ".stowage/scratch/snapshots";
/// Restores and clones being copied.
pub const SCRATCH_VOLUMES_DIR: &str = ".stowage/scratch/volumes";

/// A finished snapshot's description, kept in its `meta` link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    /// The handle of the volume it was taken of.
    pub source: String,
    /// That volume's size: the smallest volume it restores into.
    pub size_bytes: i64,
    /// Bytes of file data it holds.
    pub data_bytes: i64,
    /// The Stowage installation that took it.
    pub owner: String,
}

impl Meta {
    fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn ready(id: &SnapshotId, meta: &Meta) -> Snapshot {
    Snapshot {
        id: id.encode(),
        source_handle: meta.source.clone(),
        size_bytes: meta.size_bytes,
        ready: true,
        progress: None,
    }
}

/// The background copy's key: the same for every protocol version of one export.
fn snapshot_key(share: &Share, name: &str) -> String {
    format!(
        "snapshot {}#{}#{name}",
        share.key.server.display(),
        share.key.path
    )
}

fn volume_key(share: &Share, name: &str) -> String {
    format!(
        "volume {}#{}#{name}",
        share.key.server.display(),
        share.key.path
    )
}

/// `.stowage/snapshots/<name>`, if it is there.
async fn snapshot_dir(share: &Share, name: &str) -> std::result::Result<Option<Bytes>, Failure> {
    let parent = match share.dir(SNAPSHOTS_DIR, None).await {
        Ok(p) => p,
        Err(Failure::NotFound) => return Ok(None),
        Err(f) => return Err(f),
    };
    match share.lookup(&parent, name).await {
        Ok(o) => Ok(Some(o.fh)),
        Err(Failure::NotFound) => Ok(None),
        Err(f) => Err(f),
    }
}

/// A finished snapshot's description; `None` if there is no finished snapshot `name`.
async fn read_meta(share: &Share, name: &str) -> Result<Option<Meta>> {
    let what = || format!("reading snapshot {name} on {}", share.key.describe());
    let Some(dir) = snapshot_dir(share, name)
        .await
        .map_err(|f| f.into_error(&what()))?
    else {
        return Ok(None);
    };
    let link = match share.lookup(&dir, "meta").await {
        Ok(o) => o.fh,
        Err(Failure::NotFound) => return Ok(None),
        Err(f) => return Err(f.into_error(&what())),
    };
    let target = share
        .readlink(&link)
        .await
        .map_err(|f| f.into_error(&what()))?;
    match serde_json::from_str(&target) {
        Ok(meta) => Ok(Some(meta)),
        Err(_) => {
            tracing::warn!(
                share = share.key.describe(),
                snapshot = name,
                "ignoring a snapshot whose description is not Stowage's"
            );
            Ok(None)
        }
    }
}

/// Where a copy's tree is.
#[derive(Clone, Debug)]
enum Tree {
    /// A snapshot's `data`, by the snapshot's name.
    Snapshot(String),
    /// A volume's directory, relative to the share.
    Volume(String),
}

impl Tree {
    async fn find(&self, share: &Share) -> Result<Bytes> {
        let gone = |what: String| ProviderError::not_found(format!("{what} is gone"));
        match self {
            Tree::Snapshot(name) => {
                let what = || format!("snapshot {name} on {}", share.key.describe());
                let dir = snapshot_dir(share, name)
                    .await
                    .map_err(|f| f.into_error(&what()))?
                    .ok_or_else(|| gone(what()))?;
                match share.lookup(&dir, "data").await {
                    Ok(o) => Ok(o.fh),
                    Err(Failure::NotFound) => Err(gone(what())),
                    Err(f) => Err(f.into_error(&what())),
                }
            }
            Tree::Volume(sub_dir) => {
                let what = || format!("directory {sub_dir} on {}", share.key.describe());
                match share.find(sub_dir).await {
                    Ok(o) => Ok(o.fh),
                    Err(Failure::NotFound) => Err(gone(what())),
                    Err(f) => Err(f.into_error(&what())),
                }
            }
        }
    }
}

/// What a new volume is copied from.
pub(crate) struct Origin {
    tree: Tree,
    /// The smallest volume it fits.
    pub size_bytes: i64,
    /// The record's `source`: `snapshot:<id>` or `volume:<handle>`.
    pub label: String,
}

/// The volume a snapshot or clone is made of, if it is a live one.
fn live(record: Option<Record>) -> Option<Record> {
    record.filter(|r| !r.retained && !r.pending)
}

impl NfsProvider {
    pub(crate) async fn snapshot(&self, req: &SnapshotRequest) -> Result<Snapshot> {
        validate_volume_name(&req.name)?;
        if let Some(k) = req.parameters.keys().next() {
            return Err(ProviderError::invalid(format!(
                "unknown snapshot parameter {k:?}: the NFS provider's snapshot classes take none"
            )));
        }
        let missing =
            || ProviderError::not_found(format!("volume {} not found", req.source_handle));
        let h = VolumeHandle::parse(&req.source_handle).map_err(|_| missing())?;
        let share = self.share_of(&h, &req.source_attributes);
        let on = synced(&share).await?;
        let id = SnapshotId {
            server: share.key.server.clone(),
            share: share.key.path.clone(),
            version: share.key.version,
            name: req.name.clone(),
        };
        let key = snapshot_key(&share, &req.name);
        // One call per snapshot at a time: a copy's end is reported to one caller only.
        let _one_at_a_time = share.volume_locks.lock(&key).await;
        if let Some(meta) = read_meta(&share, &req.name).await? {
            if meta.source != req.source_handle {
                return Err(ProviderError::already_exists(format!(
                    "snapshot {} exists on {on}, of volume {}",
                    req.name, meta.source
                )));
            }
            return Ok(ready(&id, &meta));
        }
        let record = live(self.record_of(&share, &h.name).await?).ok_or_else(missing)?;
        if record.filling {
            return Err(ProviderError::precondition(format!(
                "volume {} is still being filled from {}",
                h.name,
                record.source.as_deref().unwrap_or("its source")
            )));
        }
        let meta = Meta {
            source: req.source_handle.clone(),
            size_bytes: record.bytes,
            data_bytes: 0,
            owner: self.owner.clone(),
        };
        let job = (share.clone(), self.throttle.clone(), meta.clone());
        let name = req.name.clone();
        let state = self.copies.poll(&key, move |tracker| {
            let (share, throttle, meta) = job;
            async move {
                take_snapshot(
                    &share,
                    &throttle,
                    &Tree::Volume(record.sub_dir),
                    &name,
                    meta,
                    &tracker,
                )
                .await
            }
        });
        match state {
            CopyState::Running(progress) => Ok(Snapshot {
                id: id.encode(),
                source_handle: req.source_handle.clone(),
                size_bytes: meta.size_bytes,
                ready: false,
                progress: Some(progress),
            }),
            CopyState::Done => read_meta(&share, &req.name)
                .await?
                .map(|meta| ready(&id, &meta))
                .ok_or_else(|| {
                    ProviderError::temporary(format!(
                        "snapshot {} on {on} vanished after its copy",
                        req.name
                    ))
                }),
            CopyState::Failed(e) => Err(e),
        }
    }

    /// The share a snapshot id names.
    fn snapshot_share(&self, id: &SnapshotId) -> Arc<Share> {
        self.share(ShareKey {
            server: id.server.clone(),
            path: id.share.clone(),
            version: id.version,
        })
    }

    pub(crate) async fn snapshot_info_of(&self, id: &str) -> Result<Snapshot> {
        let parsed = SnapshotId::parse(id)?;
        let share = self.snapshot_share(&parsed);
        match read_meta(&share, &parsed.name).await? {
            Some(meta) => Ok(ready(&parsed, &meta)),
            None => Err(ProviderError::not_found(format!(
                "snapshot {} not found on {}",
                parsed.name,
                share.key.describe()
            ))),
        }
    }

    pub(crate) async fn delete_snapshot_of(&self, id: &str) -> Result<()> {
        // An id that is not one of ours names nothing here.
        let Ok(parsed) = SnapshotId::parse(id) else {
            return Ok(());
        };
        let share = self.snapshot_share(&parsed);
        let name = parsed.name.as_str();
        let key = snapshot_key(&share, name);
        let _one_at_a_time = share.volume_locks.lock(&key).await;
        self.cancel_copy(&key).await;
        let what = |verb: &str| format!("{verb} snapshot {name} on {}", share.key.describe());
        remove_in(&share, SCRATCH_SNAPSHOTS_DIR, name)
            .await
            .map_err(|f| f.into_error(&what("removing the copy of")))?;
        let Some(dir) = snapshot_dir(&share, name)
            .await
            .map_err(|f| f.into_error(&what("finding")))?
        else {
            return Ok(());
        };
        // The description first: without it the rest is no snapshot, even if removing the
        // data is interrupted.
        match share.remove(&dir, "meta").await {
            Ok(()) | Err(Failure::NotFound) => {}
            Err(f) => return Err(f.into_error(&what("removing"))),
        }
        remove_in(&share, SNAPSHOTS_DIR, name)
            .await
            .map_err(|f| f.into_error(&what("removing")))
    }

    /// Stops a background copy, if one runs, and waits until it has stopped writing.
    async fn cancel_copy(&self, key: &str) {
        if !self.copies.is_running(key) {
            return;
        }
        let copies = self.copies.clone();
        let key = key.to_string();
        // Waiting blocks a thread; the copy itself runs on the runtime meanwhile.
        let _ = tokio::task::spawn_blocking(move || copies.cancel_blocking(&key)).await;
    }

    /// Resolves a new volume's content source on `share`; a missing one is `NotFound`, one on
    /// another share `InvalidArgument`.
    pub(crate) async fn origin(
        &self,
        share: &Share,
        source: &ContentSource,
        new_volume: &str,
    ) -> Result<Origin> {
        let same_share = |server: &crate::params::Server, path: &str, what: &str| {
            if *server == share.key.server && path == share.key.path {
                Ok(())
            } else {
                Err(ProviderError::invalid(format!(
                    "{what} is on {}:{path}, and the new volume would be on {}: NFS restores and clones copy within one share",
                    server.display(),
                    share.key.describe()
                )))
            }
        };
        match source {
            ContentSource::Snapshot { snapshot_id } => {
                let id = SnapshotId::parse(snapshot_id)?;
                same_share(&id.server, &id.share, &format!("snapshot {}", id.name))?;
                let meta = read_meta(share, &id.name).await?.ok_or_else(|| {
                    ProviderError::not_found(format!(
                        "snapshot {} not found on {}",
                        id.name,
                        share.key.describe()
                    ))
                })?;
                Ok(Origin {
                    tree: Tree::Snapshot(id.name.clone()),
                    size_bytes: meta.size_bytes,
                    label: format!("snapshot:{}", id.encode()),
                })
            }
            ContentSource::Volume { handle, .. } => {
                let missing = || ProviderError::not_found(format!("volume {handle} not found"));
                let h = VolumeHandle::parse(handle).map_err(|_| missing())?;
                same_share(&h.server, &h.share, &format!("volume {}", h.name))?;
                if h.name == new_volume {
                    return Err(ProviderError::invalid(format!(
                        "volume {new_volume} cannot be a clone of itself"
                    )));
                }
                let record = live(self.record_of(share, &h.name).await?).ok_or_else(missing)?;
                if record.filling {
                    return Err(ProviderError::precondition(format!(
                        "volume {} is still being filled; it can be cloned once it is ready",
                        h.name
                    )));
                }
                Ok(Origin {
                    tree: Tree::Volume(record.sub_dir),
                    size_bytes: record.bytes,
                    label: format!("volume:{handle}"),
                })
            }
        }
    }

    /// Claims a restored or cloned volume's directory: the path must be free (or an empty
    /// directory, which holds nothing to take). Makes missing parents with `mode`. Called with
    /// the volume's pending record on the share; afterwards it is `filling`.
    pub(crate) async fn claim_for_copy(
        &self,
        share: &Share,
        name: &str,
        record: &Record,
        mode: u32,
        namespace: &str,
        on: &str,
    ) -> Result<Record> {
        share
            .sync_since(Instant::now())
            .await
            .map_err(|f| f.into_error(&format!("reading the volume records on {on}")))?;
        let overlaps = share.ledger.lock().overlaps(&record.sub_dir, name);
        if self
            .adoptable(&overlaps, &record.sub_dir, namespace, on)?
            .is_some()
        {
            return Err(ProviderError::precondition(format!(
                "directory {} on {on} holds a retained volume's data: a restored or cloned volume needs a directory of its own",
                record.sub_dir
            )));
        }
        let what = || format!("making {} on {on}", record.sub_dir);
        let (parent, last) = parent_of(share, &record.sub_dir, Some(mode))
            .await
            .map_err(|f| f.into_error(&what()))?;
        match share.lookup(&parent, last).await {
            Err(Failure::NotFound) => {}
            Ok(found) => {
                let empty_dir = found.attr.as_ref().is_none_or(|a| a.type_ == TYPE_DIR)
                    && share
                        .list(&found.fh)
                        .await
                        .map_err(|f| f.into_error(&what()))?
                        .is_empty();
                if !empty_dir {
                    return Err(ProviderError::precondition(format!(
                        "{} already exists on {on} and holds data no volume record accounts for; it is not handed to a new volume",
                        record.sub_dir
                    )));
                }
                match share.rmdir(&parent, last).await {
                    Ok(()) | Err(Failure::NotFound) => {}
                    Err(f) => return Err(f.into_error(&what())),
                }
            }
            Err(f) => return Err(f.into_error(&what())),
        }
        let filling = Record {
            pending: false,
            filling: true,
            ..record.clone()
        };
        share
            .replace_record(name, &filling)
            .await
            .map_err(|f| f.into_error(&format!("recording {name} on {on}")))?;
        share.ledger.lock().put(name, filling.clone());
        Ok(filling)
    }

    /// Fills the claimed directory of volume `name` from `source` (already resolved, if
    /// `origin` is given): starts the copy, answers `InProgress` while it runs, and once the
    /// directory is in place marks the record done.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn fill(
        &self,
        share: &Arc<Share>,
        name: &str,
        record: &Record,
        source: &ContentSource,
        origin: Option<Origin>,
        mode: u32,
        on: &str,
    ) -> Result<()> {
        let what = || format!("filling {} on {on}", record.sub_dir);
        let (parent, last) = parent_of(share, &record.sub_dir, Some(mode))
            .await
            .map_err(|f| f.into_error(&what()))?;
        let key = volume_key(share, name);
        // A directory there is the finished copy, moved into place (perhaps just before a
        // restart); while this process copies, the copy says when it is done.
        let in_place = !self.copies.is_running(&key)
            && match share.lookup(&parent, last).await {
                Ok(_) => true,
                Err(Failure::NotFound) => false,
                Err(f) => return Err(f.into_error(&what())),
            };
        if !in_place {
            let origin = match origin {
                Some(o) => o,
                None => self.origin(share, source, name).await?,
            };
            let job = (share.clone(), self.throttle.clone());
            let (volume, sub_dir) = (name.to_string(), record.sub_dir.clone());
            let tree = origin.tree;
            let state =
                self.copies.poll(&volume_key(share, name), move |tracker| {
                    let (share, throttle) = job;
                    async move {
                        restore(&share, &throttle, &tree, &volume, &sub_dir, mode, &tracker).await
                    }
                });
            match state {
                CopyState::Running(progress) => {
                    return Err(ProviderError::in_progress(
                        &format!(
                            "copying {} into volume {name}",
                            origin.label.replacen(':', " ", 1)
                        ),
                        progress,
                    ));
                }
                CopyState::Failed(e) => return Err(e),
                CopyState::Done => {}
            }
        }
        let done = Record {
            filling: false,
            ..record.clone()
        };
        share
            .replace_record(name, &done)
            .await
            .map_err(|f| f.into_error(&format!("recording {name} on {on}")))?;
        share.ledger.lock().put(name, done);
        Ok(())
    }

    /// Stops a copy into volume `name` and removes its scratch (the volume is being deleted).
    pub(crate) async fn abandon_fill(&self, share: &Share, name: &str) -> Result<()> {
        self.cancel_copy(&volume_key(share, name)).await;
        remove_in(share, SCRATCH_VOLUMES_DIR, name)
            .await
            .map_err(|f| {
                f.into_error(&format!(
                    "removing the unfinished copy into {name} on {}",
                    share.key.describe()
                ))
            })
    }
}

/// The parent directory of `path` (made with `mode` if missing and `make` says so) and the
/// last part of the path.
async fn parent_of<'p>(
    share: &Share,
    path: &'p str,
    make: Option<u32>,
) -> std::result::Result<(Bytes, &'p str), Failure> {
    match path.rsplit_once('/') {
        Some((p, l)) => Ok((share.dir(p, make).await?, l)),
        None => Ok((share.dir("", None).await?, path)),
    }
}

/// Removes `name` and all inside it from the directory `dir` (relative to the share).
async fn remove_in(share: &Share, dir: &str, name: &str) -> std::result::Result<(), Failure> {
    match share.dir(dir, None).await {
        Ok(d) => share.remove_tree(&d, name).await,
        Err(Failure::NotFound) => Ok(()),
        Err(f) => Err(f),
    }
}

/// A fresh scratch directory `<dir>/<name>`: whatever an earlier, interrupted copy left there
/// goes first.
async fn fresh_scratch(share: &Share, dir: &str, name: &str) -> Result<Bytes> {
    let what = || format!("preparing {dir}/{name} on {}", share.key.describe());
    let parent = share
        .dir(dir, Some(0o700))
        .await
        .map_err(|f| f.into_error(&what()))?;
    share
        .remove_tree(&parent, name)
        .await
        .map_err(|f| f.into_error(&what()))?;
    Ok(parent)
}

/// The background job of a snapshot: copy the volume into scratch, describe it, move it
/// into `.stowage/snapshots/`.
async fn take_snapshot(
    share: &Share,
    throttle: &Throttle,
    source: &Tree,
    name: &str,
    mut meta: Meta,
    tracker: &Tracker,
) -> Result<()> {
    let from = source.find(share).await?;
    let scratch = fresh_scratch(share, SCRATCH_SNAPSHOTS_DIR, name).await?;
    let on = share.key.describe();
    let (dir, _) = share
        .mkdir(&scratch, name, 0o700)
        .await
        .map_err(|f| f.into_error(&format!("making the copy of snapshot {name} on {on}")))?;
    copy_tree(share, throttle, &from, &dir.fh, "data", tracker).await?;
    meta.data_bytes = tracker.progress().total_bytes;
    share
        .symlink(&meta.encode(), &dir.fh, "meta")
        .await
        .map_err(|f| f.into_error(&format!("describing snapshot {name} on {on}")))?;
    if tracker.is_cancelled() {
        return Err(Tracker::cancelled_error());
    }
    let done = share
        .dir(SNAPSHOTS_DIR, Some(0o700))
        .await
        .map_err(|f| f.into_error(&format!("making {SNAPSHOTS_DIR} on {on}")))?;
    share
        .move_to(&scratch, name, &done, name)
        .await
        .map_err(|f| f.into_error(&format!("moving snapshot {name} into place on {on}")))
}

/// The background job of a restore or clone: copy the tree into scratch, rename it to the
/// volume's directory.
async fn restore(
    share: &Share,
    throttle: &Throttle,
    source: &Tree,
    volume: &str,
    sub_dir: &str,
    mode: u32,
    tracker: &Tracker,
) -> Result<()> {
    let from = source.find(share).await?;
    let scratch = fresh_scratch(share, SCRATCH_VOLUMES_DIR, volume).await?;
    copy_tree(share, throttle, &from, &scratch, volume, tracker).await?;
    if tracker.is_cancelled() {
        return Err(Tracker::cancelled_error());
    }
    let on = share.key.describe();
    let (parent, last) = parent_of(share, sub_dir, Some(mode))
        .await
        .map_err(|f| f.into_error(&format!("making the parents of {sub_dir} on {on}")))?;
    share
        .move_to(&scratch, volume, &parent, last)
        .await
        .map_err(|f| f.into_error(&format!("moving the copy into {sub_dir} on {on}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subdir::METADATA_DIR;

    #[test]
    fn the_snapshot_layout_lives_in_the_metadata_directory() {
        for dir in [SNAPSHOTS_DIR, SCRATCH_SNAPSHOTS_DIR, SCRATCH_VOLUMES_DIR] {
            assert_eq!(dir.split('/').next(), Some(METADATA_DIR), "{dir}");
            // No volume directory may be placed there.
            assert!(crate::subdir::check_relative_path(&format!("{dir}/x")).is_err());
        }
        let meta = Meta {
            source: "h#/e#pvc-1#pvc-1".into(),
            size_bytes: 5,
            data_bytes: 3,
            owner: "o".into(),
        };
        assert_eq!(
            meta.encode(),
            r#"{"source":"h#/e#pvc-1#pvc-1","sizeBytes":5,"dataBytes":3,"owner":"o"}"#
        );
        assert_eq!(serde_json::from_str::<Meta>(&meta.encode()).unwrap(), meta);
    }
}
