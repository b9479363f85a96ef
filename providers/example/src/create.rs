//! `create_volume`: check the request, claim the name with a record, then make the image.

use std::collections::BTreeMap;

use stowage_provider::params::{ClassParameter, refuse_undescribed};
use stowage_provider::{
    CreateVolumeRequest, ProviderError, Result, Volume, VolumeInfo, validate_volume_name,
};

use crate::core::{Core, Record, temporary};

/// `preallocate: "true"` writes the image's blocks now instead of leaving it sparse.
pub const PARAM_PREALLOCATE: &str = "preallocate";

/// The class parameters this provider takes, for people (the console's class form).
pub const CLASS_PARAMETERS: [ClassParameter; 1] = [ClassParameter::new(
    PARAM_PREALLOCATE,
    "Write the image's blocks when the volume is made, instead of leaving it sparse",
)
.values(&["true", "false"])
.default("false")];

/// The class's parameters, as `create_volume` reads them; also the provider's
/// `check_class_parameters`.
pub fn validate_parameters(parameters: &BTreeMap<String, String>) -> Result<()> {
    // The names come from the descriptions, so the two cannot drift apart.
    refuse_undescribed(parameters, &CLASS_PARAMETERS, "example")?;
    match parameters.get(PARAM_PREALLOCATE).map(String::as_str) {
        None | Some("true" | "false") => Ok(()),
        Some(other) => Err(ProviderError::invalid(format!(
            "preallocate must be \"true\" or \"false\", not {other:?}"
        ))),
    }
}

fn validate(req: &CreateVolumeRequest) -> Result<()> {
    validate_volume_name(&req.name)?;
    if req.capacity_bytes <= 0 {
        return Err(ProviderError::invalid(
            "the requested size must be positive",
        ));
    }
    validate_parameters(&req.parameters)?;
    if req.content_source.is_some() {
        return Err(ProviderError::unsupported(
            "the example provider has no snapshots or clones",
        ));
    }
    if req.block {
        return Err(ProviderError::invalid(
            "the example provider makes image files for a file system; Block is not supported",
        ));
    }
    Ok(())
}

pub async fn create(core: &Core, req: &CreateVolumeRequest) -> Result<Volume> {
    validate(req)?;
    let wanted = Record {
        capacity_bytes: req.capacity_bytes,
        parameters: req.parameters.clone(),
    };
    // Whoever publishes the record first owns the name; everyone else compares with it.
    let record = match core.record(&req.name).await? {
        Some(existing) => existing,
        None => core.publish(&req.name, &wanted).await?,
    };
    if record != wanted {
        return Err(ProviderError::already_exists(format!(
            "volume {} exists with {} bytes and parameters {:?}",
            req.name, record.capacity_bytes, record.parameters
        )));
    }
    // Make (or finish making) the image the record describes: idempotent, so a retry after a
    // crash completes what the first create started.
    ensure_image(core, &req.name, &record).await?;
    Ok(volume_for(core, &req.name, &record))
}

/// Makes the image at least as large as the record says.
pub async fn ensure_image(core: &Core, name: &str, record: &Record) -> Result<()> {
    let path = core.image(name);
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&path)
        .await
        .map_err(|e| temporary("opening an image", e))?;
    let len = file
        .metadata()
        .await
        .map_err(|e| temporary("reading an image's size", e))?
        .len();
    let want = record.capacity_bytes as u64;
    if len < want {
        file.set_len(want)
            .await
            .map_err(|e| temporary("sizing an image", e))?;
        if record
            .parameters
            .get(PARAM_PREALLOCATE)
            .is_some_and(|v| v == "true")
        {
            file.sync_all()
                .await
                .map_err(|e| temporary("preallocating an image", e))?;
        }
    }
    Ok(())
}

/// What `create_volume` returns: the handle is the name, the attributes say where it is.
pub fn volume_for(core: &Core, name: &str, record: &Record) -> Volume {
    Volume {
        handle: name.to_string(),
        capacity_bytes: record.capacity_bytes,
        attributes: BTreeMap::from([("path".to_string(), core.image(name).display().to_string())]),
        accessible_topology: Vec::new(),
    }
}

pub async fn list(core: &Core) -> Result<Vec<VolumeInfo>> {
    Ok(core
        .records()
        .await?
        .into_iter()
        .map(|(name, r)| VolumeInfo {
            handle: name.clone(),
            name,
            capacity_bytes: r.capacity_bytes,
        })
        .collect())
}
