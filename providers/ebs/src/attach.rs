//! `attach` and `detach`: zone checks before any call, a device name per instance, and waiting
//! (batched) for EC2 to finish.

use stowage_provider::{AttachRequest, DetachRequest, ProviderError, PublishInfo, Result};

use crate::backend::EbsProvider;
use crate::devices::attach_limit_for;
use crate::ec2::{classify, code, is_gone};
use crate::instances::node_instance;

impl EbsProvider {
    pub(crate) async fn attach_to(&self, req: &AttachRequest) -> Result<PublishInfo> {
        let id = req.handle.as_str();
        let (node_zone, instance) = node_instance(&req.node)?;
        if let Some(volume_zone) = req.attributes.get("zone")
            && !node_zone.is_empty()
            && volume_zone != &node_zone
        {
            return Err(ProviderError::invalid(format!(
                "volume {id} is in {volume_zone} and node {} in {node_zone}: EBS volumes attach only within their zone",
                req.node.name
            )));
        }
        let _one_at_a_time = self.locks.lock(id).await;
        let info = self.instance(&instance).await?;
        if let Some(volume_zone) = req.attributes.get("zone")
            && !info.zone.is_empty()
            && volume_zone != &info.zone
        {
            return Err(ProviderError::invalid(format!(
                "volume {id} is in {volume_zone} and instance {instance} in {}",
                info.zone
            )));
        }
        let limit = req
            .node
            .max_attachments
            .or_else(|| attach_limit_for(&info.instance_type))
            .unwrap_or(self.config.max_attachments_per_node);
        let device = self.devices.assign(&instance, id, limit).ok_or_else(|| {
            ProviderError::exhausted(format!(
                "instance {instance} ({}) has {} volumes attached, its limit",
                info.instance_type,
                self.devices.count(&instance)
            ))
        })?;
        let attached = self.poller.describe(id).await?;
        let Some(view) = attached else {
            self.devices.release(&instance, id);
            return Err(ProviderError::not_found(format!(
                "volume {id} does not exist"
            )));
        };
        if let Some((other, _, _)) = view
            .attachments
            .iter()
            .find(|(i, _, s)| i != &instance && s != "detached")
        {
            self.devices.release(&instance, id);
            return Err(ProviderError::precondition(format!(
                "volume {id} is attached to instance {other}"
            )));
        }
        let device = match view.attachment_to(&instance) {
            Some((d, _)) if !d.is_empty() => d.to_string(),
            _ => {
                let sent = self
                    .client
                    .attach_volume()
                    .volume_id(id)
                    .instance_id(&instance)
                    .device(&device)
                    .send()
                    .await;
                if let Err(e) = sent {
                    self.devices.failed(&instance, id);
                    return Err(classify(
                        &format!("attaching volume {id} to {instance} as {device}"),
                        &e,
                    ));
                }
                device
            }
        };
        self.wait_until(id, "being attached", |v| {
            v.attachment_to(&instance)
                .is_some_and(|(_, s)| s == "attached")
        })
        .await?
        .ok_or_else(|| ProviderError::not_found(format!("volume {id} vanished while attaching")))?;
        let fs_type = req
            .fs_type
            .clone()
            .or_else(|| req.attributes.get("fsType").cloned())
            .unwrap_or_else(|| "ext4".into());
        Ok(PublishInfo::from([
            ("type".to_string(), "block".to_string()),
            ("devicePath".to_string(), device),
            (
                "devicePathHint".to_string(),
                format!(
                    "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{}",
                    id.replace('-', "")
                ),
            ),
            ("volumeId".to_string(), id.to_string()),
            ("fsType".to_string(), fs_type),
            ("readOnly".to_string(), req.read_only.to_string()),
        ]))
    }

    pub(crate) async fn detach_from(&self, req: &DetachRequest) -> Result<()> {
        let id = req.handle.as_str();
        let Ok((_, instance)) = node_instance(&req.node) else {
            // A node without an instance never had anything attached by us.
            return Ok(());
        };
        let _one_at_a_time = self.locks.lock(id).await;
        // EC2 needs the instance id to detach (and moto fails without it).
        match self
            .client
            .detach_volume()
            .volume_id(id)
            .instance_id(&instance)
            .force(req.force)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if is_gone(&e) || code(&e).as_deref() == Some("IncorrectState") => {}
            Err(e) => {
                return Err(classify(
                    &format!("detaching volume {id} from {instance}"),
                    &e,
                ));
            }
        }
        self.wait_until(id, "being detached", |v| {
            v.attachment_to(&instance)
                .is_none_or(|(_, s)| s == "detached")
        })
        .await?;
        self.devices.release(&instance, id);
        Ok(())
    }
}
