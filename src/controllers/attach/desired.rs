//! The desired-state side: which (volume, node) pairs need a VolumeAttachment, and the safety
//! rules for creating and deleting them.
//!
//! A pair is wanted while a scheduled pod that is not terminated uses a claim bound to the
//! volume on that node. The controller creates the VolumeAttachment (named from driver,
//! handle and node) unless that would put a single-node volume on a second node
//! (`MultiAttachRefused`), break the volume's node affinity (`VolumeNodeAffinityConflict`), or
//! exceed the node's attachment limit (`AttachLimitReached`); each refusal is an event on the
//! pods concerned and the pair waits for the change that lifts it. An attachment no longer
//! wanted is deleted only when safe: the node does not report the volume in use, or the node
//! carries the out-of-service taint (at once), or it has been unhealthy for
//! `max_wait_for_unmount` (forced). A healthy node is never force-detached.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::storage::v1::{VolumeAttachmentSource, VolumeAttachmentSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use parking_lot::Mutex;

use super::*;
use crate::controllers::Context;
use crate::error::ApiError;
use crate::registry::{DeletePreconditions, WriteOptions};
use crate::resources::Subresource;
use crate::resources::names::annotations;
use crate::resources::{
    AnyObject, Kind, Node, PersistentVolume, PersistentVolumeClaim, Pod, VolumeAttachment,
    node as node_rules, pod, pvc,
};
use crate::runtime::Error;
use crate::runtime::{Action, FewSet, Reconciler};
use crate::store::{ObjectKey, Stored, WatchEvent};

pub const COMPONENT: &str = "attachdetach-controller";

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pair {
    pub volume: String,
    pub node: String,
}

#[derive(Default)]
struct Index {
    /// Bound claims: claim → volume.
    volume_of_claim: HashMap<ObjectKey, String>,
    /// Pods: pod → (node, claim names).
    pods: HashMap<ObjectKey, (Option<String>, Vec<String>)>,
    pods_of_claim: HashMap<ObjectKey, FewSet<String>>,
    pods_of_node: HashMap<String, BTreeSet<ObjectKey>>,
    /// VolumeAttachments: name → pair.
    attachments: HashMap<String, Pair>,
    nodes_of_volume: HashMap<String, FewSet<String>>,
    volumes_of_node: HashMap<String, BTreeSet<String>>,
}

impl Index {
    fn remove_pod(&mut self, key: &ObjectKey) {
        if let Some((node, claims)) = self.pods.remove(key) {
            for c in claims {
                let ck = ObjectKey::new(key.namespace.clone(), c);
                if let Some(s) = self.pods_of_claim.get_mut(&ck) {
                    s.remove(key.name.as_str());
                    if s.is_empty() {
                        self.pods_of_claim.remove(&ck);
                    }
                }
            }
            if let Some(n) = node
                && let Some(s) = self.pods_of_node.get_mut(&n)
            {
                s.remove(key);
            }
        }
    }

    fn remove_attachment(&mut self, name: &str) {
        if let Some(p) = self.attachments.remove(name) {
            if let Some(s) = self.nodes_of_volume.get_mut(&p.volume) {
                s.remove(&p.node);
                if s.is_empty() {
                    self.nodes_of_volume.remove(&p.volume);
                }
            }
            if let Some(s) = self.volumes_of_node.get_mut(&p.node) {
                s.remove(&p.volume);
            }
        }
    }

    /// The pairs the pods on `node` need.
    fn pairs_on_node(&self, node: &str) -> Vec<Pair> {
        let mut out = Vec::new();
        for pod in self.pods_of_node.get(node).into_iter().flatten() {
            if let Some((_, claims)) = self.pods.get(pod) {
                for c in claims {
                    if let Some(v) = self
                        .volume_of_claim
                        .get(&ObjectKey::new(pod.namespace.clone(), c.clone()))
                    {
                        out.push(Pair {
                            volume: v.clone(),
                            node: node.to_string(),
                        });
                    }
                }
            }
        }
        out.extend(
            self.volumes_of_node
                .get(node)
                .into_iter()
                .flatten()
                .map(|v| Pair {
                    volume: v.clone(),
                    node: node.to_string(),
                }),
        );
        out
    }

    /// The pairs a claim's pods need.
    fn pairs_of_claim(&self, claim: &ObjectKey) -> Vec<Pair> {
        let Some(volume) = self.volume_of_claim.get(claim) else {
            return Vec::new();
        };
        self.pods_of_claim
            .get(claim)
            .into_iter()
            .flatten()
            .filter_map(|p| {
                self.pods
                    .get(&ObjectKey::new(claim.namespace.clone(), p.clone()))
            })
            .filter_map(|(n, _)| n.clone())
            .map(|node| Pair {
                volume: volume.clone(),
                node,
            })
            .collect()
    }
}

pub struct AttachDetach {
    ctx: Arc<Context>,
    max_wait_for_unmount: Duration,
    index: Mutex<Index>,
}

fn csi_of(v: &PersistentVolume) -> Option<(String, String)> {
    let csi = v.spec.as_ref()?.csi.as_ref()?;
    Some((csi.driver.clone(), csi.volume_handle.clone()))
}

/// Whether a volume may be attached to one node only (no ReadOnlyMany or ReadWriteMany).
fn single_node(v: &PersistentVolume) -> bool {
    !v.spec
        .as_ref()
        .and_then(|s| s.access_modes.as_ref())
        .is_some_and(|m| {
            m.iter()
                .any(|m| m == "ReadWriteMany" || m == "ReadOnlyMany")
        })
}

impl AttachDetach {
    pub fn new(ctx: Arc<Context>, max_wait_for_unmount: Duration) -> Self {
        AttachDetach {
            ctx,
            max_wait_for_unmount,
            index: Mutex::new(Index::default()),
        }
    }

    /// The live pods on `node` that use the claim bound to `volume`.
    fn consumers(&self, volume: &PersistentVolume, node: &str) -> Vec<Arc<Stored>> {
        let Some(r) = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
            return Vec::new();
        };
        let key = ObjectKey::new(
            r.namespace.clone().unwrap_or_default(),
            r.name.clone().unwrap_or_default(),
        );
        let Some(claim) = self
            .ctx
            .store
            .get_typed::<PersistentVolumeClaim>(&key.namespace, &key.name)
        else {
            return Vec::new();
        };
        let c: &PersistentVolumeClaim = &claim.typed();
        let bound_here = pvc::is_bound(c)
            && c.metadata.uid == r.uid
            && c.spec.as_ref().and_then(|s| s.volume_name.as_deref())
                == volume.metadata.name.as_deref();
        if !bound_here {
            return Vec::new();
        }
        let names: Vec<String> = self
            .index
            .lock()
            .pods_of_claim
            .get(&key)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        names
            .iter()
            .filter_map(|n| self.ctx.store.get_typed::<Pod>(&key.namespace, n))
            .filter(|s| {
                let p: &Pod = &s.typed();
                pod::node_name(p) == Some(node)
                    && !pod::is_terminated(p)
                    && p.metadata.deletion_timestamp.is_none()
            })
            .collect()
    }

    fn tell_pods(&self, pods: &[Arc<Stored>], reason: &'static str, message: &str) {
        for p in pods {
            self.ctx
                .recorder
                .warning(COMPONENT, &p.object(), reason, message.to_string());
        }
    }

    /// Explains a multi-attach refusal without naming pods of other namespaces.
    fn multi_attach_message(
        &self,
        volume: &str,
        pods: &[Arc<Stored>],
        other_nodes: &BTreeSet<String>,
    ) -> String {
        let namespace = pods
            .first()
            .map(|p| p.key.namespace.clone())
            .unwrap_or_default();
        let mut same_ns = Vec::new();
        let mut elsewhere = 0;
        let index = self.index.lock();
        for node in other_nodes {
            for s in index.pods_of_node.get(node).into_iter().flatten() {
                let uses = index.pods.get(s).is_some_and(|(_, claims)| {
                    claims.iter().any(|c| {
                        index
                            .volume_of_claim
                            .get(&ObjectKey::new(s.namespace.clone(), c.clone()))
                            .is_some_and(|v| v == volume)
                    })
                });
                if !uses {
                    continue;
                }
                if s.namespace == namespace {
                    same_ns.push(s.name.clone());
                } else {
                    elsewhere += 1;
                }
            }
        }
        drop(index);
        let mut msg = format!(
            "Multi-Attach error for volume \"{volume}\": the volume is already exclusively attached to another node and can't be attached to this one"
        );
        if !same_ns.is_empty() {
            msg.push_str(&format!("; it is used by pod(s) {}", same_ns.join(", ")));
        }
        if elsewhere > 0 {
            msg.push_str(&format!(
                "; it is used by {elsewhere} pod(s) in other namespaces"
            ));
        }
        msg
    }

    async fn create_attachment(
        &self,
        name: &str,
        driver: &str,
        handle: &str,
        pair: &Pair,
    ) -> Result<(), ApiError> {
        let va = VolumeAttachment {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                annotations: Some(BTreeMap::from([(
                    annotations::VOLUME_HANDLE.to_string(),
                    handle.to_string(),
                )])),
                ..Default::default()
            },
            spec: VolumeAttachmentSpec {
                attacher: driver.to_string(),
                node_name: pair.node.clone(),
                source: VolumeAttachmentSource {
                    persistent_volume_name: Some(pair.volume.clone()),
                    inline_volume_spec: None,
                },
            },
            status: None,
        };
        match self
            .ctx
            .registry
            .create("", va, &WriteOptions::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_already_exists() => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn remove_attachment(&self, va: &Arc<Stored>, force: bool) -> Result<(), ApiError> {
        if force {
            let mut v: VolumeAttachment = va.typed::<VolumeAttachment>().clone();
            v.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(annotations::FORCE_DETACH.to_string(), "true".to_string());
            self.ctx
                .registry
                .write(vec![crate::registry::Write::update(
                    v,
                    va.rv,
                    Subresource::Main,
                )])
                .await?;
        }
        match self
            .ctx
            .registry
            .delete::<VolumeAttachment>(
                "",
                &va.key.name,
                &DeletePreconditions::default(),
                &WriteOptions::default(),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn sync(&self, pair: &Pair) -> Result<Action, Error> {
        let volume = self
            .ctx
            .store
            .get_typed::<PersistentVolume>("", &pair.volume);
        let v: Option<PersistentVolume> = volume.as_ref().map(|s| s.typed());
        let v = v.as_ref();
        let csi = v.and_then(csi_of);
        let existing: Vec<Arc<Stored>> = {
            let index = self.index.lock();
            index
                .attachments
                .iter()
                .filter(|(_, p)| *p == pair)
                .map(|(n, _)| n.clone())
                .collect::<Vec<_>>()
        }
        .iter()
        .filter_map(|n| self.ctx.store.get_typed::<VolumeAttachment>("", n))
        .collect();
        let consumers = v.map(|v| self.consumers(v, &pair.node)).unwrap_or_default();

        if let (Some(v), Some((driver, handle)), false) = (v, csi.as_ref(), consumers.is_empty()) {
            let name = attachment_name(driver, handle, &pair.node);
            if existing.iter().any(|s| s.key.name == name) {
                // Exists (or is still detaching from an earlier pod: its deletion wakes us).
                return Ok(Action::await_change());
            }
            if single_node(v) {
                let others: BTreeSet<String> = self
                    .index
                    .lock()
                    .nodes_of_volume
                    .get(&pair.volume)
                    .map(|s| s.iter().filter(|n| **n != pair.node).cloned().collect())
                    .unwrap_or_default();
                if !others.is_empty() {
                    let msg = self.multi_attach_message(&pair.volume, &consumers, &others);
                    self.tell_pods(&consumers, "MultiAttachRefused", &msg);
                    return Ok(Action::await_change());
                }
            }
            let node_obj = self.ctx.store.get_typed::<Node>("", &pair.node);
            let node = node_obj.as_ref().map(|s| s.typed::<Node>());
            let node = node.as_ref();
            if let Some(affinity) = v
                .spec
                .as_ref()
                .and_then(|s| s.node_affinity.as_ref())
                .and_then(|a| a.required.as_ref())
            {
                let labels = node_rules::labels_for(&pair.node, node);
                if !node_rules::selector_admits(affinity, &pair.node, &labels) {
                    self.tell_pods(
                        &consumers,
                        "VolumeNodeAffinityConflict",
                        &format!(
                            "volume \"{}\" cannot be used on node \"{}\": its node affinity does not match the node (a local volume lives on one node)",
                            pair.volume, pair.node
                        ),
                    );
                    return Ok(Action::await_change());
                }
            }
            let limit = node_limit(node, driver).or_else(|| {
                self.ctx
                    .providers
                    .get(driver)
                    .and_then(|p| p.capabilities().max_attachments_per_node)
            });
            if let Some(limit) = limit {
                let on_node = self
                    .index
                    .lock()
                    .volumes_of_node
                    .get(&pair.node)
                    .map(|vols| {
                        vols.iter()
                            .filter(|v| {
                                self.ctx
                                    .store
                                    .get_typed::<PersistentVolume>("", v)
                                    .and_then(|s| csi_of(&s.typed()))
                                    .is_some_and(|(d, _)| &d == driver)
                            })
                            .count()
                    })
                    .unwrap_or(0) as u32;
                if on_node >= limit {
                    self.tell_pods(
                        &consumers,
                        "AttachLimitReached",
                        &format!(
                            "node \"{}\" has {on_node} volumes of {driver} attached, its limit; volume \"{}\" waits until one is detached",
                            pair.node, pair.volume
                        ),
                    );
                    return Ok(Action::await_change());
                }
            }
            self.create_attachment(&name, driver, handle, pair).await?;
            return Ok(Action::await_change());
        }

        // Not wanted here (any more): detach when it is safe.
        let mut next = Action::await_change();
        for va in existing {
            let att: &VolumeAttachment = &va.typed();
            if att.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let handle = att
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(annotations::VOLUME_HANDLE).cloned())
                .or_else(|| csi.as_ref().map(|(_, h)| h.clone()))
                .unwrap_or_default();
            // Only attachments this controller would have made (named from driver, handle and
            // node) are its to remove; others belong to whoever created them.
            if va.key.name != attachment_name(&att.spec.attacher, &handle, &pair.node) {
                continue;
            }
            let unique = unique_volume_name(&att.spec.attacher, &handle);
            let node_obj = self.ctx.store.get_typed::<Node>("", &pair.node);
            let Some(node) = node_obj.as_ref().map(|s| s.typed::<Node>()) else {
                // No Node object: nothing reports the volume in use.
                self.remove_attachment(&va, false).await?;
                continue;
            };
            if out_of_service(&node) {
                self.remove_attachment(&va, true).await?;
            } else if !in_use(&node, &unique) {
                self.remove_attachment(&va, false).await?;
            } else if let Some(since) = unhealthy_since(&node, self.ctx.clock.now()) {
                let left = self.ctx.clock.remaining(since, self.max_wait_for_unmount);
                if left.is_zero() {
                    tracing::warn!(
                        volume = pair.volume,
                        node = pair.node,
                        "force-detaching from a node unhealthy for longer than max-wait-for-unmount"
                    );
                    self.ctx.recorder.warning(
                        COMPONENT,
                        &va.object(),
                        "ForceDetach",
                        format!(
                            "node \"{}\" has been unhealthy for more than {:?} with the volume in use: detaching by force",
                            pair.node, self.max_wait_for_unmount
                        ),
                    );
                    self.remove_attachment(&va, true).await?;
                } else {
                    next = Action::requeue(left + Duration::from_millis(50));
                }
            }
            // A healthy node using the volume keeps it: its volumesInUse changing wakes us.
        }
        Ok(next)
    }
}

#[async_trait::async_trait]
impl Reconciler for AttachDetach {
    type Key = Pair;

    fn name(&self) -> &'static str {
        "attachdetach"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[
            Kind::Pod,
            Kind::PersistentVolumeClaim,
            Kind::PersistentVolume,
            Kind::VolumeAttachment,
            Kind::Node,
        ]
    }

    fn reset(&self) {
        *self.index.lock() = Index::default();
    }

    fn observe(&self, object: &Arc<Stored>, deleted: bool) {
        let mut index = self.index.lock();
        let key = &object.key;
        match &*object.decoded() {
            AnyObject::Pod(p) => {
                index.remove_pod(key);
                if !deleted {
                    let node = pod::node_name(p).map(str::to_string);
                    let claims: Vec<String> = pod::claim_names(p).map(str::to_string).collect();
                    for c in &claims {
                        index
                            .pods_of_claim
                            .entry(ObjectKey::new(key.namespace.clone(), c.clone()))
                            .or_default()
                            .insert(key.name.to_string());
                    }
                    if let Some(n) = &node {
                        index
                            .pods_of_node
                            .entry(n.clone())
                            .or_default()
                            .insert(key.clone());
                    }
                    index.pods.insert(key.clone(), (node, claims));
                }
            }
            AnyObject::PersistentVolumeClaim(c) => {
                let volume = c
                    .spec
                    .as_ref()
                    .and_then(|s| s.volume_name.clone())
                    .filter(|v| !v.is_empty());
                match volume {
                    Some(v) if !deleted => {
                        index.volume_of_claim.insert(key.clone(), v);
                    }
                    _ => {
                        index.volume_of_claim.remove(key);
                    }
                }
            }
            AnyObject::VolumeAttachment(va) => {
                index.remove_attachment(&key.name);
                if !deleted && let Some(v) = va.spec.source.persistent_volume_name.clone() {
                    let pair = Pair {
                        volume: v.clone(),
                        node: va.spec.node_name.clone(),
                    };
                    index
                        .nodes_of_volume
                        .entry(v.clone())
                        .or_default()
                        .insert(pair.node.clone());
                    index
                        .volumes_of_node
                        .entry(pair.node.clone())
                        .or_default()
                        .insert(v);
                    index.attachments.insert(key.name.to_string(), pair);
                }
            }
            _ => {}
        }
    }

    fn keys_for(&self, event: &WatchEvent) -> Vec<Pair> {
        let index = self.index.lock();
        let mut keys = Vec::new();
        let pod_pairs = |obj: &Stored, index: &Index, keys: &mut Vec<Pair>| {
            if let AnyObject::Pod(p) = &*obj.decoded()
                && let Some(node) = pod::node_name(p)
            {
                for c in pod::claim_names(p) {
                    if let Some(v) = index
                        .volume_of_claim
                        .get(&ObjectKey::new(obj.key.namespace.clone(), c))
                    {
                        keys.push(Pair {
                            volume: v.clone(),
                            node: node.to_string(),
                        });
                    }
                }
            }
        };
        match &*event.object.decoded() {
            AnyObject::Pod(_) => {
                pod_pairs(&event.object, &index, &mut keys);
                if let Some(prev) = &event.prev {
                    pod_pairs(prev, &index, &mut keys);
                }
            }
            AnyObject::PersistentVolumeClaim(_) => {
                keys.extend(index.pairs_of_claim(&event.object.key))
            }
            AnyObject::PersistentVolume(v) => {
                if let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
                    let claim = ObjectKey::new(
                        r.namespace.clone().unwrap_or_default(),
                        r.name.clone().unwrap_or_default(),
                    );
                    keys.extend(index.pairs_of_claim(&claim));
                }
                keys.extend(
                    index
                        .nodes_of_volume
                        .get(event.object.key.name.as_str())
                        .into_iter()
                        .flatten()
                        .map(|n| Pair {
                            volume: event.object.key.name.to_string(),
                            node: n.clone(),
                        }),
                );
            }
            AnyObject::VolumeAttachment(va) => {
                if let Some(v) = va.spec.source.persistent_volume_name.clone() {
                    keys.push(Pair {
                        volume: v.clone(),
                        node: va.spec.node_name.clone(),
                    });
                    if event.type_ == crate::store::EventType::Deleted {
                        // Pairs waiting on this one: the volume on other nodes (multi-attach),
                        // other volumes on this node (attachment limit).
                        if let Some(claim) = index
                            .volume_of_claim
                            .iter()
                            .find(|(_, vol)| **vol == v)
                            .map(|(c, _)| c.clone())
                        {
                            keys.extend(index.pairs_of_claim(&claim));
                        }
                        keys.extend(index.pairs_on_node(&va.spec.node_name));
                    }
                }
            }
            AnyObject::Node(_) => keys.extend(index.pairs_on_node(&event.object.key.name)),
            _ => {}
        }
        keys.sort();
        keys.dedup();
        keys
    }

    fn keys_for_object(&self, object: &Stored) -> Vec<Pair> {
        let index = self.index.lock();
        match &*object.decoded() {
            AnyObject::VolumeAttachment(va) => va
                .spec
                .source
                .persistent_volume_name
                .clone()
                .map(|v| {
                    vec![Pair {
                        volume: v,
                        node: va.spec.node_name.clone(),
                    }]
                })
                .unwrap_or_default(),
            AnyObject::PersistentVolumeClaim(_) => index.pairs_of_claim(&object.key),
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, pair: &Pair) -> Result<Action, Error> {
        // Boxed: the decoded objects it holds across awaits make the future large.
        Box::pin(self.sync(pair)).await
    }
}
