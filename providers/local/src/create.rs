//! `create_volume`: reserve the size in the ledger, then make the directory (or fill it from a
//! snapshot or another volume: [`crate::snapshot`]).

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use stowage_provider::{
    CreateVolumeRequest, ProviderError, Result, Topology, Volume, validate_volume_name,
};

use crate::core::{Core, Record};
use crate::{HOSTNAME_LABEL, quota};

/// Class parameters this provider understands.
pub(crate) use stowage_provider::params::ON_DELETE as PARAM_ON_DELETE;

/// The parameters this provider takes, described for people; a name not here is refused.
pub(crate) const CLASS_PARAMETERS: [stowage_provider::params::ClassParameter; 2] = [
    stowage_provider::params::ON_DELETE_PARAMETER,
    stowage_provider::params::MOUNT_PERMISSIONS_PARAMETER,
];

pub(crate) fn validate_parameters(params: &BTreeMap<String, String>) -> Result<u32> {
    stowage_provider::params::refuse_undescribed(params, &CLASS_PARAMETERS, "local")?;
    stowage_provider::params::OnDelete::of(params)?;
    stowage_provider::params::mount_permissions(params)
}

pub(crate) fn volume_for(core: &Core, record: &Record) -> Volume {
    let mut attributes = BTreeMap::from([
        (
            "path".to_string(),
            core.volume_path(&record.name).display().to_string(),
        ),
        ("node".to_string(), core.node.clone()),
    ]);
    if let Some(on_delete) = record.parameters.get(PARAM_ON_DELETE) {
        attributes.insert(PARAM_ON_DELETE.to_string(), on_delete.clone());
    }
    Volume {
        handle: record.name.clone(),
        capacity_bytes: record.capacity_bytes,
        attributes,
        accessible_topology: vec![Topology::one(HOSTNAME_LABEL, &core.node)],
    }
}

pub(crate) fn create(core: &Arc<Core>, req: &CreateVolumeRequest) -> Result<Volume> {
    validate_volume_name(&req.name)?;
    if req.capacity_bytes <= 0 {
        return Err(ProviderError::invalid(
            "the requested size must be positive",
        ));
    }
    let mode = validate_parameters(&req.parameters)?;
    if req.block {
        return Err(ProviderError::invalid(
            "the local provider makes directories: volumeMode Block is not supported",
        ));
    }
    // A term is a selected node's topology labels (its zone, its region, ...) or a class's
    // allowed topology. Only the hostname is this provider's key: a term admits this node when
    // it names it. (A zone-only term cannot be checked from here, so it is refused.)
    let names_us = |t: &Topology| t.0.get(HOSTNAME_LABEL) == Some(&core.node);
    if !req.topology.requisite.is_empty() && !req.topology.requisite.iter().any(names_us) {
        return Err(ProviderError::invalid(format!(
            "the local provider serves node {:?} only, outside the requested topology",
            core.node
        )));
    }
    // A copy finished before (a retry after the answer was lost) is the volume, even if its
    // source has gone since.
    let source = req.content_source.as_ref().map(crate::snapshot::label);
    let done = core
        .locked(|ledger| {
            Ok(ledger.get(&req.name).cloned().filter(|r| {
                r.capacity_bytes == req.capacity_bytes
                    && r.parameters == req.parameters
                    && r.source == source
            }))
        })
        .map_err(|e| ProviderError::temporary(format!("local provider: {e}")))?;
    if let Some(record) = done
        && record.source.is_some()
        && core.volume_path(&req.name).is_dir()
    {
        return Ok(volume_for(core, &record));
    }
    let origin = req
        .content_source
        .as_ref()
        .map(|source| crate::snapshot::origin(core, source))
        .transpose()?;
    if let Some(origin) = &origin
        && req.capacity_bytes < origin.size_bytes
    {
        return Err(ProviderError::invalid(format!(
            "{} bytes requested, less than the {} bytes of {}",
            req.capacity_bytes,
            origin.size_bytes,
            origin.label.replacen(':', " ", 1)
        )));
    }
    let dir = core.volume_path(&req.name);
    let io_err = |e: io::Error| ProviderError::temporary(format!("local provider: {e}"));
    let record = core
        .locked(|ledger| {
            if let Some(existing) = ledger.get(&req.name) {
                if existing.capacity_bytes != req.capacity_bytes
                    || existing.parameters != req.parameters
                    || existing.source != source
                {
                    return Ok(Err(ProviderError::already_exists(format!(
                        "volume {} exists with a size of {} bytes and other parameters",
                        req.name, existing.capacity_bytes
                    ))));
                }
                return Ok(Ok(existing.clone()));
            }
            let used = ledger.used_except(&req.name);
            if used.saturating_add(req.capacity_bytes) > core.capacity_bytes {
                return Ok(Err(ProviderError::exhausted(format!(
                    "not enough space on node {}: {} bytes requested, {} of {} bytes free",
                    core.node,
                    req.capacity_bytes,
                    (core.capacity_bytes - used).max(0),
                    core.capacity_bytes
                ))));
            }
            let taken = ledger.project_ids();
            let project_id = matches!(core.quota, quota::QuotaMode::XfsProjectQuota { .. })
                .then(|| quota::project_id(&req.name, |id| taken.contains(&id)));
            let record = Record {
                name: req.name.clone(),
                capacity_bytes: req.capacity_bytes,
                parameters: req.parameters.clone(),
                project_id,
                source: source.clone(),
            };
            // Reserve first, then create: a crash in between leaves a reservation that the
            // retried create adopts, never an unaccounted directory.
            ledger.put(record.clone())?;
            Ok(Ok(record))
        })
        .map_err(io_err)??;
    match origin {
        // The copy's own root keeps its source's mode.
        Some(origin) => crate::snapshot::fill(core, &req.name, origin)?,
        None => match std::fs::create_dir(&dir) {
            Ok(()) => {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
                    .map_err(io_err)?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(e)),
        },
    }
    if let Some(id) = record.project_id
        && let Err(e) = core.quota.set(&dir, id, record.capacity_bytes)
    {
        tracing::warn!(
            volume = record.name,
            error = e,
            "could not set the hard quota; accounting still applies"
        );
    }
    core.sync().map_err(io_err)?;
    Ok(volume_for(core, &record))
}
