//! Claim sync: find a claim its volume, or hand it to a provisioner, or mark it Lost.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;

use super::index::Needs;
use super::{Binder, COMPONENT, live_pods, update};
use crate::error::ApiError;
use crate::resources::names::annotations::*;
use crate::resources::storageclass::is_wait_for_first_consumer;
use crate::resources::{
    PersistentVolume, PersistentVolumeClaim, Pod, StorageClass, node, pod, pvc,
};
use crate::runtime::Action;
use crate::runtime::Error;
use crate::store::{ObjectKey, Stored};

/// Retry soon after losing a race for a volume.
const AFTER_CONFLICT: std::time::Duration = std::time::Duration::from_millis(5);

impl Binder {
    pub(super) async fn sync_claim(&self, key: &ObjectKey) -> Result<Action, Error> {
        let Some(claim) = self
            .ctx
            .store
            .get_typed::<PersistentVolumeClaim>(&key.namespace, &key.name)
        else {
            return Ok(Action::await_change());
        };
        let c: &PersistentVolumeClaim = &claim.decoded_as();
        if c.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        let volume_name = c
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .filter(|v| !v.is_empty());
        match volume_name {
            None => self.find_volume(&claim).await,
            Some(v) => self.check_named_volume(&claim, &v).await,
        }
    }

    /// An unbound claim: pre-bound volumes first, then the smallest fit, else provisioning.
    async fn find_volume(&self, claim: &Arc<Stored>) -> Result<Action, Error> {
        let c: &PersistentVolumeClaim = &claim.decoded_as();
        let class_name = c
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.clone())
            .unwrap_or_default();
        let class = self.get_class(&class_name);
        let sc = class.as_ref().map(|s| s.typed::<StorageClass>());
        let sc = sc.as_ref();

        // WaitForFirstConsumer: nothing happens until a pod using the claim has a node.
        let node = if sc.is_some_and(is_wait_for_first_consumer) {
            match self.consumer_node(claim) {
                Some(n) => Some(n),
                None => {
                    self.ctx.recorder.normal(
                        COMPONENT,
                        &claim.decoded(),
                        "WaitForFirstConsumer",
                        "waiting for first consumer to be created before binding",
                    );
                    return Ok(Action::await_change());
                }
            }
        } else {
            None
        };
        let node_labels = node.as_ref().map(|n| {
            let obj = self.ctx.store.get_typed::<Node>("", n);
            node::labels_for(n, obj.map(|s| s.typed::<Node>()).as_ref())
        });
        let needs = Needs::of(c);

        // Volumes pre-bound to this claim take precedence: by name (an admin's), or by uid (made
        // for it by an outside provisioner).
        let prebound = self.index.lock().prebound_for(&claim.key);
        for name in prebound {
            if let Some(v) = self.ctx.store.get_typed::<PersistentVolume>("", &name) {
                let pv: &PersistentVolume = &v.decoded_as();
                let r = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
                let free = r.is_some_and(|r| {
                    let uid = r.uid.as_deref().unwrap_or_default();
                    uid.is_empty() || uid == claim.uid()
                });
                if free && needs.satisfied_by(pv) {
                    return self.bind_or_retry(claim, &v, false, None).await;
                }
            }
        }

        // A claim with a data source must start from that data: an existing (empty or
        // unrelated) volume never satisfies it, so it is always provisioned.
        let has_data_source = c
            .spec
            .as_ref()
            .is_some_and(|s| s.data_source.is_some() || s.data_source_ref.is_some());
        let chosen = if has_data_source {
            None
        } else {
            let mut index = self.index.lock();
            index.take_best(&needs, node.as_deref().zip(node_labels.as_ref()))
        };
        if let Some(name) = chosen {
            let Some(v) = self.ctx.store.get_typed::<PersistentVolume>("", &name) else {
                self.index.lock().release(&name);
                return Ok(Action::requeue(AFTER_CONFLICT));
            };
            let pv: &PersistentVolume = &v.decoded_as();
            if pv.spec.as_ref().is_some_and(|s| s.claim_ref.is_some()) || !needs.satisfied_by(pv) {
                // The index was behind the store; it will catch up from the feed.
                self.index.lock().release(&name);
                return Ok(Action::requeue(AFTER_CONFLICT));
            }
            return self.bind_or_retry(claim, &v, false, Some(&name)).await;
        }

        // No existing volume: provision one, or explain why the claim waits.
        match sc {
            Some(sc) => {
                let provisioner = sc.provisioner.clone();
                let known = self.ctx.providers.get(&provisioner).is_some();
                update::<PersistentVolumeClaim>(&self.ctx, claim, |c| {
                    let a = c.metadata.annotations.get_or_insert_with(BTreeMap::new);
                    a.insert(STORAGE_PROVISIONER.into(), provisioner.clone());
                    a.insert(BETA_STORAGE_PROVISIONER.into(), provisioner.clone());
                    if let Some(n) = &node {
                        a.insert(SELECTED_NODE.into(), n.clone());
                    }
                })
                .await?;
                if !known {
                    self.ctx.recorder.normal(
                        COMPONENT,
                        &claim.decoded(),
                        "ExternalProvisioning",
                        format!(
                            "Waiting for a volume to be created either by the external provisioner \"{provisioner}\" \
                             or manually by the system administrator. This server has no provider named \
                             \"{provisioner}\"; if volume creation is delayed, check the StorageClass."
                        ),
                    );
                }
            }
            None if !class_name.is_empty() => {
                self.ctx.recorder.warning(
                    COMPONENT,
                    &claim.decoded(),
                    "ProvisioningFailed",
                    format!("storageclass.storage.k8s.io \"{class_name}\" not found"),
                );
            }
            None => {
                self.ctx.recorder.normal(
                    COMPONENT,
                    &claim.decoded(),
                    "FailedBinding",
                    "no persistent volumes available for this claim and no storage class is set",
                );
            }
        }
        Ok(Action::await_change())
    }

    async fn bind_or_retry(
        &self,
        claim: &Arc<Stored>,
        volume: &Arc<Stored>,
        claim_named_volume: bool,
        reserved: Option<&str>,
    ) -> Result<Action, Error> {
        let result = self.bind(claim, volume, claim_named_volume).await;
        if let Some(name) = reserved {
            // Bound: the feed removes the volume from the index. Lost a race: offer it again.
            if result.is_err() {
                self.index.lock().release(name);
            }
        }
        match result {
            Ok(()) => {
                tracing::debug!(claim = %claim.key, volume = %volume.key.name, "bound");
                Ok(Action::await_change())
            }
            Err(e) if e.is_conflict() || e.is_not_found() => Ok(Action::requeue(AFTER_CONFLICT)),
            Err(e) => Err(e.into()),
        }
    }

    /// The node of the first running pod that uses the claim, or the node already selected.
    fn consumer_node(&self, claim: &Arc<Stored>) -> Option<String> {
        let c: &PersistentVolumeClaim = &claim.decoded_as();
        if let Some(n) = c
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SELECTED_NODE))
        {
            return Some(n.clone());
        }
        let pods = self.index.lock().pods_using(&claim.key);
        live_pods(&self.ctx, &claim.key.namespace, &pods)
            .iter()
            .find_map(|s| pod::node_name(&s.typed::<Pod>()).map(str::to_string))
    }

    /// A claim that names its volume: complete the bind, or report why it cannot happen.
    async fn check_named_volume(
        &self,
        claim: &Arc<Stored>,
        volume_name: &str,
    ) -> Result<Action, Error> {
        let c: &PersistentVolumeClaim = &claim.decoded_as();
        let bound = pvc::is_bound(c);
        let Some(volume) = self
            .ctx
            .store
            .get_typed::<PersistentVolume>("", volume_name)
        else {
            if bound {
                self.mark_lost(claim, format!("Bound claim has lost reference to PersistentVolume {volume_name}. Data on the volume is lost!")).await?;
            } else {
                self.ctx.recorder.normal(
                    COMPONENT,
                    &claim.decoded(),
                    "FailedBinding",
                    format!("volume \"{volume_name}\" not found"),
                );
            }
            return Ok(Action::await_change());
        };
        let v: &PersistentVolume = &volume.decoded_as();
        let claim_ref = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        let uid = c.metadata.uid.as_deref();
        let points_here = claim_ref.is_some_and(|r| {
            r.namespace.as_deref() == c.metadata.namespace.as_deref()
                && r.name.as_deref() == c.metadata.name.as_deref()
                && r.uid
                    .as_deref()
                    .is_none_or(|u| u.is_empty() || Some(u) == uid)
        });
        let named_by_user = c
            .metadata
            .annotations
            .as_ref()
            .is_none_or(|a| !a.contains_key(BOUND_BY_CONTROLLER));
        match (claim_ref, points_here) {
            (None, _) => {
                if !Needs::of(c).satisfied_by(v) {
                    self.ctx.recorder.warning(
                        COMPONENT,
                        &claim.decoded(),
                        "VolumeMismatch",
                        format!("Cannot bind to requested volume \"{volume_name}\": the volume does not satisfy the claim (class, access modes, volume mode, size or volume attributes class)"),
                    );
                    return Ok(Action::await_change());
                }
                self.bind_or_retry(claim, &volume, named_by_user, None)
                    .await
            }
            (Some(_), true) => {
                let complete = bound
                    && claim_ref.and_then(|r| r.uid.as_deref()) == uid
                    && crate::resources::pv::phase(v) == Some(crate::resources::pv::Phase::Bound);
                if complete {
                    Ok(Action::await_change())
                } else {
                    self.bind_or_retry(claim, &volume, named_by_user, None)
                        .await
                }
            }
            (Some(_), false) => {
                if bound {
                    self.mark_lost(claim, format!("Bound claim has lost its PersistentVolume {volume_name}: the volume is bound to another claim. Data on the volume is lost!")).await?;
                } else {
                    self.ctx.recorder.warning(
                        COMPONENT,
                        &claim.decoded(),
                        "FailedBinding",
                        format!("volume \"{volume_name}\" already bound to a different claim."),
                    );
                }
                Ok(Action::await_change())
            }
        }
    }

    async fn mark_lost(&self, claim: &Arc<Stored>, message: String) -> Result<(), ApiError> {
        let changed = update::<PersistentVolumeClaim>(&self.ctx, claim, |c| {
            c.status.get_or_insert_with(Default::default).phase =
                Some(pvc::Phase::Lost.as_str().into());
        })
        .await?;
        if changed {
            self.ctx
                .recorder
                .warning(COMPONENT, &claim.decoded(), "ClaimLost", message);
        }
        Ok(())
    }
}
