//! The providers this server has, by provisioner name, built from the configuration.

use std::collections::BTreeMap;
use std::sync::Arc;

use stowage_provider::Provider;
use stowage_provider::factory::{Env, Factory, factory, section_switch};
use stowage_provider::memory::MemoryProvider;

use crate::config::ProvidersConfig;

#[derive(Clone, Default)]
pub struct Providers {
    by_name: BTreeMap<String, Arc<dyn Provider>>,
}

/// The providers this program is built with; a custom build adds its own to the list and
/// calls [`crate::cli::main_with`].
pub fn builtin() -> Vec<Box<dyn Factory>> {
    vec![
        factory::<stowage_provider_local::LocalProvider>(),
        factory::<stowage_provider_nfs::NfsProvider>(),
        factory::<stowage_provider_ebs::EbsProvider>(),
        factory::<MemoryProvider>(),
    ]
}

impl Providers {
    /// Builds the providers the configuration turns on (see [`stowage_provider::factory`]).
    /// Builds the providers the config turns on. `env` says whether this server is one of
    /// several replicas: then a node-local provider that is on only by default stays off,
    /// and one the config turns on is an error.
    pub async fn build(
        factories: &[Box<dyn Factory>],
        config: &ProvidersConfig,
        env: &Env,
        replicas: bool,
    ) -> anyhow::Result<Providers> {
        let known: Vec<&str> = factories.iter().map(|f| f.section()).collect();
        if let Some(unknown) = config.keys().find(|k| !known.contains(&k.as_str())) {
            anyhow::bail!(
                "providers.{unknown}: no such provider in this build (it has {})",
                known.join(", ")
            );
        }
        let mut providers = Providers::default();
        for f in factories {
            let (on, section) = section_switch(config.get(f.section()), f.on_by_default())
                .map_err(|e| anyhow::anyhow!("providers.{}: {e}", f.section()))?;
            if on && replicas && f.node_local() {
                if config.contains_key(f.section()) {
                    anyhow::bail!(
                        "providers.{}: its volumes are directories on this machine's disk, and \
                         with a shared PostgreSQL store the controllers may run on any replica. \
                         Node-local provisioning belongs in the node agent; until then, use it \
                         with the SQLite store only (remove the section or set enabled: false)",
                        f.section()
                    );
                }
                tracing::info!(
                    provider = f.section(),
                    "not enabled: node-local storage cannot be served by replicas"
                );
                continue;
            }
            if on {
                providers.insert(f.build(section, env).await?);
            }
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

/// A provider's name and capabilities, as the API describes them.
pub fn describe(p: &dyn Provider) -> serde_json::Value {
    let c = p.capabilities();
    serde_json::json!({
        "name": p.name(),
        "capabilities": {
            "dynamicProvisioning": c.dynamic_provisioning,
            "attachRequired": c.attach_required,
            "expansion": c.expansion,
            "nodeExpansion": c.node_expansion,
            "snapshots": c.snapshots,
            "clones": c.clones,
            "volumeModification": c.volume_modification,
            "storageCapacity": c.storage_capacity,
            "topology": c.topology,
            "accessModes": c.access_modes.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
            "maxAttachmentsPerNode": c.max_attachments_per_node,
        },
        "parameters": p.class_parameters(),
    })
}
