//! `attach`: nothing to attach for a local directory; the check is that the node is the
//! volume's node and the directory exists, and the answer is where it is.

use std::collections::BTreeMap;

use stowage_provider::{
    AttachRequest, DetachRequest, ProviderError, PublishInfo, Result, validate_volume_name,
};

use crate::core::Core;

pub(crate) fn attach(core: &Core, req: &AttachRequest) -> Result<PublishInfo> {
    validate_volume_name(&req.handle)?;
    if req.node.name != core.node {
        return Err(ProviderError::invalid(format!(
            "volume {} is a local directory on node {}; it cannot be used on node {}",
            req.handle, core.node, req.node.name
        )));
    }
    let dir = core.volume_path(&req.handle);
    if !dir.is_dir() {
        return Err(ProviderError::not_found(format!(
            "volume {} has no directory at {}",
            req.handle,
            dir.display()
        )));
    }
    let mut info = BTreeMap::from([
        ("type".to_string(), "local".to_string()),
        ("path".to_string(), dir.display().to_string()),
        ("node".to_string(), core.node.clone()),
    ]);
    if req.read_only {
        info.insert("readOnly".to_string(), "true".to_string());
    }
    if !req.mount_options.is_empty() {
        info.insert("mountOptions".to_string(), req.mount_options.join(","));
    }
    Ok(info)
}

pub(crate) fn detach(_core: &Core, req: &DetachRequest) -> Result<()> {
    validate_volume_name(&req.handle)
}
