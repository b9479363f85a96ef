//! `expand_volume`: grow the record, then the image. Never shrinks.

use stowage_provider::{ExpandRequest, Expanded, ProviderError, Result, validate_volume_name};

use crate::core::{Core, Record};
use crate::create::ensure_image;

pub async fn expand(core: &Core, req: &ExpandRequest) -> Result<Expanded> {
    validate_volume_name(&req.handle)?;
    let Some(record) = core.record(&req.handle).await? else {
        return Err(ProviderError::not_found(format!(
            "volume {} does not exist",
            req.handle
        )));
    };
    let record = if req.capacity_bytes > record.capacity_bytes {
        let grown = Record {
            capacity_bytes: req.capacity_bytes,
            ..record
        };
        core.replace(&req.handle, &grown).await?;
        grown
    } else {
        record
    };
    ensure_image(core, &req.handle, &record).await?;
    Ok(Expanded {
        capacity_bytes: record.capacity_bytes,
        in_progress: None,
    })
}
