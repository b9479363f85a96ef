//! `list_volumes`: every volume in the ledger.

use stowage_provider::{ProviderError, Result, VolumeInfo};

use crate::core::Core;

pub(crate) fn list(core: &Core) -> Result<Vec<VolumeInfo>> {
    let records = core
        .records()
        .map_err(|e| ProviderError::temporary(format!("local provider: {e}")))?;
    Ok(records
        .into_iter()
        .map(|r| VolumeInfo {
            handle: r.name.clone(),
            name: r.name,
            capacity_bytes: r.capacity_bytes,
        })
        .collect())
}
