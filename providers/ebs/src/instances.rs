//! Nodes and instances: a node's instance from its providerID, and what EC2 says of an
//! instance (zone, type, devices in use), asked once per instance.

use stowage_provider::{NodeInfo, ProviderError, Result};

use crate::backend::EbsProvider;
use crate::ec2::classify;

use crate::ZONE_KEYS;

/// What the provider knows of an instance.
#[derive(Clone, Debug)]
pub(crate) struct InstanceInfo {
    pub zone: String,
    pub instance_type: String,
}

/// `aws:///us-east-1a/i-0123` → (zone, instance id).
pub fn parse_provider_id(id: &str) -> Option<(String, String)> {
    let rest = id.strip_prefix("aws://")?;
    let mut parts = rest.trim_start_matches('/').rsplitn(2, '/');
    let instance = parts.next()?.to_string();
    let zone = parts.next().unwrap_or_default().to_string();
    (instance.starts_with("i-") && instance.len() > 2).then_some((zone, instance))
}

pub(crate) fn node_instance(node: &NodeInfo) -> Result<(String, String)> {
    let parsed = node.provider_id.as_deref().and_then(parse_provider_id);
    let Some((zone, instance)) = parsed else {
        return Err(ProviderError::invalid(format!(
            "node {} has no spec.providerID like aws:///<zone>/<instance-id>",
            node.name
        )));
    };
    let zone = if zone.is_empty() {
        ZONE_KEYS
            .iter()
            .find_map(|k| node.labels.get(*k).cloned())
            .unwrap_or_default()
    } else {
        zone
    };
    Ok((zone, instance))
}

impl EbsProvider {
    pub(crate) async fn instance(&self, id: &str) -> Result<InstanceInfo> {
        let cached = || {
            self.instances
                .lock()
                .get(id)
                .cloned()
                .filter(|_| self.devices.knows(id))
        };
        if let Some(i) = cached() {
            return Ok(i);
        }
        let _one_lookup = self.instance_locks.lock(id).await;
        if let Some(i) = cached() {
            return Ok(i);
        }
        let resp = self
            .client
            .describe_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(|e| classify(&format!("describing instance {id}"), &e))?;
        let instance = resp
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(id))
            .ok_or_else(|| ProviderError::not_found(format!("instance {id} does not exist")))?;
        let info = InstanceInfo {
            zone: instance
                .placement()
                .and_then(|p| p.availability_zone())
                .unwrap_or_default()
                .to_string(),
            instance_type: instance
                .instance_type()
                .map(|t| t.as_str().to_string())
                .unwrap_or_default(),
        };
        let devices = instance
            .block_device_mappings()
            .iter()
            .filter_map(|m| {
                Some((
                    m.ebs()?.volume_id()?.to_string(),
                    m.device_name()?.to_string(),
                ))
            })
            .collect();
        self.devices.learn(id, devices);
        self.instances.lock().insert(id.to_string(), info.clone());
        Ok(info)
    }
}
