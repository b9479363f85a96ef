//! The providers this server has, by provisioner name, built from the configuration.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use stowage_provider::Provider;
use stowage_provider::memory::MemoryProvider;
use stowage_provider::quantity::parse_bytes;

use crate::config::{Config, parse_duration};

#[derive(Clone, Default)]
pub struct Providers {
    by_name: BTreeMap<String, Arc<dyn Provider>>,
}

impl Providers {
    pub async fn build(config: &Config, data_dir: &Path) -> anyhow::Result<Providers> {
        let mut providers = Providers::default();
        if config.providers.local.enabled {
            let local =
                stowage_provider_local::LocalProvider::build(&config.providers.local, data_dir)
                    .map_err(anyhow::Error::msg)?;
            providers.insert(Arc::new(local));
        }
        if config.providers.nfs.enabled {
            providers.insert(Arc::new(stowage_provider_nfs::NfsProvider::new(
                config.providers.nfs.clone(),
                installation_id(data_dir)?,
            )));
        }
        if let Some(ebs) = config.providers.ebs.as_ref().filter(|e| e.enabled) {
            providers.insert(Arc::new(
                stowage_provider_ebs::EbsProvider::new(ebs.clone(), installation_id(data_dir)?)
                    .await,
            ));
        }
        let memory = &config.providers.memory;
        if memory.enabled {
            let mut p = MemoryProvider::new("memory.stowage.dev");
            if let Some(d) = &memory.attach_delay {
                p = p.with_attach_delay(parse_duration(d).ok_or_else(|| {
                    anyhow::anyhow!("providers.memory.attachDelay: {d:?} is not a duration")
                })?);
            }
            if let Some(c) = &memory.capacity {
                p = p.with_capacity(parse_bytes(c).ok_or_else(|| {
                    anyhow::anyhow!("providers.memory.capacity: {c:?} is not a size")
                })?);
            }
            providers.insert(Arc::new(p));
        }
        Ok(providers)
    }

    pub fn insert(&mut self, p: Arc<dyn Provider>) {
        self.by_name.insert(p.name().to_string(), p);
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Provider>> {
        self.by_name.values()
    }
}

/// This installation's identity, made on first start and kept in `<data-dir>/installation-id`.
/// Providers mark what they create with it, so that two installations sharing a backend
/// (an NFS export) never take each other's volumes for orphans.
pub fn installation_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("installation-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        Ok(_) => anyhow::bail!("{} is empty", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::new_v4().to_string();
            std::fs::write(&path, format!("{id}\n"))
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
            Ok(id)
        }
        Err(e) => anyhow::bail!("reading {}: {e}", path.display()),
    }
}

/// A provider's name and capabilities, as the API describes them.
pub fn describe(p: &dyn Provider) -> serde_json::Value {
    let c = p.capabilities();
    serde_json::json!({
        "name": p.name(),
        "capabilities": {
            "dynamicProvisioning": c.dynamic_provisioning,
            "attachRequired": c.attach_required,
            "expansion": c.expansion,
            "snapshots": c.snapshots,
            "topology": c.topology,
            "accessModes": c.access_modes.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
            "maxAttachmentsPerNode": c.max_attachments_per_node,
        }
    })
}
