//! `delete_volume`: remove (or archive, or keep) the directory, then release its reservation.
//!
//! Only the volume's own directory is ever touched, and only by its validated name: never a
//! parent, never a path from a parameter.

use std::io;

use stowage_provider::params::{OnDelete, archive_names};
use stowage_provider::{DeleteVolumeRequest, ProviderError, Result, validate_volume_name};

use crate::core::Core;
use crate::create::PARAM_ON_DELETE;

pub(crate) fn delete(core: &Core, req: &DeleteVolumeRequest) -> Result<()> {
    validate_volume_name(&req.handle)?;
    let io_err = |e: io::Error| ProviderError::temporary(format!("local provider: {e}"));
    let dir = core.volume_path(&req.handle);
    // A copy into the volume still running stops first, so it cannot recreate what is removed.
    crate::snapshot::abandon_fill(core, &req.handle).map_err(io_err)?;
    core.locked(|ledger| {
        let record = ledger.get(&req.handle).cloned();
        let on_delete = record
            .as_ref()
            .and_then(|r| r.parameters.get(PARAM_ON_DELETE).cloned())
            .or_else(|| req.attributes.get(PARAM_ON_DELETE).cloned())
            .and_then(|v| OnDelete::parse(&v).ok())
            .unwrap_or_default();
        if dir.exists() {
            match on_delete {
                OnDelete::Archive => {
                    let target = archive_names(&req.handle)
                        .map(|n| core.root.join(n))
                        .find(|t| !t.exists())
                        .expect("the archive names never run out");
                    std::fs::rename(&dir, &target)?;
                }
                OnDelete::Retain => {}
                OnDelete::Delete => std::fs::remove_dir_all(&dir)?,
            }
        }
        if let Some(id) = record.and_then(|r| r.project_id)
            && let Err(e) = core.quota.clear(id)
        {
            tracing::warn!(
                volume = req.handle,
                error = e,
                "could not lift the hard quota"
            );
        }
        ledger.remove(&req.handle)
    })
    .map_err(io_err)?;
    core.sync().map_err(io_err)
}
