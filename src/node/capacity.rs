//! Storage capacity of a node's disk, for node-local provisioning: the agent publishes one
//! CSIStorageCapacity per class of its provider, selecting this node alone
//! (`kubernetes.io/hostname`), as Kubernetes' external-provisioner does in its distributed
//! mode. The server cannot: it never reaches node disks.
//!
//! The objects are the server's shape ([`capacity_object`]), labelled
//! `csi.storage.k8s.io/managed-by: stowage-node`; the node authorizer lets an agent write only
//! objects of that label whose topology is its own node. They are made again at the end of
//! every pass in which the room changed (a provision or a delete), so they follow within one
//! pass; what the agent believes it published is checked against the server every
//! [`REFRESH`], and an edited or deleted object is then put back.

use std::collections::BTreeMap;
use std::time::Instant;

use k8s_openapi::api::storage::v1::StorageClass;
use serde_json::json;
use stowage_provider::Topology;

use super::provision::LocalProvisioner;
use crate::cli::client::exit;
use crate::controllers::capacity::{MANAGED_BY_LABEL, NODE_MANAGED_BY, REFRESH, capacity_object};
use crate::resources::csistoragecapacity::CSIStorageCapacity;
use crate::resources::names::SYSTEM_NAMESPACE;

/// What this agent published, by object name: the capacity and largest volume it said.
#[derive(Default)]
pub struct Published {
    objects: BTreeMap<String, (Option<String>, Option<String>)>,
    /// When `objects` was last read from the server; `None` to read it on the next pass.
    read_at: Option<Instant>,
}

fn collection() -> String {
    format!("/apis/storage.k8s.io/v1/namespaces/{SYSTEM_NAMESPACE}/csistoragecapacities")
}

impl LocalProvisioner {
    /// Publishes this node's room for every class of its provider, and removes what it
    /// published for classes that went.
    pub(super) async fn publish_capacity(&self) -> anyhow::Result<()> {
        let mut published = self.published.lock().await;
        if published.read_at.is_none_or(|at| at.elapsed() >= REFRESH) {
            published.objects = self.read_published().await?;
            published.read_at = Some(Instant::now());
        }
        let want = self.wanted().await?;
        let result = self.converge(&mut published.objects, &want).await;
        if result.is_err() {
            // Something moved under us (an edit, a deletion): read it again next pass.
            published.read_at = None;
        }
        result
    }

    /// The objects this node should have now, by name.
    async fn wanted(&self) -> anyhow::Result<BTreeMap<String, CSIStorageCapacity>> {
        let classes = self.get("/apis/storage.k8s.io/v1/storageclasses").await?;
        let own_node = Topology::one(crate::resources::names::node::HOSTNAME_LABEL, &self.node);
        let mut want = BTreeMap::new();
        for item in classes["items"].as_array().into_iter().flatten() {
            let Ok(class) = serde_json::from_value::<StorageClass>(item.clone()) else {
                continue;
            };
            if class.provisioner != self.name() {
                continue;
            }
            let class_name = class.metadata.name.clone().unwrap_or_default();
            let parameters = crate::controllers::provisioner::provider_parameters(&class);
            let reports = match self.provider.capacity(&parameters).await {
                Ok(r) => r,
                // A class whose parameters the provider refuses has no room to publish.
                Err(_) => continue,
            };
            // Only this node's own topology: the one the authorizer lets it write.
            for report in reports.iter().filter(|r| r.topology == own_node) {
                let object = capacity_object(&class_name, self.name(), report, NODE_MANAGED_BY);
                want.insert(object.metadata.name.clone().unwrap_or_default(), object);
            }
        }
        Ok(want)
    }

    /// What the server holds of this node's objects.
    async fn read_published(
        &self,
    ) -> anyhow::Result<BTreeMap<String, (Option<String>, Option<String>)>> {
        let list = self
            .get(&format!(
                "{}?labelSelector={MANAGED_BY_LABEL}%3D{NODE_MANAGED_BY}",
                collection()
            ))
            .await?;
        let mut out = BTreeMap::new();
        for item in list["items"].as_array().into_iter().flatten() {
            let Ok(c) = serde_json::from_value::<CSIStorageCapacity>(item.clone()) else {
                continue;
            };
            let name = c.metadata.name.clone().unwrap_or_default();
            out.insert(name, amounts(&c));
        }
        Ok(out)
    }

    async fn converge(
        &self,
        have: &mut BTreeMap<String, (Option<String>, Option<String>)>,
        want: &BTreeMap<String, CSIStorageCapacity>,
    ) -> anyhow::Result<()> {
        for (name, object) in want {
            let amounts = amounts(object);
            match have.get(name) {
                Some(current) if *current == amounts => continue,
                Some(_) => {
                    self.client
                        .patch(
                            &format!("{}/{name}", collection()),
                            "application/merge-patch+json",
                            &json!({"capacity": object.capacity, "maximumVolumeSize": object.maximum_volume_size}),
                        )
                        .await
                        .map_err(|e| anyhow::anyhow!("updating capacity {name}: {}", e.message))?;
                }
                None => {
                    let mut body = serde_json::to_value(object)?;
                    body["apiVersion"] = json!("storage.k8s.io/v1");
                    body["kind"] = json!("CSIStorageCapacity");
                    match self.client.post(&collection(), &body).await {
                        Ok(_) => {}
                        // Already there (a lost answer, a restart): updated on the next read.
                        Err(e) if e.code == exit::CONFLICT => {
                            anyhow::bail!("capacity {name} exists already")
                        }
                        Err(e) => anyhow::bail!("publishing capacity {name}: {}", e.message),
                    }
                }
            }
            have.insert(name.clone(), amounts);
        }
        let gone: Vec<String> = have
            .keys()
            .filter(|n| !want.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            match self
                .client
                .delete(&format!("{}/{name}", collection()))
                .await
            {
                Ok(_) => {}
                Err(e) if e.code == exit::NOT_FOUND => {}
                Err(e) => anyhow::bail!("removing capacity {name}: {}", e.message),
            }
            have.remove(&name);
        }
        Ok(())
    }
}

fn amounts(c: &CSIStorageCapacity) -> (Option<String>, Option<String>) {
    let q = |v: &Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
        v.as_ref().map(|q| q.0.clone())
    };
    (q(&c.capacity), q(&c.maximum_volume_size))
}
