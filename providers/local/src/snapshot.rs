//! Snapshots, restores and clones: each is a copy of a directory tree ([`crate::copy`]), run in
//! the background ([`stowage_provider::copies`]) and moved into place when complete.
//!
//! - A snapshot `<id>` is `<root>/.stowage/snapshots/<id>/`: the copied `data` tree and a
//!   `meta.json` saying which volume it came from and how large that volume was. It exists only
//!   once complete; a copy under way lives in `<root>/.stowage/scratch/snapshots/<id>`.
//! - A restore or clone copies into `<root>/.stowage/scratch/volumes/<name>`, then renames it to
//!   the volume's directory, so a volume directory is never half-filled.
//!
//! A restart forgets copies under way; the next call starts them again from an empty scratch.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use stowage_provider::copies::{CopyState, Tracker};
use stowage_provider::{
    ContentSource, ProviderError, Result, Snapshot, SnapshotRequest, validate_volume_name,
};

use crate::copy::{copy_tree, remove_tree, sync_filesystem};
use crate::core::Core;

/// `meta.json` of a finished snapshot.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    /// The volume it was taken of.
    source: String,
    /// That volume's size: the smallest volume it restores into.
    size_bytes: i64,
    /// Bytes of file data it holds.
    data_bytes: i64,
}

fn io_err(e: io::Error) -> ProviderError {
    if e.kind() == io::ErrorKind::StorageFull {
        return ProviderError::exhausted(format!("local provider: no room for the copy: {e}"));
    }
    ProviderError::temporary(format!("local provider: {e}"))
}

/// Runs a copy into `scratch`: whatever it leaves there when it fails is removed at once (a
/// full disk must not stay full until the next attempt), and what it made is flushed to disk
/// before `finish` moves it into place.
fn in_scratch(
    scratch: &Path,
    copy: impl FnOnce(&Path) -> io::Result<()>,
    finish: impl FnOnce(&Path) -> io::Result<()>,
) -> io::Result<()> {
    let result = remove_tree(scratch)
        .and_then(|()| {
            if let Some(parent) = scratch.parent() {
                fs::create_dir_all(parent)?;
            }
            copy(scratch)
        })
        .and_then(|()| sync_filesystem(scratch))
        .and_then(|()| finish(scratch));
    if result.is_err() {
        let _ = remove_tree(scratch);
    }
    result
}

fn copy_key(kind: &str, name: &str) -> String {
    format!("{kind}/{name}")
}

fn read_meta(core: &Core, id: &str) -> Result<Option<Meta>> {
    match fs::read(core.snapshot_path(id).join("meta.json")) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ProviderError::temporary(format!("local provider: snapshot {id}: {e}"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(e)),
    }
}

fn as_snapshot(id: &str, meta: &Meta) -> Snapshot {
    Snapshot {
        id: id.to_string(),
        source_handle: meta.source.clone(),
        size_bytes: meta.size_bytes,
        ready: true,
        progress: None,
    }
}

/// Runs a blocking copy on the blocking pool, as the future a [`Copies`] job awaits.
///
/// [`Copies`]: stowage_provider::copies::Copies
async fn blocking_copy(
    tracker: Arc<Tracker>,
    f: impl FnOnce(&Tracker) -> io::Result<()> + Send + 'static,
) -> Result<()> {
    tokio::task::spawn_blocking(move || f(&tracker))
        .await
        .map_err(|e| ProviderError::temporary(format!("local provider: {e}")))?
        .map_err(io_err)
}

pub(crate) fn create_snapshot(core: &Arc<Core>, req: &SnapshotRequest) -> Result<Snapshot> {
    validate_volume_name(&req.name)?;
    validate_volume_name(&req.source_handle)?;
    if let Some(k) = req.parameters.keys().next() {
        return Err(ProviderError::invalid(format!(
            "unknown snapshot parameter {k:?}: the local provider's snapshot classes take none"
        )));
    }
    if let Some(meta) = read_meta(core, &req.name)? {
        if meta.source != req.source_handle {
            return Err(ProviderError::already_exists(format!(
                "snapshot {} exists, of volume {}",
                req.name, meta.source
            )));
        }
        return Ok(as_snapshot(&req.name, &meta));
    }
    let size_bytes = core
        .locked(|ledger| Ok(ledger.get(&req.source_handle).map(|r| r.capacity_bytes)))
        .map_err(io_err)?
        .ok_or_else(|| {
            ProviderError::not_found(format!("volume {} not found", req.source_handle))
        })?;
    let source_dir = core.volume_path(&req.source_handle);
    if !source_dir.is_dir() {
        return Err(ProviderError::not_found(format!(
            "volume {} has no directory",
            req.source_handle
        )));
    }
    let job_core = core.clone();
    let (name, source) = (req.name.clone(), req.source_handle.clone());
    let state = core
        .copies
        .poll(&copy_key("snapshots", &req.name), move |tracker| {
            blocking_copy(tracker, move |tracker| {
                let core = job_core;
                in_scratch(
                    &core.scratch_path("snapshots", &name),
                    |scratch| {
                        fs::create_dir(scratch)?;
                        copy_tree(&source_dir, &scratch.join("data"), tracker)?;
                        let meta = Meta {
                            source,
                            size_bytes,
                            data_bytes: tracker.progress().total_bytes,
                        };
                        fs::write(
                            scratch.join("meta.json"),
                            serde_json::to_vec(&meta).map_err(io::Error::other)?,
                        )
                    },
                    |scratch| move_into_place(scratch, &core.snapshot_path(&name)),
                )
            })
        });
    match state {
        CopyState::Running(progress) => Ok(Snapshot {
            id: req.name.clone(),
            source_handle: req.source_handle.clone(),
            size_bytes,
            ready: false,
            progress: Some(progress),
        }),
        CopyState::Done => read_meta(core, &req.name)?
            .map(|meta| as_snapshot(&req.name, &meta))
            .ok_or_else(|| {
                ProviderError::temporary(format!("snapshot {} vanished after its copy", req.name))
            }),
        CopyState::Failed(e) => Err(e),
    }
}

/// Renames a finished copy to its place, durably.
fn move_into_place(scratch: &Path, target: &Path) -> io::Result<()> {
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::rename(scratch, target)?;
    if let Some(parent) = target.parent() {
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

pub(crate) fn snapshot_info(core: &Core, id: &str) -> Result<Snapshot> {
    validate_volume_name(id)
        .map_err(|_| ProviderError::not_found(format!("snapshot {id} not found")))?;
    if let Some(meta) = read_meta(core, id)? {
        return Ok(as_snapshot(id, &meta));
    }
    Err(ProviderError::not_found(format!("snapshot {id} not found")))
}

pub(crate) fn delete_snapshot(core: &Core, id: &str) -> Result<()> {
    // An id that is not one of ours names nothing here.
    if validate_volume_name(id).is_err() {
        return Ok(());
    }
    core.copies.cancel_blocking(&copy_key("snapshots", id));
    remove_tree(&core.scratch_path("snapshots", id)).map_err(io_err)?;
    remove_tree(&core.snapshot_path(id)).map_err(io_err)
}

/// What a new volume is copied from: the tree, its size (the smallest volume it fits), and the
/// record's `source`.
pub(crate) struct Origin {
    pub tree: PathBuf,
    pub size_bytes: i64,
    pub label: String,
}

/// How a volume's record names what it was copied from.
pub(crate) fn label(source: &ContentSource) -> String {
    match source {
        ContentSource::Snapshot { snapshot_id } => format!("snapshot:{snapshot_id}"),
        ContentSource::Volume { handle, .. } => format!("volume:{handle}"),
    }
}

/// Resolves a content source; a missing one is `NotFound`.
pub(crate) fn origin(core: &Core, source: &ContentSource) -> Result<Origin> {
    match source {
        ContentSource::Snapshot { snapshot_id } => {
            let missing = || ProviderError::not_found(format!("snapshot {snapshot_id} not found"));
            validate_volume_name(snapshot_id).map_err(|_| missing())?;
            let meta = read_meta(core, snapshot_id)?.ok_or_else(missing)?;
            Ok(Origin {
                tree: core.snapshot_path(snapshot_id).join("data"),
                size_bytes: meta.size_bytes,
                label: label(source),
            })
        }
        ContentSource::Volume { handle, .. } => {
            let missing = || ProviderError::not_found(format!("volume {handle} not found"));
            validate_volume_name(handle).map_err(|_| missing())?;
            let size_bytes = core
                .locked(|ledger| Ok(ledger.get(handle).map(|r| r.capacity_bytes)))
                .map_err(io_err)?
                .ok_or_else(missing)?;
            let tree = core.volume_path(handle);
            if !tree.is_dir() {
                return Err(missing());
            }
            Ok(Origin {
                tree,
                size_bytes,
                label: label(source),
            })
        }
    }
}

/// Fills the new volume `name` from `origin`: starts the copy, reports its progress as
/// `InProgress`, and returns once the volume's directory is in place.
pub(crate) fn fill(core: &Arc<Core>, name: &str, origin: Origin) -> Result<()> {
    let target = core.volume_path(name);
    if target.exists() {
        return Ok(());
    }
    let job_core = core.clone();
    let job_name = name.to_string();
    let state = core
        .copies
        .poll(&copy_key("volumes", name), move |tracker| {
            blocking_copy(tracker, move |tracker| {
                in_scratch(
                    &job_core.scratch_path("volumes", &job_name),
                    |scratch| copy_tree(&origin.tree, scratch, tracker),
                    |scratch| move_into_place(scratch, &job_core.volume_path(&job_name)),
                )
            })
        });
    match state {
        CopyState::Running(progress) => Err(ProviderError::in_progress(
            &format!("copying data into volume {name}"),
            progress,
        )),
        CopyState::Done => Ok(()),
        CopyState::Failed(e) => Err(e),
    }
}

/// Stops a copy into volume `name` and removes its scratch (the volume is being deleted).
pub(crate) fn abandon_fill(core: &Core, name: &str) -> io::Result<()> {
    core.copies.cancel_blocking(&copy_key("volumes", name));
    remove_tree(&core.scratch_path("volumes", name))
}
