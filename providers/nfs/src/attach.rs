//! `attach`: there is nothing to attach to NFS; the check is that the directory is there, and
//! the answer is how a node mounts it. `detach` has nothing to undo.

use stowage_provider::{AttachRequest, DetachRequest, ProviderError, PublishInfo, Result};

use crate::backend::{NfsProvider, join_path};
use crate::handle::VolumeHandle;

impl NfsProvider {
    pub(crate) async fn attach_to(&self, req: &AttachRequest) -> Result<PublishInfo> {
        let h = VolumeHandle::parse(&req.handle)?;
        let share = self.share_of(&h, &req.attributes);
        let there = share.exists(&h.sub_dir).await.map_err(|f| {
            f.into_error(&format!(
                "looking for {} on {}",
                h.sub_dir,
                share.key.describe()
            ))
        })?;
        if !there {
            return Err(ProviderError::not_found(format!(
                "the directory {} of volume {} is not on {}",
                h.sub_dir,
                h.name,
                share.key.describe()
            )));
        }
        let path = join_path(&h.share, &h.sub_dir);
        let mut options = Vec::new();
        if !req
            .mount_options
            .iter()
            .any(|o| o.starts_with("nfsvers=") || o.starts_with("vers="))
        {
            options.push(format!("nfsvers={}", share.key.version.as_str()));
        }
        if let Some(port) = h.server.port {
            options.push(format!("port={port}"));
        }
        options.extend(req.mount_options.iter().cloned());
        if req.read_only {
            options.push("ro".to_string());
        }
        let mut info = PublishInfo::from([
            ("type".to_string(), "nfs".to_string()),
            ("server".to_string(), h.server.host.clone()),
            ("share".to_string(), path.clone()),
            ("source".to_string(), format!("{}:{path}", h.server.host)),
            (
                "nfsvers".to_string(),
                share.key.version.as_str().to_string(),
            ),
            ("mountOptions".to_string(), options.join(",")),
            ("readOnly".to_string(), req.read_only.to_string()),
        ]);
        if let Some(port) = h.server.port {
            info.insert("port".to_string(), port.to_string());
        }
        Ok(info)
    }

    pub(crate) async fn detach_from(&self, _req: &DetachRequest) -> Result<()> {
        // Nothing was attached: nodes mount NFS themselves.
        Ok(())
    }
}
