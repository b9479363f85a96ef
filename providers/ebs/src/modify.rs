//! `modify_volume`: a VolumeAttributesClass's `type`, `iops` and `throughput` applied to a live
//! volume with ModifyVolume. The target is checked against AWS' limits for its type and the
//! volume's size before any call ([`VolumeSpec::parse`], the same rules as a create), so an
//! impossible one is refused with nothing changed.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::VolumeType;
use stowage_provider::{ClaimRef, ModifyRequest, ProviderError, Result};

use crate::backend::EbsProvider;
use crate::ec2::classify;
use crate::params::{GIB, VolumeSpec};

/// The parameters a VolumeAttributesClass may give an EBS volume.
pub const MUTABLE: [&str; 3] = ["type", "iops", "throughput"];

/// Refuses parameters that are not [`MUTABLE`].
pub fn check_mutable_keys(parameters: &BTreeMap<String, String>) -> Result<()> {
    match parameters.keys().find(|k| !MUTABLE.contains(&k.as_str())) {
        Some(k) => Err(ProviderError::invalid(format!(
            "{k:?} cannot be modified on a live EBS volume; a VolumeAttributesClass may give {}",
            MUTABLE.join(", ")
        ))),
        None => Ok(()),
    }
}

impl EbsProvider {
    pub(crate) async fn modify(&self, req: &ModifyRequest) -> Result<()> {
        check_mutable_keys(&req.parameters)?;
        let id = req.handle.as_str();
        let _one_at_a_time = self.locks.lock(id).await;
        let view = self.poller.existing(id).await?;
        // What the volume becomes: the class's values over what it has now.
        let mut target = BTreeMap::from([("type".to_string(), view.volume_type.clone())]);
        let same_type = req
            .parameters
            .get("type")
            .is_none_or(|t| t == &view.volume_type);
        if same_type {
            if let Some(iops) = view.iops {
                target.insert("iops".into(), iops.to_string());
            }
            if let Some(t) = view.throughput {
                target.insert("throughput".into(), t.to_string());
            }
        }
        target.extend(req.parameters.clone());
        let spec = VolumeSpec::parse(&target, view.size_gib * GIB, &ClaimRef::default(), id)
            .map_err(|e| {
                ProviderError::invalid(format!(
                    "volume {id} ({} GiB): {}",
                    view.size_gib, e.message
                ))
            })?;
        let unchanged = spec.volume_type == view.volume_type
            && spec.iops.is_none_or(|i| Some(i) == view.iops)
            && spec.throughput.is_none_or(|t| Some(t) == view.throughput);
        if unchanged {
            return Ok(());
        }
        let mut call = self
            .client
            .modify_volume()
            .volume_id(id)
            .volume_type(VolumeType::from(spec.volume_type));
        if let Some(iops) = spec.iops {
            call = call.iops(iops as i32);
        }
        if let Some(t) = spec.throughput {
            call = call.throughput(t as i32);
        }
        call.send()
            .await
            .map_err(|e| classify(&format!("modifying volume {id}"), &e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_type_iops_and_throughput_can_change() {
        let ok = BTreeMap::from([("iops".to_string(), "4000".to_string())]);
        assert!(check_mutable_keys(&ok).is_ok());
        let bad = BTreeMap::from([("encrypted".to_string(), "true".to_string())]);
        let e = check_mutable_keys(&bad).unwrap_err();
        assert_eq!(e.kind, stowage_provider::ErrorKind::InvalidArgument);
    }
}
