//! `delete_volume`: the image first, then the record, so a delete cut off part-way is
//! finished by the next one (the record still names the volume until its image is gone).

use std::io;

use stowage_provider::{DeleteVolumeRequest, Result, validate_volume_name};

use crate::core::{Core, temporary};

pub async fn delete(core: &Core, req: &DeleteVolumeRequest) -> Result<()> {
    validate_volume_name(&req.handle)?;
    for path in [core.image(&req.handle), core.record_path(&req.handle)] {
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            // Missing is success: the contract's idempotent delete.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(temporary("deleting a volume", e)),
        }
    }
    Ok(())
}
