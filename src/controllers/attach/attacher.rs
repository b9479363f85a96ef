//! The attacher: makes VolumeAttachments true through their provider.
//!
//! For each VolumeAttachment it adds a finalizer, calls the provider's `attach`, and writes
//! `status.attached`, `status.attachmentMetadata` (how to mount) or `status.attachError`. When
//! the attachment is deleted, it calls `detach` (forced if the attachment says so) and only then
//! lets the object go. It keeps `Node.status.volumesAttached` current.
//!
//! After a restart nothing is assumed: every attachment is verified once by calling `attach`
//! again (idempotent), which also repairs an attachment a crash left half-done.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::AttachedVolume;
use k8s_openapi::api::storage::v1::{VolumeAttachmentStatus, VolumeError};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use parking_lot::Mutex;
use stowage_provider::{AccessMode, AttachRequest, DetachRequest, NodeInfo};

use super::*;
use crate::controllers::Context;
use crate::error::ApiError;
use crate::registry::Write;
use crate::resources::Subresource;
use crate::resources::names::{annotations, finalizers};
use crate::resources::{AnyObject, Kind, Node, PersistentVolume, Typed, VolumeAttachment};
use crate::runtime::{Action, Reconciler};
use crate::store::{Stored, WatchEvent};

pub use crate::controllers::Error;

pub const COMPONENT: &str = "attacher";

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    Attachment(String),
    /// Refresh a node's `status.volumesAttached`.
    Node(String),
}

pub struct Attacher {
    ctx: Arc<Context>,
    /// Attachments (by uid) whose attached state this process has confirmed with the provider.
    verified: Mutex<HashSet<String>>,
    /// Attachment names by node, for the node status.
    by_node: Mutex<HashMap<String, HashSet<String>>>,
}

fn has_finalizer(va: &VolumeAttachment) -> bool {
    va.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == finalizers::ATTACHER)
}

fn error_now(message: String) -> VolumeError {
    VolumeError {
        message: Some(stowage_provider::redact::account_identifiers(&message)),
        time: Some(Time(jiff::Timestamp::now())),
        error_code: None,
    }
}

impl Attacher {
    pub fn new(ctx: Arc<Context>) -> Self {
        Attacher {
            ctx,
            verified: Mutex::new(HashSet::new()),
            by_node: Mutex::new(HashMap::new()),
        }
    }

    async fn write(
        &self,
        obj: AnyObject,
        rv: u64,
        sub: Subresource,
    ) -> Result<Arc<Stored>, ApiError> {
        let mut s = self
            .ctx
            .registry
            .write(vec![Write::update_any(obj, rv, sub)])
            .await?;
        Ok(s.remove(0))
    }

    fn node_info(&self, name: &str, driver: &str) -> NodeInfo {
        let obj = self.ctx.store.get_typed::<Node>("", name);
        node_info(
            name,
            obj.as_ref().map(|s| s.typed::<Node>()).as_ref(),
            driver,
        )
    }

    async fn sync_attachment(&self, name: &str) -> Result<Action, Error> {
        let Some(stored) = self.ctx.store.get_typed::<VolumeAttachment>("", name) else {
            return Ok(Action::await_change());
        };
        let va: &VolumeAttachment = &stored.typed();
        let driver = va.spec.attacher.clone();
        let deleting = va.metadata.deletion_timestamp.is_some();
        // Attachments of drivers this server has no provider for are left to an outside
        // attacher, as Kubernetes leaves them to each CSI driver's own.
        let Some(provider) = self.ctx.providers.get(&driver).cloned() else {
            return Ok(Action::await_change());
        };
        let pv_name = va
            .spec
            .source
            .persistent_volume_name
            .clone()
            .unwrap_or_default();
        let pv = self.ctx.store.get_typed::<PersistentVolume>("", &pv_name);
        let spec = pv
            .as_ref()
            .and_then(|s| s.typed::<PersistentVolume>().spec.clone())
            .unwrap_or_default();
        let csi = spec.csi.clone().unwrap_or_default();
        let handle = if csi.volume_handle.is_empty() {
            va.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(annotations::VOLUME_HANDLE).cloned())
                .unwrap_or_default()
        } else {
            csi.volume_handle.clone()
        };
        let attributes = csi.volume_attributes.clone().unwrap_or_default();
        let node = self.node_info(&va.spec.node_name, &driver);

        if deleting {
            if !has_finalizer(va) {
                return Ok(Action::await_change());
            }
            let force = va.metadata.annotations.as_ref().is_some_and(|a| {
                a.get(annotations::FORCE_DETACH).map(String::as_str) == Some("true")
            });
            let req = DetachRequest {
                handle,
                attributes,
                node,
                force,
            };
            if let Err(e) = self
                .ctx
                .call_provider(&driver, "detach", provider.detach(&req))
                .await
            {
                let mut v = va.clone();
                v.status.get_or_insert_with(Default::default).detach_error =
                    Some(error_now(e.to_string()));
                self.write(v.into_any(), stored.rv, Subresource::Status)
                    .await?;
                self.ctx.recorder.warning(
                    COMPONENT,
                    &stored.object(),
                    "FailedDetachVolume",
                    format!(
                        "detaching volume {pv_name} from node {}: {e}",
                        va.spec.node_name
                    ),
                );
                return Err(Error::Provider(e));
            }
            let mut v = va.clone();
            if let Some(f) = v.metadata.finalizers.as_mut() {
                f.retain(|f| f != finalizers::ATTACHER);
            }
            self.write(v.into_any(), stored.rv, Subresource::Main)
                .await?;
            self.verified.lock().remove(&stored.uid());
            return Ok(Action::await_change());
        }

        // Hold the finalizer before touching the provider, so a delete cannot skip the detach.
        let stored = if has_finalizer(va) {
            stored.clone()
        } else {
            let mut v = va.clone();
            v.metadata
                .finalizers
                .get_or_insert_with(Vec::new)
                .push(finalizers::ATTACHER.to_string());
            self.write(v.into_any(), stored.rv, Subresource::Main)
                .await?
        };
        let va: &VolumeAttachment = &stored.typed();
        let attached = va.status.as_ref().is_some_and(|s| s.attached);
        if attached && self.verified.lock().contains(&stored.uid()) {
            return Ok(Action::await_change());
        }
        let req = AttachRequest {
            handle,
            attributes,
            node,
            read_only: false,
            access_modes: spec
                .access_modes
                .iter()
                .flatten()
                .filter_map(|m| AccessMode::parse(m))
                .collect(),
            mount_options: spec.mount_options.clone().unwrap_or_default(),
            fs_type: csi.fs_type.clone(),
        };
        match self
            .ctx
            .call_provider(&driver, "attach", provider.attach(&req))
            .await
        {
            Ok(mut info) => {
                if let Some(fs) = &csi.fs_type {
                    info.entry("fsType".to_string())
                        .or_insert_with(|| fs.clone());
                }
                let status = VolumeAttachmentStatus {
                    attached: true,
                    attachment_metadata: Some(info),
                    attach_error: None,
                    detach_error: None,
                };
                if va.status.as_ref() != Some(&status) {
                    let mut v = va.clone();
                    v.status = Some(status);
                    self.write(v.into_any(), stored.rv, Subresource::Status)
                        .await?;
                }
                self.verified.lock().insert(stored.uid().to_string());
                Ok(Action::await_change())
            }
            Err(e) => {
                let mut v = va.clone();
                let status = v.status.get_or_insert_with(Default::default);
                status.attached = false;
                status.attach_error = Some(error_now(e.to_string()));
                self.write(v.into_any(), stored.rv, Subresource::Status)
                    .await?;
                self.ctx.recorder.warning(
                    COMPONENT,
                    &stored.object(),
                    "FailedAttachVolume",
                    format!(
                        "attaching volume {pv_name} to node {}: {e}",
                        va.spec.node_name
                    ),
                );
                Err(Error::Provider(e))
            }
        }
    }

    /// Writes the node's `status.volumesAttached` from its attached VolumeAttachments.
    async fn sync_node(&self, name: &str) -> Result<Action, Error> {
        let Some(stored) = self.ctx.store.get_typed::<Node>("", name) else {
            return Ok(Action::await_change());
        };
        let names: Vec<String> = self
            .by_node
            .lock()
            .get(name)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let mut attached: Vec<AttachedVolume> = names
            .iter()
            .filter_map(|n| self.ctx.store.get_typed::<VolumeAttachment>("", n))
            .filter_map(|s| {
                let va: &VolumeAttachment = &s.typed();
                let status = va.status.as_ref().filter(|s| s.attached)?;
                let handle = va
                    .metadata
                    .annotations
                    .as_ref()?
                    .get(annotations::VOLUME_HANDLE)?
                    .clone();
                Some(AttachedVolume {
                    name: unique_volume_name(&va.spec.attacher, &handle),
                    device_path: status
                        .attachment_metadata
                        .as_ref()
                        .and_then(|m| m.get("devicePath").or_else(|| m.get("path")).cloned())
                        .unwrap_or_default(),
                })
            })
            .collect();
        attached.sort_by(|a, b| a.name.cmp(&b.name));
        let node: &Node = &stored.typed();
        let current = node
            .status
            .as_ref()
            .and_then(|s| s.volumes_attached.clone())
            .unwrap_or_default();
        if current != attached {
            let mut n = node.clone();
            n.status
                .get_or_insert_with(Default::default)
                .volumes_attached = (!attached.is_empty()).then_some(attached);
            self.write(n.into_any(), stored.rv, Subresource::Status)
                .await?;
        }
        Ok(Action::await_change())
    }
}

#[async_trait::async_trait]
impl Reconciler for Attacher {
    type Key = Key;

    fn name(&self) -> &'static str {
        "attacher"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::VolumeAttachment, Kind::Node]
    }

    fn reset(&self) {
        self.by_node.lock().clear();
    }

    fn observe(&self, object: &Arc<Stored>, deleted: bool) {
        if let AnyObject::VolumeAttachment(va) = &*object.decoded() {
            let mut by_node = self.by_node.lock();
            let set = by_node.entry(va.spec.node_name.clone()).or_default();
            if deleted {
                set.remove(object.key.name.as_str());
            } else {
                set.insert(object.key.name.to_string());
            }
        }
    }

    fn keys_for(&self, event: &WatchEvent) -> Vec<Key> {
        match &*event.object.decoded() {
            AnyObject::VolumeAttachment(va) => {
                let status_changed = event.prev.as_ref().is_none_or(|p| {
                    p.typed::<VolumeAttachment>()
                        .status
                        .as_ref()
                        .map(|s| s.attached)
                        != va.status.as_ref().map(|s| s.attached)
                }) || event.type_ == crate::store::EventType::Deleted;
                let mut keys = vec![Key::Attachment(event.object.key.name.to_string())];
                if status_changed {
                    keys.push(Key::Node(va.spec.node_name.clone()));
                }
                keys
            }
            // A node (re)appearing gets its volumesAttached written.
            AnyObject::Node(_) if event.type_ == crate::store::EventType::Added => {
                vec![Key::Node(event.object.key.name.to_string())]
            }
            _ => Vec::new(),
        }
    }

    fn keys_for_object(&self, object: &Stored) -> Vec<Key> {
        match object.kind {
            Kind::VolumeAttachment => vec![Key::Attachment(object.key.name.to_string())],
            Kind::Node => vec![Key::Node(object.key.name.to_string())],
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &Key) -> Result<Action, Error> {
        match key {
            Key::Attachment(n) => self.sync_attachment(n).await,
            Key::Node(n) => self.sync_node(n).await,
        }
    }
}
