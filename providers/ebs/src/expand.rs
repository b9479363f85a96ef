//! `expand_volume`: ModifyVolume to the next whole GiB; never shrinks.

use stowage_provider::{ExpandRequest, Expanded, ProviderError, Result};

use crate::backend::EbsProvider;
use crate::ec2::classify;
use crate::params::{GIB, gib_for, limits_of};

impl EbsProvider {
    pub(crate) async fn expand(&self, req: &ExpandRequest) -> Result<Expanded> {
        let id = req.handle.as_str();
        let _one_at_a_time = self.locks.lock(id).await;
        let view = self.poller.existing(id).await?;
        let wanted = gib_for(req.capacity_bytes);
        if wanted <= view.size_gib {
            return Ok(Expanded {
                capacity_bytes: view.size_gib * GIB,
                in_progress: None,
            });
        }
        if let Some(limits) = req.attributes.get("type").and_then(|t| limits_of(t))
            && wanted > limits.max_gib
        {
            return Err(ProviderError::invalid(format!(
                "{} volumes are at most {} GiB; {wanted} GiB requested",
                limits.name, limits.max_gib
            )));
        }
        let out = self
            .client
            .modify_volume()
            .volume_id(id)
            .size(wanted as i32)
            .send()
            .await
            .map_err(|e| classify(&format!("growing volume {id} to {wanted} GiB"), &e))?;
        let state = out
            .volume_modification()
            .and_then(|m| m.modification_state())
            .map(|s| s.as_str().to_string());
        Ok(Expanded {
            capacity_bytes: wanted * GIB,
            in_progress: state.filter(|s| s != "completed"),
        })
    }
}
