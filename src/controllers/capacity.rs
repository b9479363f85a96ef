//! Storage capacity: for every class whose provider knows its room (`storage_capacity`), one
//! CSIStorageCapacity per topology the provider reports, in `stowage-system`, as Kubernetes'
//! external-provisioner publishes them: the local provider per node, NFS per share and class.
//! Schedulers read them to keep pods off nodes that cannot hold their claims.
//!
//! They follow provisions and deletes within [`MIN_INTERVAL`] (a volume's creation or removal
//! brings back every class of its provider), and the backend's own changes (an NFS share
//! filling up from outside) every [`REFRESH`]. A class that goes, or whose provider cannot say, loses its objects; edited or
//! deleted ones are put back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use parking_lot::Mutex;
use stowage_provider::CapacityReport;
use stowage_provider::quantity::Quantity;

use super::Context;
use crate::error::ApiError;
use crate::registry::Write;
use crate::resources::csistoragecapacity::CSIStorageCapacity;
use crate::resources::names::SYSTEM_NAMESPACE;
use crate::resources::{AnyObject, Kind, PersistentVolume, StorageClass, Subresource};
use crate::runtime::{Action, Error, Reconciler};
use crate::store::{EventType, Stored, WatchEvent};

/// How often the room is asked again without a volume coming or going.
pub const REFRESH: Duration = Duration::from_secs(30);
/// Kubernetes' labels on the objects a driver publishes.
pub const DRIVER_LABEL: &str = "csi.storage.k8s.io/drivername";
pub const MANAGED_BY_LABEL: &str = "csi.storage.k8s.io/managed-by";
/// Who publishes: the server for its own providers...
const MANAGED_BY: &str = "stowage";
/// ...and node agents for the node-local provisioning of their own disks (each agent's
/// objects select its node alone; see `node::capacity`).
pub const NODE_MANAGED_BY: &str = "stowage-node";

/// The shortest time between two looks at one class's room: under a burst of provisions every
/// new volume brings its class back, and one look a second is current enough for a scheduler
/// without a provider call and a write per volume.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

pub struct Capacity {
    ctx: Arc<Context>,
    /// When each class's room was last asked.
    last: Mutex<HashMap<String, tokio::time::Instant>>,
}

impl Capacity {
    pub fn new(ctx: Arc<Context>) -> Self {
        Capacity {
            ctx,
            last: Mutex::default(),
        }
    }

    /// The objects published for `class` now, by name: ours (managed-by) for that class
    /// (`storageClassName`, immutable; a class name may be longer than a label value).
    fn published(&self, class: &str) -> BTreeMap<String, Arc<Stored>> {
        let (objects, _) = self
            .ctx
            .store
            .list(Kind::CSIStorageCapacity, Some(SYSTEM_NAMESPACE));
        objects
            .iter()
            .filter(|o| o.may_have("storageClassName", class))
            .filter(|o| {
                let c: CSIStorageCapacity = o.typed();
                c.storage_class_name == class && is_ours(&c)
            })
            .map(|o| (o.key.name.to_string(), o.clone()))
            .collect()
    }

    async fn sync(&self, class_name: &str) -> Result<Action, Error> {
        let now = tokio::time::Instant::now();
        if let Some(at) = self.last.lock().get(class_name)
            && now < *at + MIN_INTERVAL
        {
            return Ok(Action::requeue(*at + MIN_INTERVAL - now));
        }
        self.last.lock().insert(class_name.to_string(), now);
        let class = self
            .ctx
            .store
            .get_typed::<StorageClass>("", class_name)
            .map(|s| s.typed::<StorageClass>());
        let provider = class
            .as_ref()
            .and_then(|c| self.ctx.providers.get(&c.provisioner))
            .filter(|p| p.capabilities().storage_capacity)
            .cloned();
        let mut have = self.published(class_name);
        let (Some(class), Some(provider)) = (class, provider) else {
            for name in have.keys() {
                delete(&self.ctx, name).await?;
            }
            self.last.lock().remove(class_name);
            return Ok(Action::await_change());
        };
        let parameters = crate::controllers::provisioner::provider_parameters(&class);
        let reports = self
            .ctx
            .call_provider(provider.name(), "capacity", provider.capacity(&parameters))
            .await?;
        let mut wanted = BTreeSet::new();
        for report in reports {
            let want = capacity_object(class_name, provider.name(), &report, MANAGED_BY);
            let name = want.metadata.name.clone().unwrap_or_default();
            wanted.insert(name.clone());
            match have.remove(&name) {
                None => create(&self.ctx, want).await?,
                // Our name on something else (an edited label or topology): its fixed fields
                // cannot be mended, so it goes and is made again on the next pass.
                Some(stored)
                    if stored.typed::<CSIStorageCapacity>().node_topology != want.node_topology =>
                {
                    delete(&self.ctx, &name).await?;
                }
                Some(stored) => {
                    self.ctx
                        .change::<CSIStorageCapacity>(&stored, Subresource::Main, |c| {
                            c.capacity = want.capacity.clone();
                            c.maximum_volume_size = want.maximum_volume_size.clone();
                            c.metadata.labels = want.metadata.labels.clone();
                        })
                        .await?;
                }
            }
        }
        // Topologies the provider no longer reports.
        for name in have.keys() {
            delete(&self.ctx, name).await?;
        }
        Ok(Action::requeue(REFRESH))
    }
}

#[async_trait::async_trait]
impl Reconciler for Capacity {
    /// A class name.
    type Key = String;

    fn name(&self) -> &'static str {
        "capacity"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[
            Kind::StorageClass,
            Kind::PersistentVolume,
            Kind::CSIStorageCapacity,
        ]
    }

    fn keys_for(&self, event: &WatchEvent) -> Vec<String> {
        let object = &event.object;
        match object.kind {
            // A volume made or removed changes the room of every class of its provider (the
            // classes of one provider share its disk or share).
            Kind::PersistentVolume => {
                let size = |s: &Stored| {
                    let v: PersistentVolume = s.typed();
                    v.spec
                        .and_then(|s| s.capacity)
                        .and_then(|c| c.get("storage").cloned())
                };
                // Only a volume's coming, going or growing changes a room (phase changes and
                // the like do not).
                if event.type_ == EventType::Modified
                    && event.prev.as_ref().is_some_and(|p| size(p) == size(object))
                {
                    return Vec::new();
                }
                let v: PersistentVolume = object.typed();
                let spec = v.spec.unwrap_or_default();
                let driver = spec.csi.map(|c| c.driver);
                let own_class = spec.storage_class_name.filter(|c| !c.is_empty());
                let (classes, _) = self.ctx.store.list(Kind::StorageClass, None);
                let mut keys: BTreeSet<String> = classes
                    .iter()
                    .filter(|c| {
                        driver
                            .as_deref()
                            .is_some_and(|d| c.may_have("provisioner", d))
                            && Some(c.typed::<StorageClass>().provisioner) == driver
                    })
                    .map(|c| c.key.name.to_string())
                    .collect();
                keys.extend(own_class);
                keys.into_iter().collect()
            }
            _ => self.keys_for_object(object),
        }
    }

    fn keys_for_object(&self, object: &Stored) -> Vec<String> {
        match object.kind {
            Kind::StorageClass => vec![object.key.name.to_string()],
            // Ours or not: a change or deletion is looked at, so that ours are put back.
            Kind::CSIStorageCapacity if object.key.namespace == SYSTEM_NAMESPACE => {
                match &*object.decoded() {
                    AnyObject::CSIStorageCapacity(c) => vec![c.storage_class_name.clone()],
                    _ => Vec::new(),
                }
            }
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, class: &String) -> Result<Action, Error> {
        self.sync(class).await
    }
}

/// The object for one report: named after the class and topology (stable across restarts and
/// replicas), labelled as Kubernetes' drivers label theirs, published by `managed_by`.
pub fn capacity_object(
    class: &str,
    driver: &str,
    report: &CapacityReport,
    managed_by: &str,
) -> CSIStorageCapacity {
    let quantity = |b: i64| K8sQuantity(Quantity::from_units(b.max(0)).canonical());
    let mut key = String::from(class);
    for (k, v) in &report.topology.0 {
        key.push('\0');
        key.push_str(k);
        key.push('=');
        key.push_str(v);
    }
    CSIStorageCapacity {
        metadata: ObjectMeta {
            name: Some(format!("csisc-{:016x}", fnv1a(key.as_bytes()))),
            namespace: Some(SYSTEM_NAMESPACE.to_string()),
            labels: Some(BTreeMap::from([
                (DRIVER_LABEL.to_string(), driver.to_string()),
                (MANAGED_BY_LABEL.to_string(), managed_by.to_string()),
            ])),
            ..Default::default()
        },
        storage_class_name: class.to_string(),
        capacity: Some(quantity(report.available_bytes)),
        maximum_volume_size: report.maximum_volume_bytes.map(quantity),
        // An empty selector is every node (a share reachable from anywhere).
        node_topology: Some(LabelSelector {
            match_labels: (!report.topology.0.is_empty()).then(|| report.topology.0.clone()),
            match_expressions: None,
        }),
    }
}

/// FNV-1a: a stable hash for names (the standard library's may change between releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

async fn create(ctx: &Context, object: CSIStorageCapacity) -> Result<(), ApiError> {
    let name = object.metadata.name.clone().unwrap_or_default();
    match ctx.registry.write(vec![Write::create(object)]).await {
        // Our name, but not one of ours for this class (its labels were edited away): it
        // goes, and the next pass (which its deletion brings) makes ours.
        Err(e) if e.is_already_exists() => delete(ctx, &name).await,
        other => other.map(|_| ()),
    }
}

async fn delete(ctx: &Context, name: &str) -> Result<(), ApiError> {
    ctx.delete_if_present::<CSIStorageCapacity>(SYSTEM_NAMESPACE, name)
        .await
}

fn is_ours(c: &CSIStorageCapacity) -> bool {
    crate::resources::labels_of(&c.metadata)
        .get(MANAGED_BY_LABEL)
        .map(String::as_str)
        == Some(MANAGED_BY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_provider::Topology;

    #[test]
    fn objects_are_named_by_class_and_topology_and_select_their_nodes() {
        let on = |node: &str| CapacityReport {
            topology: Topology::one("kubernetes.io/hostname", node),
            available_bytes: 10 << 30,
            maximum_volume_bytes: None,
        };
        let a = capacity_object("fast", "local.stowage.dev", &on("n1"), MANAGED_BY);
        assert_eq!(
            a.metadata.name,
            capacity_object("fast", "x", &on("n1"), MANAGED_BY)
                .metadata
                .name
        );
        assert_ne!(
            a.metadata.name,
            capacity_object("fast", "x", &on("n2"), MANAGED_BY)
                .metadata
                .name
        );
        assert_ne!(
            a.metadata.name,
            capacity_object("slow", "x", &on("n1"), MANAGED_BY)
                .metadata
                .name
        );
        assert_eq!(a.capacity, Some(K8sQuantity("10Gi".into())));
        assert_eq!(
            a.node_topology.unwrap().match_labels.unwrap()["kubernetes.io/hostname"],
            "n1"
        );
        let everywhere = CapacityReport {
            topology: Topology::default(),
            available_bytes: 0,
            maximum_volume_bytes: Some(1 << 30),
        };
        let e = capacity_object("nfs", "nfs.stowage.dev", &everywhere, MANAGED_BY);
        assert_eq!(e.node_topology, Some(LabelSelector::default()));
        assert_eq!(e.maximum_volume_size, Some(K8sQuantity("1Gi".into())));
    }
}
