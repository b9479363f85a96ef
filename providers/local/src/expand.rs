//! `expand_volume`: grow the reservation (and the hard quota), if the root has room.

use stowage_provider::{ExpandRequest, Expanded, ProviderError, Result, validate_volume_name};

use crate::core::Core;

pub(crate) fn expand(core: &Core, req: &ExpandRequest) -> Result<Expanded> {
    validate_volume_name(&req.handle)?;
    let record = core
        .locked(|ledger| {
            let Some(mut record) = ledger.get(&req.handle).cloned() else {
                return Ok(Err(ProviderError::not_found(format!(
                    "volume {} not found",
                    req.handle
                ))));
            };
            if req.capacity_bytes <= record.capacity_bytes {
                return Ok(Ok(record));
            }
            let used = ledger.used_except(&req.handle);
            if used.saturating_add(req.capacity_bytes) > core.capacity_bytes {
                return Ok(Err(ProviderError::exhausted(format!(
                    "cannot grow {} to {} bytes: {} of {} bytes free on node {}",
                    req.handle,
                    req.capacity_bytes,
                    (core.capacity_bytes - used).max(0),
                    core.capacity_bytes,
                    core.node
                ))));
            }
            record.capacity_bytes = req.capacity_bytes;
            ledger.put(record.clone())?;
            Ok(Ok(record))
        })
        .map_err(|e| ProviderError::temporary(format!("local provider: {e}")))??;
    if let Some(id) = record.project_id
        && let Err(e) = core
            .quota
            .set(&core.volume_path(&record.name), id, record.capacity_bytes)
    {
        tracing::warn!(
            volume = record.name,
            error = e,
            "could not raise the hard quota"
        );
    }
    core.sync()
        .map_err(|e| ProviderError::temporary(format!("local provider: {e}")))?;
    Ok(Expanded {
        capacity_bytes: record.capacity_bytes,
        in_progress: None,
    })
}
