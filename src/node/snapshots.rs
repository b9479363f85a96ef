//! Snapshots of node-local volumes: the agent of the node that holds a volume takes, looks up
//! and deletes its snapshots on its own disk, as a CSI snapshotter does in Kubernetes'
//! distributed snapshotting.
//!
//! The server's snapshot binder makes the VolumeSnapshotContent of a volume pinned to a node
//! (of a provider the server does not run) and labels it
//! `snapshot.storage.kubernetes.io/managed-by: <node>`. The server keeps doing what needs no
//! provider (binding, finalizers, following the VolumeSnapshot, letting retained snapshots
//! go); the node authorizer lets this agent read exactly those contents and record on them
//! what it did, never change what is asked. Each pass here:
//! - takes the snapshot of a dynamic content (`snapshot-<VolumeSnapshot uid>`, idempotent),
//!   marking the content `volumesnapshot-being-created` before the first call, as the server
//!   does, and records its status (`readyToUse` once the copy is done);
//! - looks up the snapshot of a pre-provisioned content (`source.snapshotHandle`);
//! - deletes the snapshot of a content being deleted with `deletionPolicy: Delete`, unless a
//!   restore or clone on this node is still copying from it (for at most
//!   [`SOURCE_PROTECTION_LIMIT`]), then lets the content go.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use serde_json::{Value, json};
use stowage_provider::{ContentSource, ErrorKind, SnapshotRequest};

use super::provision::LocalProvisioner;
use crate::cli::client::exit;
use crate::controllers::provisioner::restore;
use crate::controllers::snapshots::contents::BEING_CREATED;
use crate::controllers::snapshots::{
    SOURCE_PROTECTION_LIMIT, error_now, nanos_of, provider_snapshot_name,
};
use crate::resources::names::finalizers::CONTENT_BOUND;
use crate::resources::names::labels::SNAPSHOT_MANAGED_BY;
use crate::resources::pvc;
use crate::resources::volumesnapshot;
use crate::resources::volumesnapshotcontent::{VolumeSnapshotContent, VolumeSnapshotContentStatus};

const CONTENTS: &str = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents";

/// The restores and clones under way on this node, by the volume being filled: what they copy
/// from (a snapshot id or volume handle, and the provider's source), and since when. Such a
/// source is not deleted under them, and a copy under way goes on from the source it started
/// with even if the objects that named it change or go.
#[derive(Default)]
pub struct Copying(parking_lot::Mutex<HashMap<String, (String, ContentSource, Instant)>>);

impl Copying {
    pub fn start(&self, into: &str, source: &str, content: &ContentSource) {
        self.0
            .lock()
            .entry(into.to_string())
            .or_insert_with(|| (source.to_string(), content.clone(), Instant::now()));
    }

    pub fn finish(&self, into: &str) {
        self.0.lock().remove(into);
    }

    /// The source a copy into `into` started from, if one is under way.
    pub fn source_of(&self, into: &str) -> Option<(ContentSource, String)> {
        self.0
            .lock()
            .get(into)
            .map(|(id, content, _)| (content.clone(), id.clone()))
    }

    /// Whether `source` is being copied from, within the protection's bound.
    pub fn holds(&self, source: &str) -> bool {
        self.0
            .lock()
            .values()
            .any(|(s, _, since)| s == source && since.elapsed() < SOURCE_PROTECTION_LIMIT)
    }
}

fn has_finalizer(c: &VolumeSnapshotContent) -> bool {
    c.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == CONTENT_BOUND)
}

impl LocalProvisioner {
    /// One round over this node's snapshot contents; whether a copy is still under way.
    pub(super) async fn snapshot_pass(&self, problems: &mut Vec<String>) -> anyhow::Result<bool> {
        let list = self
            .get(&format!(
                "{CONTENTS}?labelSelector={SNAPSHOT_MANAGED_BY}%3D{}",
                self.node
            ))
            .await?;
        let mut busy = false;
        for item in list["items"].as_array().into_iter().flatten() {
            let Ok(c) = serde_json::from_value::<VolumeSnapshotContent>(item.clone()) else {
                continue;
            };
            if c.spec.driver != self.name() {
                if !c.is_ready() && c.metadata.deletion_timestamp.is_none() {
                    let message = format!(
                        "the agent of node {} runs provider {}, not {}: nothing on this node can take this snapshot",
                        self.node,
                        self.name(),
                        c.spec.driver
                    );
                    if let Err(e) = self.fail(&c, &message).await {
                        problems.push(format!(
                            "snapshot content {}: {e:#}",
                            c.metadata.name.as_deref().unwrap_or_default()
                        ));
                    }
                }
                continue;
            }
            let name = c.metadata.name.clone().unwrap_or_default();
            let result = if c.metadata.deletion_timestamp.is_some() {
                if has_finalizer(&c) && !c.retains() {
                    self.delete_snapshot(&c).await.map(|()| false)
                } else {
                    Ok(false)
                }
            } else if has_finalizer(&c) && !c.is_ready() {
                match (&c.spec.source.volume_handle, &c.spec.source.snapshot_handle) {
                    (_, Some(handle)) => self.import(&c, handle).await,
                    (Some(handle), None) => self.take(&c, handle).await,
                    (None, None) => Ok(false),
                }
            } else {
                Ok(false)
            };
            match result {
                Ok(copying) => busy |= copying,
                Err(e) => problems.push(format!("snapshot content {name}: {e:#}")),
            }
        }
        Ok(busy)
    }

    /// Takes (or finds again) a dynamic content's snapshot; whether its copy is under way.
    async fn take(&self, c: &VolumeSnapshotContent, volume_handle: &str) -> anyhow::Result<bool> {
        let Some(uid) = c
            .spec
            .volume_snapshot_ref
            .uid
            .clone()
            .filter(|u| !u.is_empty())
        else {
            return Ok(false);
        };
        let parameters: BTreeMap<String, String> = match &c.spec.volume_snapshot_class_name {
            None => BTreeMap::new(),
            Some(class) => {
                match self
                    .get(&format!(
                        "/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses/{class}"
                    ))
                    .await
                {
                    Ok(v) => serde_json::from_value(v["parameters"].clone()).unwrap_or_default(),
                    Err(_) => {
                        self.fail(c, &format!("volumesnapshotclass \"{class}\" not found"))
                            .await?;
                        return Ok(false);
                    }
                }
            }
        };
        let being_created = c
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(BEING_CREATED));
        if !being_created {
            // Said before the first call, so that a deletion knows there may be a snapshot to
            // delete even if no id was recorded.
            self.patch_content(
                c,
                "",
                json!({"metadata": {"annotations": {BEING_CREATED: "yes"}}}),
            )
            .await?;
        }
        let request = SnapshotRequest {
            name: provider_snapshot_name(&uid),
            source_handle: volume_handle.to_string(),
            source_attributes: BTreeMap::new(),
            parameters,
        };
        let taken = match self.provider.create_snapshot(&request).await {
            Ok(t) => t,
            Err(e) => {
                self.fail(c, &format!("snapshotting volume {volume_handle}: {e}"))
                    .await?;
                return Ok(false);
            }
        };
        let mut status = c.status.clone().unwrap_or_default();
        status.snapshot_handle = Some(taken.id);
        status.ready_to_use = Some(taken.ready);
        status.restore_size = Some(taken.size_bytes);
        status
            .creation_time
            .get_or_insert_with(|| nanos_of(jiff::Timestamp::now()));
        status.error = None;
        self.write_status(c, status).await?;
        Ok(!taken.ready)
    }

    /// Looks up a pre-provisioned content's snapshot on this node's disk.
    async fn import(&self, c: &VolumeSnapshotContent, handle: &str) -> anyhow::Result<bool> {
        let found = match self.provider.snapshot_info(handle).await {
            Ok(found) => found,
            Err(e) => {
                self.fail(c, &format!("looking up snapshot {handle}: {e}"))
                    .await?;
                return Ok(false);
            }
        };
        let mut status = c.status.clone().unwrap_or_default();
        status.snapshot_handle = Some(found.id);
        status.ready_to_use = Some(found.ready);
        status.restore_size = Some(found.size_bytes);
        status
            .creation_time
            .get_or_insert_with(|| nanos_of(jiff::Timestamp::now()));
        status.error = None;
        self.write_status(c, status).await?;
        Ok(!found.ready)
    }

    /// Deletes the snapshot of a content being deleted, then lets the content go.
    async fn delete_snapshot(&self, c: &VolumeSnapshotContent) -> anyhow::Result<()> {
        // Kubernetes keeps a content its live VolumeSnapshot is bound to.
        let (ns, vs) = c.snapshot_ref();
        if let Some(uid) = c
            .spec
            .volume_snapshot_ref
            .uid
            .as_deref()
            .filter(|u| !u.is_empty())
        {
            match self
                .client
                .get(&format!(
                    "/apis/snapshot.storage.k8s.io/v1/namespaces/{ns}/volumesnapshots/{vs}"
                ))
                .await
            {
                Ok(snapshot)
                    if snapshot["metadata"]["uid"] == uid
                        && snapshot["metadata"]["deletionTimestamp"].is_null() =>
                {
                    return Ok(());
                }
                Ok(_) => {}
                // Gone (to a node, what it may not see reads as refused, missing included).
                Err(e) if e.code == exit::NOT_FOUND || e.code == exit::FORBIDDEN => {}
                // Anything else proves nothing: the snapshot stays until the next pass.
                Err(e) => anyhow::bail!("looking up volumesnapshot {ns}/{vs}: {}", e.message),
            }
        }
        let status = c.status.clone().unwrap_or_default();
        let being_created = c
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(BEING_CREATED));
        let id = match (&status.snapshot_handle, &c.spec.source) {
            (Some(id), _) => Some(id.clone()),
            (None, source) if source.snapshot_handle.is_some() => source.snapshot_handle.clone(),
            (None, _) if !being_created => None,
            // Deleted while the first create was in flight: asking again (idempotent by
            // name) finds the snapshot, if it was made, to delete it.
            (None, source) => match (&source.volume_handle, &c.spec.volume_snapshot_ref.uid) {
                (Some(handle), Some(uid)) => match self
                    .provider
                    .create_snapshot(&SnapshotRequest {
                        name: provider_snapshot_name(uid),
                        source_handle: handle.clone(),
                        source_attributes: BTreeMap::new(),
                        parameters: BTreeMap::new(),
                    })
                    .await
                {
                    Ok(taken) => Some(taken.id),
                    Err(e) if e.kind == ErrorKind::NotFound => None,
                    Err(e) => anyhow::bail!("finding the snapshot to delete: {e}"),
                },
                _ => None,
            },
        };
        if let Some(id) = &id {
            if self.copying.holds(id) {
                // A restore or clone on this node reads it: it goes once that is done.
                return Ok(());
            }
            self.provider
                .delete_snapshot(id)
                .await
                .map_err(|e| anyhow::anyhow!("deleting snapshot {id} (will retry): {e}"))?;
        }
        let finalizers: Vec<&String> = c
            .metadata
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != CONTENT_BOUND)
            .collect();
        self.patch_content(
            c,
            "",
            json!({"metadata": {"finalizers": finalizers,
                "resourceVersion": c.metadata.resource_version}}),
        )
        .await?;
        tracing::info!(
            content = c.metadata.name.as_deref().unwrap_or_default(),
            "deleted a snapshot on this node"
        );
        Ok(())
    }

    async fn fail(&self, c: &VolumeSnapshotContent, message: &str) -> anyhow::Result<()> {
        let mut status = c.status.clone().unwrap_or_default();
        status.error = Some(error_now(
            status.error.as_ref(),
            message,
            jiff::Timestamp::now(),
        ));
        self.write_status(c, status).await
    }

    async fn write_status(
        &self,
        c: &VolumeSnapshotContent,
        status: VolumeSnapshotContentStatus,
    ) -> anyhow::Result<()> {
        if c.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let mut body = serde_json::to_value(&status)?;
        if status.error.is_none() {
            // Left out, a merge patch would keep the old error.
            body["error"] = Value::Null;
        }
        self.patch_content(c, "/status", json!({"status": body}))
            .await
    }

    async fn patch_content(
        &self,
        c: &VolumeSnapshotContent,
        sub: &str,
        body: Value,
    ) -> anyhow::Result<()> {
        let name = c.metadata.name.as_deref().unwrap_or_default();
        match self
            .client
            .patch(
                &format!("{CONTENTS}/{name}{sub}"),
                "application/merge-patch+json",
                &body,
            )
            .await
        {
            Ok(_) => Ok(()),
            // Gone or moved on meanwhile: the next pass sees what it is now.
            Err(e) if e.code == exit::NOT_FOUND || e.code == exit::CONFLICT => Ok(()),
            Err(e) => anyhow::bail!("{}", e.message),
        }
    }
}

/// A claim's data source on this node: what the provider copies from, and the source's id (a
/// snapshot id or a volume handle) to protect while it does.
type Restore = Option<(ContentSource, String)>;

impl LocalProvisioner {
    /// Resolves a claim's data source into what the provider copies from, as the server's
    /// provisioner does (same checks, same messages), reading through the API what this node
    /// may read: a snapshot or claim whose data is on another node's disk cannot be read here,
    /// and the claim is told so. `into` is the volume being made (a restore already copying
    /// from a snapshot being deleted goes on).
    pub(super) async fn data_source(
        &self,
        claim: &PersistentVolumeClaim,
        namespace: &str,
        into: &str,
    ) -> Result<Restore, String> {
        let Some((group, kind, name, other_namespace)) = restore::data_source(claim) else {
            return Ok(None);
        };
        if other_namespace.is_some_and(|n| n != namespace) {
            return Err("a data source in another namespace is not supported".into());
        }
        let requested = pvc::request_bytes(claim).unwrap_or(0);
        let mode = |m: Option<&str>| m.unwrap_or("Filesystem").to_string();
        let wanted = mode(claim.spec.as_ref().and_then(|s| s.volume_mode.as_deref()));
        let capabilities = self.provider.capabilities();
        if group.is_empty() && kind == "PersistentVolumeClaim" {
            if !capabilities.clones {
                return Err(format!(
                    "{} cannot make a volume from a claim (a clone)",
                    self.name()
                ));
            }
            let source = self
                .get(&format!(
                    "/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}"
                ))
                .await
                .map_err(|_| {
                    format!(
                        "persistentvolumeclaim \"{name}\" is not found on node {}'s disk: a node-local clone is made on the node that holds its source",
                        self.node
                    )
                })?;
            if !source["metadata"]["deletionTimestamp"].is_null() {
                return Err(format!(
                    "persistentvolumeclaim \"{name}\" is being deleted and cannot be cloned"
                ));
            }
            let volume = source["spec"]["volumeName"].as_str().unwrap_or_default();
            if volume.is_empty() || source["status"]["phase"] != "Bound" {
                return Err(format!("persistentvolumeclaim \"{name}\" is not bound yet"));
            }
            let pv = self
                .get(&format!("/api/v1/persistentvolumes/{volume}"))
                .await
                .map_err(|e| format!("the volume of persistentvolumeclaim \"{name}\": {e}"))?;
            let csi = &pv["spec"]["csi"];
            if csi["driver"] != self.name() {
                return Err(format!(
                    "persistentvolumeclaim \"{name}\" is on provider {}, not on this claim's provisioner {}",
                    csi["driver"].as_str().unwrap_or("none"),
                    self.name()
                ));
            }
            let source_mode = mode(pv["spec"]["volumeMode"].as_str());
            if source_mode != wanted {
                return Err(format!(
                    "persistentvolumeclaim \"{name}\" has volumeMode {source_mode}, this claim {wanted}: a clone keeps its source's mode"
                ));
            }
            let size = pv["spec"]["capacity"]["storage"]
                .as_str()
                .and_then(|q| {
                    crate::machinery::quantity::bytes_of(
                        &k8s_openapi::apimachinery::pkg::api::resource::Quantity(q.to_string()),
                    )
                })
                .unwrap_or(0);
            if requested < size {
                return Err(format!(
                    "the claim requests {requested} bytes, less than the {size} bytes of persistentvolumeclaim \"{name}\": a clone must be at least as large as its source"
                ));
            }
            let handle = csi["volumeHandle"].as_str().unwrap_or_default().to_string();
            return Ok(Some((
                ContentSource::Volume {
                    handle: handle.clone(),
                    attributes: serde_json::from_value(csi["volumeAttributes"].clone())
                        .unwrap_or_default(),
                },
                handle,
            )));
        }
        if group != volumesnapshot::GROUP || kind != volumesnapshot::KIND {
            let what = if group.is_empty() {
                kind
            } else {
                format!("{kind}.{group}")
            };
            return Err(format!(
                "data source {what} \"{name}\" is not supported: claims start from VolumeSnapshots (snapshot.storage.k8s.io) or other PersistentVolumeClaims"
            ));
        }
        if !capabilities.snapshots {
            return Err(format!(
                "{} cannot make a volume from a snapshot",
                self.name()
            ));
        }
        let snapshot = self
            .get(&format!(
                "/apis/snapshot.storage.k8s.io/v1/namespaces/{namespace}/volumesnapshots/{name}"
            ))
            .await
            .map_err(|_| format!("volumesnapshot \"{name}\" not found"))?;
        let content_name = snapshot["status"]["boundVolumeSnapshotContentName"]
            .as_str()
            .unwrap_or_default();
        if snapshot["status"]["readyToUse"] != true || content_name.is_empty() {
            return Err(format!("volumesnapshot \"{name}\" is not ready to use yet"));
        }
        let content: VolumeSnapshotContent = self
            .get(&format!("{CONTENTS}/{content_name}"))
            .await
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or_else(|| {
                format!(
                    "volumesnapshot \"{name}\" is not on node {}'s disk: a node-local restore is made on the node that holds the snapshot",
                    self.node
                )
            })?;
        let Some(id) = content
            .status
            .as_ref()
            .and_then(|s| s.snapshot_handle.clone())
        else {
            return Err(format!("volumesnapshot \"{name}\" is not ready to use yet"));
        };
        if !snapshot["metadata"]["deletionTimestamp"].is_null()
            && self.copying.source_of(into).is_none()
        {
            return Err(format!(
                "volumesnapshot \"{name}\" is being deleted and cannot be restored from"
            ));
        }
        let allowed = content
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(restore::ALLOW_VOLUME_MODE_CHANGE))
            .is_some_and(|v| v == "true");
        if let Some(source_mode) = &content.spec.source_volume_mode
            && *source_mode != wanted
            && !allowed
        {
            return Err(format!(
                "volumesnapshot \"{name}\" is of a {source_mode} volume and this claim asks for {wanted}: changing the mode needs the annotation {}: \"true\" on its VolumeSnapshotContent",
                restore::ALLOW_VOLUME_MODE_CHANGE
            ));
        }
        if content.spec.driver != self.name() {
            return Err(format!(
                "volumesnapshot \"{name}\" belongs to provider {}, not to this claim's provisioner {}",
                content.spec.driver,
                self.name()
            ));
        }
        let restore_size = content
            .status
            .as_ref()
            .and_then(|s| s.restore_size)
            .unwrap_or(0);
        if requested < restore_size {
            return Err(format!(
                "the claim requests {requested} bytes, less than the {restore_size} bytes of volumesnapshot \"{name}\": request at least that much"
            ));
        }
        Ok(Some((
            ContentSource::Snapshot {
                snapshot_id: id.clone(),
            },
            id,
        )))
    }
}
