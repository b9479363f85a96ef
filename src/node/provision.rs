//! Node-local provisioning: the local provider runs in the agent of the node that holds its
//! disk, as Kubernetes' external-provisioner does in its distributed mode. The control plane
//! then never reaches node disks, and each node's volumes are made on that node.
//!
//! The server runs without the local provider (`providers.local.enabled: false`), so it
//! leaves `local.stowage.dev` claims and attachments to the agents. For a claim of a
//! `WaitForFirstConsumer` class, the binder writes the node its first pod runs on
//! (`volume.kubernetes.io/selected-node`); that node's agent, which the node authorizer lets
//! follow exactly such claims:
//! - makes the volume with the same request the server would make ([`create_request`]) and
//!   creates its PersistentVolume ([`new_volume`]), pinned to the node and pre-bound to the
//!   claim; the server's binder completes the binding;
//! - answers the attachments of its volumes to itself (a check that the directory is there,
//!   and where it is), as the server's attacher does for its own providers;
//! - deletes the directory of a Released volume whose policy is Delete, then its object;
//! - takes the snapshots of its volumes, and restores and clones claims placed on it from
//!   snapshots and volumes on its disk (`node::snapshots`);
//! - publishes its disk's room per class as CSIStorageCapacity (`node::capacity`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use serde_json::{Value, json};
use stowage_provider::{
    AccessMode, AttachRequest, ClaimRef, DeleteVolumeRequest, ErrorKind, NodeInfo, Provider,
};

use crate::cli::client::{Client, exit};
use crate::controllers::provisioner::{create_request, new_volume};
use crate::resources::names::annotations::{PROVISIONED_BY, STORAGE_PROVISIONER};
use crate::resources::names::finalizers::PROVISIONED_VOLUME;

pub struct LocalProvisioner {
    pub(super) client: Client,
    pub(super) node: String,
    pub(super) provider: Arc<dyn Provider>,
    /// The CSIStorageCapacity objects this node published (see `node::capacity`).
    pub(super) published: tokio::sync::Mutex<super::capacity::Published>,
    /// What restores and clones on this node copy from now (see `node::snapshots`).
    pub(super) copying: super::snapshots::Copying,
}

/// What one provisioning pass left: problems to report, and whether copies (snapshots,
/// restores, clones) are still under way, so that the agent comes back soon.
#[derive(Default)]
pub struct PassOutcome {
    pub problems: Vec<String>,
    pub busy: bool,
}

impl LocalProvisioner {
    /// The local provider on `root` (holding at most `capacity`, e.g. `100Gi`; default: the
    /// filesystem's size), for `node`.
    pub fn open(
        client: Client,
        node: &str,
        root: PathBuf,
        capacity: Option<String>,
    ) -> Result<LocalProvisioner, String> {
        let config = stowage_provider_local::Config {
            root: Some(root.clone()),
            node: Some(node.to_string()),
            capacity,
        };
        let provider = stowage_provider_local::LocalProvider::open(&config, &root)?;
        Ok(LocalProvisioner {
            client,
            node: node.to_string(),
            provider: Arc::new(provider),
            published: Default::default(),
            copying: Default::default(),
        })
    }

    pub(super) fn name(&self) -> &str {
        self.provider.name()
    }

    /// One round of provisioning, attaching, snapshots, reclaiming and publishing the disk's
    /// room.
    pub async fn pass(&self) -> PassOutcome {
        let mut out = PassOutcome::default();
        let problems = &mut out.problems;
        match self.provision(problems).await {
            Ok(busy) => out.busy |= busy,
            Err(e) => problems.push(format!("provisioning: {e:#}")),
        }
        if let Err(e) = self.attach(problems).await {
            problems.push(format!("attaching: {e:#}"));
        }
        match self.snapshot_pass(problems).await {
            Ok(busy) => out.busy |= busy,
            Err(e) => problems.push(format!("snapshots: {e:#}")),
        }
        if let Err(e) = self.reclaim(problems).await {
            problems.push(format!("reclaiming: {e:#}"));
        }
        if let Err(e) = self.publish_capacity().await {
            problems.push(format!("publishing capacity: {e:#}"));
        }
        out
    }

    pub(super) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.client
            .get(path)
            .await
            .map_err(|e| anyhow::anyhow!(e.message))
    }

    async fn node_labels(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let node = self.get(&format!("/api/v1/nodes/{}", self.node)).await?;
        Ok(serde_json::from_value(node["metadata"]["labels"].clone()).unwrap_or_default())
    }

    /// Provisions the claims placed on this node; whether a copy into one is under way.
    async fn provision(&self, problems: &mut Vec<String>) -> anyhow::Result<bool> {
        let mut busy = false;
        let claims = self.get("/api/v1/persistentvolumeclaims").await?;
        let mut labels = None;
        for item in claims["items"].as_array().into_iter().flatten() {
            let Ok(claim) = serde_json::from_value::<PersistentVolumeClaim>(item.clone()) else {
                continue;
            };
            let meta = &claim.metadata;
            let ours = meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(STORAGE_PROVISIONER))
                .is_some_and(|p| p == self.name());
            let unbound = claim
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .unwrap_or_default()
                .is_empty();
            if !ours || !unbound || meta.deletion_timestamp.is_some() {
                continue;
            }
            let (Some(ns), Some(claim_name), Some(uid)) =
                (meta.namespace.clone(), meta.name.clone(), meta.uid.clone())
            else {
                continue;
            };
            // Node-local providers keep no mutable attributes: a claim naming a
            // VolumeAttributesClass is refused here as the server's provisioner refuses it.
            if let Some(vac) = claim
                .spec
                .as_ref()
                .and_then(|s| s.volume_attributes_class_name.as_deref())
                .filter(|n| !n.is_empty())
            {
                problems.push(format!(
                    "claim {ns}/{claim_name} names volumeattributesclass {vac:?}, and {} cannot set or modify volume attributes",
                    self.name()
                ));
                continue;
            }
            // Restores and clones copy from a snapshot or volume on this node's disk.
            let name = format!("pvc-{uid}");
            // A copy under way goes on from where it started.
            let started = self.copying.source_of(&name);
            let source = match started {
                Some(source) => Some(source),
                None => match self.data_source(&claim, &ns, &name).await {
                    Ok(source) => source,
                    Err(why) => {
                        problems.push(format!("claim {ns}/{claim_name}: {why}"));
                        continue;
                    }
                },
            };
            let class_name = claim
                .spec
                .as_ref()
                .and_then(|s| s.storage_class_name.clone())
                .unwrap_or_default();
            let class: StorageClass = serde_json::from_value(
                self.get(&format!(
                    "/apis/storage.k8s.io/v1/storageclasses/{class_name}"
                ))
                .await?,
            )?;
            let labels = match &labels {
                Some(l) => l,
                None => labels.insert(self.node_labels().await?),
            };
            let claim_ref = ClaimRef {
                namespace: ns.clone(),
                name: claim_name.clone(),
                uid: uid.clone(),
                annotations: meta.annotations.clone().unwrap_or_default(),
            };
            let request = create_request(
                &claim,
                &claim_ref,
                &name,
                &class,
                Some((self.node.as_str(), labels)),
                source.as_ref().map(|(content, _)| content.clone()),
                Default::default(),
            );
            if let Some((content, from)) = &source {
                self.copying.start(&name, from, content);
            }
            let made = self.provider.create_volume(&request).await;
            if !matches!(&made, Err(e) if e.kind == ErrorKind::InProgress) {
                self.copying.finish(&name);
            }
            let volume = match made {
                Ok(v) => v,
                Err(e) if e.kind == ErrorKind::InProgress => {
                    tracing::info!(volume = %name, claim = %format!("{ns}/{claim_name}"), "{e}");
                    busy = true;
                    continue;
                }
                Err(e) => {
                    problems.push(format!(
                        "provisioning volume {name} for claim {ns}/{claim_name}: {e}"
                    ));
                    continue;
                }
            };
            let mut pv = new_volume(&claim, &class, self.name(), &name, &volume);
            if let Some(spec) = pv.spec.as_mut() {
                // Pre-bound: the binder finishes the binding on both sides.
                spec.claim_ref = Some(ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("PersistentVolumeClaim".into()),
                    namespace: Some(ns.clone()),
                    name: Some(claim_name.clone()),
                    uid: Some(uid.clone()),
                    ..Default::default()
                });
            }
            let mut body = serde_json::to_value(&pv)?;
            body["apiVersion"] = json!("v1");
            body["kind"] = json!("PersistentVolume");
            match self.client.post("/api/v1/persistentvolumes", &body).await {
                Ok(_) => {
                    tracing::info!(volume = %name, claim = %format!("{ns}/{claim_name}"), "provisioned on this node")
                }
                Err(e) if e.code == exit::CONFLICT => {}
                Err(e) => problems.push(format!("recording volume {name}: {}", e.message)),
            }
        }
        Ok(busy)
    }

    async fn attach(&self, problems: &mut Vec<String>) -> anyhow::Result<()> {
        let attachments = self
            .get("/apis/storage.k8s.io/v1/volumeattachments")
            .await?;
        for va in attachments["items"].as_array().into_iter().flatten() {
            if va["spec"]["attacher"] != self.name()
                || va["spec"]["nodeName"] != self.node.as_str()
                || va["status"]["attached"] == true
                || !va["metadata"]["deletionTimestamp"].is_null()
            {
                continue;
            }
            let (Some(va_name), Some(pv_name)) = (
                va["metadata"]["name"].as_str(),
                va["spec"]["source"]["persistentVolumeName"].as_str(),
            ) else {
                continue;
            };
            let pv = self
                .get(&format!("/api/v1/persistentvolumes/{pv_name}"))
                .await?;
            let csi = &pv["spec"]["csi"];
            let strings = |v: &Value| -> Vec<String> {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            };
            let req = AttachRequest {
                handle: csi["volumeHandle"].as_str().unwrap_or_default().to_string(),
                attributes: serde_json::from_value(csi["volumeAttributes"].clone())
                    .unwrap_or_default(),
                node: NodeInfo {
                    name: self.node.clone(),
                    labels: self.node_labels().await?,
                    provider_id: None,
                    max_attachments: None,
                },
                read_only: false,
                access_modes: strings(&pv["spec"]["accessModes"])
                    .iter()
                    .filter_map(|m| AccessMode::parse(m))
                    .collect(),
                mount_options: strings(&pv["spec"]["mountOptions"]),
                fs_type: csi["fsType"].as_str().map(str::to_string),
            };
            let status = match self.provider.attach(&req).await {
                Ok(info) => {
                    json!({"status": {"attached": true, "attachmentMetadata": info, "attachError": null}})
                }
                Err(e) => {
                    problems.push(format!("attaching volume {pv_name}: {e}"));
                    json!({"status": {"attached": false, "attachError": {
                        "message": e.to_string(),
                        "time": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                    }}})
                }
            };
            self.client
                .patch(
                    &format!("/apis/storage.k8s.io/v1/volumeattachments/{va_name}/status"),
                    "application/merge-patch+json",
                    &status,
                )
                .await
                .map_err(|e| anyhow::anyhow!(e.message))?;
        }
        Ok(())
    }

    async fn reclaim(&self, problems: &mut Vec<String>) -> anyhow::Result<()> {
        let volumes = self.get("/api/v1/persistentvolumes").await?;
        for pv in volumes["items"].as_array().into_iter().flatten() {
            let ours = pv["metadata"]["annotations"][PROVISIONED_BY] == self.name();
            let released = pv["status"]["phase"] == "Released"
                && pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete";
            let Some(name) = pv["metadata"]["name"].as_str() else {
                continue;
            };
            if !ours || !released {
                continue;
            }
            let csi = &pv["spec"]["csi"];
            if csi["volumeHandle"]
                .as_str()
                .is_some_and(|h| self.copying.holds(h))
            {
                // A clone on this node still copies from it: deleted once that is done.
                continue;
            }
            let req = DeleteVolumeRequest {
                handle: csi["volumeHandle"].as_str().unwrap_or_default().to_string(),
                attributes: serde_json::from_value(csi["volumeAttributes"].clone())
                    .unwrap_or_default(),
            };
            if let Err(e) = self.provider.delete_volume(&req).await {
                problems.push(format!("deleting volume {name}: {e}"));
                continue;
            }
            // The directory is gone: drop the finalizer that guarded it, then the object.
            let finalizers: Vec<Value> = pv["metadata"]["finalizers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|f| *f != PROVISIONED_VOLUME)
                .cloned()
                .collect();
            let path = format!("/api/v1/persistentvolumes/{name}");
            self.client
                .patch(
                    &path,
                    "application/merge-patch+json",
                    &json!({"metadata": {"finalizers": finalizers, "resourceVersion": pv["metadata"]["resourceVersion"]}}),
                )
                .await
                .map_err(|e| anyhow::anyhow!(e.message))?;
            match self.client.delete(&path).await {
                Ok(_) => tracing::info!(volume = name, "deleted with its directory"),
                Err(e) if e.code == exit::NOT_FOUND || e.code == exit::FORBIDDEN => {}
                Err(e) => problems.push(format!("deleting volume object {name}: {}", e.message)),
            }
        }
        Ok(())
    }
}
