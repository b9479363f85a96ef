//! The CSI objects Kubernetes tools read to learn what storage a cluster has: one CSIDriver per
//! provider, and one CSINode per Node listing every provider there. In Kubernetes each CSI
//! driver's deployment writes its CSIDriver, and the kubelet its node's CSINode when a driver
//! registers; here the providers are in the server, so the server keeps both true.
//!
//! - A CSIDriver says what the provider and Stowage's node agent do: `attachRequired` is the
//!   provider's own (a VolumeAttachment is still made for every volume, as the attach/detach
//!   controller's record of where it is used), `podInfoOnMount` false and `fsGroupPolicy: None`
//!   (the node agent passes no pod information and changes no ownership), `storageCapacity`
//!   true exactly when the provider reports its room (then CSIStorageCapacity objects are
//!   published, see [`super::capacity`]), `volumeLifecycleModes: [Persistent]`. An edit is put
//!   back, a deleted one is made again; a change of an immutable field deletes and recreates
//!   it. CSIDrivers of drivers this server does not run are left alone.
//! - A CSINode lists, per provider, the node's id in the provider's terms, the topology keys
//!   the provider places volumes by, and `allocatable.count`: the attachment limit the
//!   attach/detach controller enforces (the node's limit label or annotation, else the
//!   provider's, for EBS the instance type's). It follows the node's labels, annotations and
//!   providerID, and goes with the Node (when the server made it). A driver whose node id or
//!   topology keys change is removed and added again, as Kubernetes requires. Entries of
//!   drivers this server does not run (an outside registrar's) are left as they are.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::storage::v1::{CSIDriverSpec, CSINodeDriver, VolumeNodeResources};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use stowage_provider::Provider;

use super::Context;
use crate::resources::csidriver::{FsGroupPolicy, LifecycleMode};
use crate::resources::{CSIDriver, CSINode, Kind, Node, Subresource};
use crate::runtime::{Action, Error, Reconciler};
use crate::store::{Stored, WatchEvent};

/// The label on the objects this controller keeps.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "stowage");

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CsiKey {
    /// Every provider's CSIDriver.
    Drivers,
    /// One node's CSINode.
    Node(String),
}

pub struct CsiObjects {
    ctx: Arc<Context>,
}

impl CsiObjects {
    pub fn new(ctx: Arc<Context>) -> Self {
        CsiObjects { ctx }
    }

    async fn sync_drivers(&self) -> Result<Action, Error> {
        for p in self.ctx.providers.iter() {
            let want = driver_object(p.as_ref());
            let name = p.name();
            match self.ctx.store.get_typed::<CSIDriver>("", name) {
                None => {
                    self.ctx.create_if_missing(want).await?;
                }
                Some(stored) => {
                    let have: CSIDriver = stored.typed();
                    if have.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    let immutable_differ = have.spec.attach_required != want.spec.attach_required
                        || have.spec.volume_lifecycle_modes != want.spec.volume_lifecycle_modes;
                    if immutable_differ {
                        // Gone now, made again on the next pass (the delete brings the key).
                        self.ctx.delete_if_present::<CSIDriver>("", name).await?;
                        continue;
                    }
                    self.ctx
                        .change::<CSIDriver>(&stored, Subresource::Main, |d| {
                            d.spec = want.spec.clone();
                            labels(&mut d.metadata);
                        })
                        .await?;
                }
            }
        }
        Ok(Action::await_change())
    }

    async fn sync_node(&self, name: &str) -> Result<Action, Error> {
        let node = self.ctx.store.get_typed::<Node>("", name);
        let existing = self.ctx.store.get_typed::<CSINode>("", name);
        let Some(node) = node else {
            if let Some(existing) = existing
                && is_ours(&existing.typed::<CSINode>().metadata)
            {
                self.ctx.delete_if_present::<CSINode>("", name).await?;
            }
            return Ok(Action::await_change());
        };
        let node: Node = node.typed();
        let want = node_object(&node, self.ctx.providers.iter().map(|p| p.as_ref()));
        let Some(existing) = existing else {
            self.ctx.create_if_missing(want).await?;
            return Ok(Action::await_change());
        };
        let have: CSINode = existing.typed();
        if have.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        // Entries of drivers this server does not run are someone else's: kept as they are.
        let (foreign, ours): (Vec<CSINodeDriver>, Vec<CSINodeDriver>) = have
            .spec
            .drivers
            .iter()
            .cloned()
            .partition(|d| self.ctx.providers.get(&d.name).is_none());
        let (kept, removed) = keep_fixed_parts(&ours, &want.spec.drivers);
        self.ctx
            .change::<CSINode>(&existing, Subresource::Main, |n| {
                n.spec.drivers = foreign;
                n.spec
                    .drivers
                    .extend(if removed { kept } else { want.spec.drivers });
                if n.metadata
                    .owner_references
                    .as_ref()
                    .is_none_or(Vec::is_empty)
                {
                    n.metadata.owner_references = want.metadata.owner_references;
                }
            })
            .await?;
        // The drivers taken out to change their fixed parts come back on the next pass, which
        // this write's own event brings.
        Ok(Action::await_change())
    }
}

#[async_trait::async_trait]
impl Reconciler for CsiObjects {
    type Key = CsiKey;

    fn name(&self) -> &'static str {
        "csi-objects"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Node, Kind::CSINode, Kind::CSIDriver]
    }

    fn keys_for(&self, event: &WatchEvent) -> Vec<CsiKey> {
        self.keys_for_object(&event.object)
    }

    fn keys_for_object(&self, object: &Stored) -> Vec<CsiKey> {
        match object.kind {
            Kind::Node | Kind::CSINode => vec![CsiKey::Node(object.key.name.to_string())],
            Kind::CSIDriver => vec![CsiKey::Drivers],
            _ => Vec::new(),
        }
    }

    fn standing_keys(&self) -> Vec<CsiKey> {
        vec![CsiKey::Drivers]
    }

    async fn reconcile(&self, key: &CsiKey) -> Result<Action, Error> {
        match key {
            CsiKey::Drivers => self.sync_drivers().await,
            CsiKey::Node(name) => self.sync_node(name).await,
        }
    }
}

/// The CSIDriver that tells the truth about `p` (see the module docs).
pub fn driver_object(p: &dyn Provider) -> CSIDriver {
    let caps = p.capabilities();
    let mut d = CSIDriver {
        metadata: ObjectMeta {
            name: Some(p.name().to_string()),
            ..Default::default()
        },
        spec: CSIDriverSpec {
            attach_required: Some(caps.attach_required),
            pod_info_on_mount: Some(false),
            storage_capacity: Some(caps.storage_capacity),
            requires_republish: Some(false),
            se_linux_mount: Some(false),
            fs_group_policy: Some(FsGroupPolicy::None.as_str().into()),
            volume_lifecycle_modes: Some(vec![LifecycleMode::Persistent.as_str().into()]),
            ..Default::default()
        },
    };
    labels(&mut d.metadata);
    d
}

/// The CSINode of `node`: one entry per provider, owned by the Node.
pub fn node_object<'a>(node: &Node, providers: impl Iterator<Item = &'a dyn Provider>) -> CSINode {
    let name = node.metadata.name.clone().unwrap_or_default();
    let drivers = providers
        .map(|p| {
            let info = p.node_driver_info(&super::attach::node_info(&name, Some(node), p.name()));
            CSINodeDriver {
                name: p.name().to_string(),
                node_id: info.node_id,
                topology_keys: (!info.topology_keys.is_empty()).then_some(info.topology_keys),
                allocatable: info.max_volumes.map(|n| VolumeNodeResources {
                    count: Some(i32::try_from(n).unwrap_or(i32::MAX)),
                }),
            }
        })
        .collect();
    let mut n = CSINode {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name,
                uid: node.metadata.uid.clone().unwrap_or_default(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: Default::default(),
        status: None,
    };
    n.spec.drivers = drivers;
    labels(&mut n.metadata);
    n
}

/// The drivers of `have` whose node id and topology keys are as `want` has them (the others
/// must leave before they come back changed), and whether any had to leave.
fn keep_fixed_parts(have: &[CSINodeDriver], want: &[CSINodeDriver]) -> (Vec<CSINodeDriver>, bool) {
    let want: BTreeMap<&str, &CSINodeDriver> = want.iter().map(|d| (d.name.as_str(), d)).collect();
    let mut removed = false;
    let kept = have
        .iter()
        .filter(|h| match want.get(h.name.as_str()) {
            Some(w) if w.node_id != h.node_id || w.topology_keys != h.topology_keys => {
                removed = true;
                false
            }
            _ => true,
        })
        .cloned()
        .collect();
    (kept, removed)
}

fn labels(meta: &mut ObjectMeta) {
    meta.labels
        .get_or_insert_with(Default::default)
        .insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
}

fn is_ours(meta: &ObjectMeta) -> bool {
    crate::resources::labels_of(meta)
        .get(MANAGED_BY.0)
        .map(String::as_str)
        == Some(MANAGED_BY.1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_provider::memory::MemoryProvider;

    #[test]
    fn a_driver_whose_id_or_keys_changed_leaves_before_it_comes_back() {
        let d = |name: &str, id: &str| CSINodeDriver {
            name: name.into(),
            node_id: id.into(),
            ..Default::default()
        };
        let have = [d("a", "n1"), d("b", "n1")];
        let (kept, removed) = keep_fixed_parts(&have, &[d("a", "n1"), d("b", "i-1")]);
        assert!(removed);
        assert_eq!(kept, [d("a", "n1")]);
        let (kept, removed) = keep_fixed_parts(&have, &[d("a", "n1"), d("b", "n1"), d("c", "x")]);
        assert!(!removed);
        assert_eq!(kept, have);
    }

    #[test]
    fn a_nodes_limit_annotation_becomes_its_allocatable_count() {
        let p = MemoryProvider::new("memory.stowage.dev");
        let mut node = Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let count = |n: &CSINode| n.spec.drivers[0].allocatable.as_ref().and_then(|a| a.count);
        let n = node_object(&node, [&p as &dyn Provider].into_iter());
        assert_eq!(n.spec.drivers[0].node_id, "n1");
        assert_eq!(count(&n), Some(128), "the provider's own limit");
        assert_eq!(n.metadata.owner_references.as_ref().unwrap()[0].uid, "u1");
        node.metadata.annotations = Some(BTreeMap::from([(
            crate::resources::names::node::MAX_ATTACHMENTS_ANNOTATION.to_string(),
            "7".to_string(),
        )]));
        let n = node_object(&node, [&p as &dyn Provider].into_iter());
        assert_eq!(count(&n), Some(7));
    }
}
