//! Who may do what: bearer-token authentication, role-based authorization, and per-token limits.
//!
//! Roles:
//! - `admin`: everything;
//! - `viewer`: read (get, list, watch) everything;
//! - `namespace:<ns>`: PersistentVolumeClaims, VolumeSnapshots, Pods and Events in `<ns>`
//!   (but not the status of claims and snapshots, which controllers own); read StorageClasses;
//!   nothing else cluster-scoped;
//! - `node:<name>`, Kubernetes' Node authorizer: its own Node and its Lease in
//!   `stowage-node-lease`; read the VolumeAttachments to it and update their status; read the
//!   pods on it; and, by a check of the object graph, get exactly the claims those pods use
//!   (and update their status, to finish a filesystem expansion) and the volumes bound to
//!   them or attached to it; file events about itself and its pods. For node-local
//!   provisioning it also follows the claims placed on it (`selected-node`), reads classes,
//!   makes, follows and deletes the volumes pinned to it by node affinity (and reads their
//!   claims, to clone them), publishes the CSIStorageCapacity of its own disk (labelled as a
//!   node's, selecting it alone), and takes the snapshots of the contents labelled for it
//!   (reading them and their VolumeSnapshots, recording only their progress).
//!
//! Lists and watches are filtered to what the caller may see (an all-namespace list by a
//! namespace token returns its namespace only). A refusal is 403 whether or not the object
//! exists, so errors never reveal objects the caller cannot read.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use crate::error::ApiError;
use crate::machinery::validation::{dns1123_label, dns1123_subdomain};
use crate::registry::Guard;
use crate::resources::names::LEASE_NAMESPACE;
use crate::resources::target::Target;
use crate::resources::{AnyObject, Kind, Node, Pod, Subresource, names, pod};
use crate::store::{Store, Stored};

pub mod kubeconfig;
pub mod tls;
pub mod tokens;

pub use tokens::{Identity, TokenInfo, Tokens};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Admin,
    Viewer,
    Namespace(String),
    Node(String),
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Admin => f.write_str("admin"),
            Role::Viewer => f.write_str("viewer"),
            Role::Namespace(ns) => write!(f, "namespace:{ns}"),
            Role::Node(n) => write!(f, "node:{n}"),
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            None if s == "admin" => Ok(Role::Admin),
            None if s == "viewer" => Ok(Role::Viewer),
            Some(("namespace", ns)) if dns1123_label(ns).is_empty() => {
                Ok(Role::Namespace(ns.to_string()))
            }
            Some(("node", n)) if dns1123_subdomain(n).is_empty() => Ok(Role::Node(n.to_string())),
            _ => Err(format!(
                "invalid role {s:?}: use admin, viewer, namespace:<namespace> or node:<node name>"
            )),
        }
    }
}

/// Which objects of an allowed request the caller may see or touch.
#[derive(Clone)]
pub enum Visibility {
    All,
    /// Only objects passing the predicate (checked against the object, not just the URL).
    Only(Arc<dyn Fn(&Stored) -> bool + Send + Sync>),
}

impl Visibility {
    pub fn admits(&self, s: &Stored) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Only(f) => f(s),
        }
    }
}

/// What a request does, by Kubernetes' verb names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }

    pub fn is_read(self) -> bool {
        matches!(self, Verb::Get | Verb::List | Verb::Watch)
    }

    fn is_collection_read(self) -> bool {
        matches!(self, Verb::List | Verb::Watch)
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The 403 for a request; it names the request, never what exists.
pub fn forbidden(identity: &Identity, verb: Verb, target: &Target) -> ApiError {
    let info = target.kind.info();
    let name = target
        .name
        .as_deref()
        .map(|n| format!(" \"{n}\""))
        .unwrap_or_default();
    let scope = target
        .namespace
        .as_deref()
        .map(|ns| format!(" in the namespace \"{ns}\""))
        .unwrap_or_else(|| " at the cluster scope".to_string());
    ApiError::forbidden(format!(
        "{}{name} is forbidden: token \"{}\" ({}) cannot {verb} resource \"{}\" in API group \"{}\"{scope}",
        info.plural, identity.name, identity.role, info.plural, info.group
    ))
}

/// Decides a request on a resource. `graph` is the cache the node authorizer's graph checks
/// read (which pods run on a node, which claims they use).
pub fn authorize(
    identity: &Identity,
    verb: Verb,
    target: &Target,
    graph: &Store,
) -> Result<Visibility, ApiError> {
    let status = target.subresource == Some(Subresource::Status);
    let deny = || Err(forbidden(identity, verb, target));
    match &identity.role {
        Role::Admin => Ok(Visibility::All),
        Role::Viewer if verb.is_read() => Ok(Visibility::All),
        Role::Viewer => deny(),
        Role::Namespace(ns) => match target.kind {
            // The status of claims and snapshots is the controllers' word: a user who could
            // write a snapshot's `snapshotHandle` could restore another tenant's data.
            Kind::PersistentVolumeClaim | Kind::VolumeSnapshot if !verb.is_read() && status => {
                deny()
            }
            // Events are seen only when they are about the tenant's own objects: never about
            // cluster-scoped ones (volumes, nodes) filed in its namespace.
            Kind::Event => match target.namespace.as_deref() {
                Some(n) if n == ns => Ok(own_events(ns)),
                None if verb.is_collection_read() => Ok(own_events(ns)),
                _ => deny(),
            },
            Kind::PersistentVolumeClaim | Kind::Pod | Kind::VolumeSnapshot => {
                match target.namespace.as_deref() {
                    Some(n) if n == ns => Ok(Visibility::All),
                    None if verb.is_collection_read() => {
                        let ns = ns.clone();
                        Ok(Visibility::Only(Arc::new(move |s| s.key.namespace == ns)))
                    }
                    _ => deny(),
                }
            }
            // A tenant reads its quotas; only admins set them.
            Kind::ResourceQuota if verb.is_read() => match target.namespace.as_deref() {
                Some(n) if n == ns => Ok(Visibility::All),
                None => {
                    let ns = ns.clone();
                    Ok(Visibility::Only(Arc::new(move |s| s.key.namespace == ns)))
                }
                _ => deny(),
            },
            // What storage there is to ask for: classes, attribute and snapshot classes,
            // drivers. Snapshot contents are cluster-scoped and name every namespace's
            // snapshots: admins only, as in Kubernetes.
            Kind::StorageClass
            | Kind::VolumeAttributesClass
            | Kind::VolumeSnapshotClass
            | Kind::CSIDriver
                if verb.is_read() =>
            {
                Ok(Visibility::All)
            }
            _ => deny(),
        },
        Role::Node(node) => {
            let node = node.clone();
            match target.kind {
                Kind::Node if !matches!(verb, Verb::Delete | Verb::DeleteCollection) => {
                    Ok(Visibility::Only(Arc::new(move |s| s.key.name == node)))
                }
                Kind::Lease
                    if target
                        .namespace
                        .as_deref()
                        .is_none_or(|n| n == LEASE_NAMESPACE) =>
                {
                    Ok(Visibility::Only(Arc::new(move |s| {
                        s.key.namespace == LEASE_NAMESPACE && s.key.name == node
                    })))
                }
                Kind::VolumeAttachment
                    if verb.is_read() || (matches!(verb, Verb::Update | Verb::Patch) && status) =>
                {
                    Ok(Visibility::Only(Arc::new(move |s| {
                        s.may_have("nodeName", &node)
                            && match &s.object() {
                                AnyObject::VolumeAttachment(va) => va.spec.node_name == node,
                                _ => false,
                            }
                    })))
                }
                Kind::Pod if verb.is_read() => Ok(Visibility::Only(Arc::new(move |s| {
                    s.may_have("nodeName", &node)
                        && pod::node_name(&s.typed::<Pod>()) == Some(node.as_str())
                }))),
                // One object at a time, as Kubernetes' Node authorizer: what a node may see
                // changes as pods come and go, which a list or a watch cannot follow.
                Kind::PersistentVolumeClaim
                    if matches!(verb, Verb::Update | Verb::Patch) && status =>
                {
                    let graph = graph.clone();
                    Ok(Visibility::Only(Arc::new(move |s| {
                        claim_used_on(&graph, &node, &s.key.namespace, &s.key.name)
                    })))
                }
                // ...and the claims of volumes on its disk, which it clones from.
                Kind::PersistentVolumeClaim if verb == Verb::Get => {
                    let graph = graph.clone();
                    Ok(Visibility::Only(Arc::new(move |s| {
                        selected_to(s, &node)
                            || claim_used_on(&graph, &node, &s.key.namespace, &s.key.name)
                            || claim_on_disk_of(&graph, &node, s)
                    })))
                }
                // Node-local provisioning: the claims the scheduler placed on this node are
                // this node's to provision, so it may follow them.
                Kind::PersistentVolumeClaim if verb.is_collection_read() => {
                    Ok(Visibility::Only(Arc::new(move |s| selected_to(s, &node))))
                }
                Kind::PersistentVolume if verb == Verb::Get => {
                    let graph = graph.clone();
                    Ok(Visibility::Only(Arc::new(move |s| {
                        pinned_to(s, &node) || volume_used_on(&graph, &node, s)
                    })))
                }
                // ...and the volumes on its own disk are its to make, follow and delete.
                Kind::PersistentVolume if verb != Verb::DeleteCollection => {
                    Ok(Visibility::Only(Arc::new(move |s| pinned_to(s, &node))))
                }
                Kind::StorageClass | Kind::CSIDriver | Kind::VolumeSnapshotClass
                    if verb.is_read() =>
                {
                    Ok(Visibility::All)
                }
                // Node-local snapshots: the contents labelled for this node are its to take,
                // look up and delete (their spec stays as it is: see `guard`)...
                Kind::VolumeSnapshotContent
                    if matches!(
                        verb,
                        Verb::Get | Verb::List | Verb::Watch | Verb::Update | Verb::Patch
                    ) =>
                {
                    Ok(Visibility::Only(Arc::new(move |s| {
                        matches!(&s.object(), AnyObject::VolumeSnapshotContent(c)
                            if crate::controllers::snapshots::contents::node_of(c) == Some(node.as_str()))
                    })))
                }
                // ...and it reads the VolumeSnapshots of those contents, and those the claims
                // placed on it are restored from.
                Kind::VolumeSnapshot if verb == Verb::Get => {
                    let graph = graph.clone();
                    Ok(Visibility::Only(Arc::new(move |s| {
                        snapshot_for_node(&graph, &node, s)
                    })))
                }
                // Its own CSINode, as a kubelet reads it (the server writes it).
                Kind::CSINode if verb.is_read() => {
                    Ok(Visibility::Only(Arc::new(move |s| s.key.name == node)))
                }
                Kind::Event if verb == Verb::Create => Ok(Visibility::All),
                // The room of its own disk, for node-local provisioning: the objects it
                // publishes, which select this node alone.
                Kind::CSIStorageCapacity if verb != Verb::DeleteCollection => {
                    Ok(Visibility::Only(Arc::new(move |s| {
                        s.key.namespace == names::SYSTEM_NAMESPACE
                            && matches!(&s.object(), AnyObject::CSIStorageCapacity(c) if published_by(c, &node))
                    })))
                }
                _ => deny(),
            }
        }
    }
}

/// Whether a node's CSIStorageCapacity is for a class of a provider the server does not run,
/// under the one name the agent gives it: a node publishes at most one per class.
fn capacity_of_own_class(
    graph: &Store,
    c: &crate::resources::csistoragecapacity::CSIStorageCapacity,
    node: &str,
) -> bool {
    use crate::controllers::capacity::{DRIVER_LABEL, NODE_MANAGED_BY, capacity_object};
    let Some(driver) = c.metadata.labels.as_ref().and_then(|l| l.get(DRIVER_LABEL)) else {
        return false;
    };
    let class_ok = graph
        .get_typed::<crate::resources::StorageClass>("", &c.storage_class_name)
        .is_some_and(|s| s.typed::<crate::resources::StorageClass>().provisioner == *driver);
    let report = stowage_provider::CapacityReport {
        topology: stowage_provider::Topology::one(names::node::HOSTNAME_LABEL, node),
        available_bytes: 0,
        maximum_volume_bytes: None,
    };
    let expected = capacity_object(&c.storage_class_name, driver, &report, NODE_MANAGED_BY)
        .metadata
        .name;
    class_ok && !server_runs(graph, driver) && c.metadata.name == expected
}

/// Whether a CSIStorageCapacity is one `node`'s agent publishes: labelled as a node's, with
/// a topology of that node alone.
fn published_by(c: &crate::resources::csistoragecapacity::CSIStorageCapacity, node: &str) -> bool {
    use crate::controllers::capacity::{MANAGED_BY_LABEL, NODE_MANAGED_BY};
    let label = c
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .map(String::as_str);
    let only_this_node = c.node_topology.as_ref().is_some_and(|t| {
        t.match_expressions.as_ref().is_none_or(Vec::is_empty)
            && t.match_labels.as_ref().is_some_and(|l| {
                l.len() == 1 && l.get(names::node::HOSTNAME_LABEL).map(String::as_str) == Some(node)
            })
    });
    label == Some(NODE_MANAGED_BY) && only_this_node
}

/// What a node may change in a content's metadata: the "being created" mark (which it sets
/// before its first call) and, once the content is being deleted, the removal of finalizers
/// (when its snapshot is dealt with); other annotations (a mode-change permission, say) are an
/// admin's.
fn node_content_meta_ok(
    old: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    new: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> bool {
    use crate::controllers::snapshots::contents::BEING_CREATED;
    let others = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        let mut a = m.annotations.clone().unwrap_or_default();
        a.remove(BEING_CREATED);
        a
    };
    let kept: Vec<&String> = old.finalizers.iter().flatten().collect();
    let finalizers_ok = if old.deletion_timestamp.is_some() {
        new.finalizers.iter().flatten().all(|f| kept.contains(&f))
    } else {
        old.finalizers == new.finalizers
    };
    others(old) == others(new) && finalizers_ok
}

/// Whether a claim's volume is on `node`'s disk (bound to a volume pinned to it).
fn claim_on_disk_of(graph: &Store, node: &str, claim: &Stored) -> bool {
    let AnyObject::PersistentVolumeClaim(c) = &claim.object() else {
        return false;
    };
    let Some(volume) = c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) else {
        return false;
    };
    graph
        .get_typed::<crate::resources::PersistentVolume>("", volume)
        .is_some_and(|pv| {
            let pv = pv.typed::<crate::resources::PersistentVolume>();
            volume_pinned_to(&pv, node)
                && pv
                    .spec
                    .as_ref()
                    .and_then(|s| s.claim_ref.as_ref())
                    .is_some_and(|r| {
                        r.namespace.as_deref() == Some(claim.key.namespace.as_str())
                            && r.name.as_deref() == Some(claim.key.name.as_str())
                    })
        })
}

/// Whether a VolumeSnapshot is one `node` works with: bound to a content labelled for it, or
/// the data source of a claim placed on it.
fn snapshot_for_node(graph: &Store, node: &str, snapshot: &Stored) -> bool {
    let (ns, name) = (snapshot.key.namespace.as_str(), snapshot.key.name.as_str());
    let (contents, _) = graph.list(Kind::VolumeSnapshotContent, None);
    let of_content = contents.iter().any(|s| {
        s.may_have("name", name)
            && matches!(&s.object(), AnyObject::VolumeSnapshotContent(c)
                if crate::controllers::snapshots::contents::node_of(c) == Some(node)
                    && c.snapshot_ref() == (ns, name))
    });
    if of_content {
        return true;
    }
    let (claims, _) = graph.list(Kind::PersistentVolumeClaim, Some(ns));
    claims.iter().any(|s| {
        selected_to(s, node)
            && matches!(&s.object(), AnyObject::PersistentVolumeClaim(c)
                if crate::controllers::provisioner::restore::snapshot_source(c).as_deref() == Some(name))
    })
}

/// Whether the scheduler placed the claim on `node` (`volume.kubernetes.io/selected-node`).
fn selected_to(s: &Stored, node: &str) -> bool {
    s.object()
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(names::annotations::SELECTED_NODE))
        .is_some_and(|n| n == node)
}

/// Whether the object is a volume that only `node` can reach: its node affinity requires
/// `kubernetes.io/hostname` to be `node` in every term.
fn pinned_to(s: &Stored, node: &str) -> bool {
    match &s.object() {
        AnyObject::PersistentVolume(pv) => volume_pinned_to(pv, node),
        _ => false,
    }
}

fn volume_pinned_to(pv: &crate::resources::PersistentVolume, node: &str) -> bool {
    crate::resources::pv::pinned_node(pv) == Some(node)
}

/// Whether the server runs `driver` itself: it keeps that provider's CSIDriver, labelled as
/// its own.
fn server_runs(graph: &Store, driver: &str) -> bool {
    graph
        .get_typed::<crate::resources::CSIDriver>("", driver)
        .is_some_and(|d| {
            let (k, v) = crate::controllers::csi::MANAGED_BY;
            d.meta()
                .labels
                .as_ref()
                .and_then(|l| l.get(k))
                .map(String::as_str)
                == Some(v)
        })
}

/// A node writes only volumes pinned to itself, bound (if at all) to a claim placed on it.
fn node_volume(
    graph: &Store,
    node: &str,
    old: Option<&AnyObject>,
    new: &AnyObject,
) -> Result<(), ApiError> {
    let AnyObject::PersistentVolume(pv) = new else {
        return Ok(());
    };
    let claim_ref =
        |v: &crate::resources::PersistentVolume| v.spec.as_ref().and_then(|s| s.claim_ref.clone());
    let same_claim =
        matches!(old, Some(AnyObject::PersistentVolume(o)) if claim_ref(o) == claim_ref(pv));
    if !volume_pinned_to(pv, node) {
        return Err(ApiError::forbidden(format!(
            "node \"{node}\" may only write volumes whose node affinity pins them to it"
        )));
    }
    // Only node-local volumes: one of a provider the server runs would have the server
    // snapshot, clone or delete whatever handle the node named (another tenant's disk).
    match pv.spec.as_ref().and_then(|s| s.csi.as_ref()) {
        Some(csi) if !server_runs(graph, &csi.driver) => {}
        _ => {
            return Err(ApiError::forbidden(format!(
                "node \"{node}\" may only write CSI volumes of a provider it runs itself, not one the server runs"
            )));
        }
    }
    if let Some(c) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref())
        && !same_claim
    {
        let claim = graph.get_typed::<crate::resources::PersistentVolumeClaim>(
            c.namespace.as_deref().unwrap_or_default(),
            c.name.as_deref().unwrap_or_default(),
        );
        if !claim.is_some_and(|c| selected_to(&c, node)) {
            return Err(ApiError::forbidden(format!(
                "node \"{node}\" may only bind its volumes to claims placed on it"
            )));
        }
    }
    // Attribute classes are the modifier's to record: a node that could name one would hold
    // it in place (protection) or claim a modification that never happened.
    let class = |v: &crate::resources::PersistentVolume| {
        v.spec
            .as_ref()
            .and_then(|s| s.volume_attributes_class_name.clone())
    };
    let old_class = match old {
        Some(AnyObject::PersistentVolume(o)) => class(o),
        _ => None,
    };
    if class(pv) != old_class {
        return Err(ApiError::forbidden(format!(
            "node \"{node}\" may not set a volume's volumeAttributesClassName"
        )));
    }
    Ok(())
}

/// Kubernetes' NodeRestriction for claims: a node writes a claim's status only to report what
/// it did on the node (its capacity after growing a filesystem, its conditions, and where a
/// node-side resize stands); the rest of the status is the controllers' word.
fn node_claim_status(node: &str, old: Option<&AnyObject>, new: &AnyObject) -> Result<(), ApiError> {
    let (AnyObject::PersistentVolumeClaim(c), Some(AnyObject::PersistentVolumeClaim(o))) =
        (new, old)
    else {
        return Ok(());
    };
    let rest = |c: &crate::resources::PersistentVolumeClaim| {
        let mut s = c.status.clone().unwrap_or_default();
        s.capacity = None;
        s.conditions = None;
        s.allocated_resource_statuses = None;
        s
    };
    if rest(c) != rest(o) || c.spec != o.spec {
        return Err(ApiError::forbidden(format!(
            "node \"{node}\" may only change a claim's status.capacity, status.conditions and status.allocatedResourceStatuses"
        )));
    }
    Ok(())
}

/// Whether a pod scheduled to `node` uses the claim `namespace/claim`. Objects are held as
/// JSON, so only pods that may be on `node` and may name the claim are decoded.
fn claim_used_on(graph: &Store, node: &str, namespace: &str, claim: &str) -> bool {
    graph.list(Kind::Pod, Some(namespace)).0.iter().any(|p| {
        if !(p.may_have("nodeName", node) && p.may_have("claimName", claim)) {
            return false;
        }
        let p = p.typed::<Pod>();
        pod::node_name(&p) == Some(node) && pod::claim_names(&p).any(|c| c == claim)
    })
}

/// Whether the volume is bound to a claim a pod on `node` uses, or attached to `node`.
fn volume_used_on(graph: &Store, node: &str, volume: &Stored) -> bool {
    let AnyObject::PersistentVolume(pv) = &volume.object() else {
        return false;
    };
    let claim = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    if let Some(c) = claim
        && claim_used_on(
            graph,
            node,
            c.namespace.as_deref().unwrap_or_default(),
            c.name.as_deref().unwrap_or_default(),
        )
    {
        return true;
    }
    graph
        .list(Kind::VolumeAttachment, None)
        .0
        .iter()
        .filter(|s| s.may_have("nodeName", node))
        .any(|s| match &s.object() {
            AnyObject::VolumeAttachment(va) => {
                va.spec.node_name == node
                    && va.spec.source.persistent_volume_name.as_deref()
                        == Some(volume.key.name.as_str())
            }
            _ => false,
        })
}

/// Events in `ns` about objects in `ns` (not about cluster-scoped objects filed there).
fn own_events(ns: &str) -> Visibility {
    let ns = ns.to_string();
    Visibility::Only(Arc::new(move |s| {
        s.key.namespace == ns
            && match &s.object() {
                AnyObject::Event(e) => e.involved_object.namespace.as_deref() == Some(ns.as_str()),
                _ => false,
            }
    }))
}

/// The writer's own restrictions on what a write may store, beyond which objects it may touch:
/// checked by the registry on the object as it would be stored, after every patch. `None`
/// when the role has none.
pub fn guard(identity: &Identity, target: &Target, graph: &Store) -> Option<Guard> {
    match (&identity.role, target.kind) {
        (Role::Node(node), Kind::Node) => {
            let node = node.clone();
            Some(Guard(Arc::new(move |old, new| {
                node_restriction(&node, old, new)
            })))
        }
        (Role::Node(node), Kind::PersistentVolume) => {
            let (node, graph) = (node.clone(), graph.clone());
            Some(Guard(Arc::new(move |old, new| {
                node_volume(&graph, &node, old, new)
            })))
        }
        (Role::Node(node), Kind::PersistentVolumeClaim) => {
            let node = node.clone();
            Some(Guard(Arc::new(move |old, new| {
                node_claim_status(&node, old, new)
            })))
        }
        (Role::Node(node), Kind::Event) => {
            let (node, graph) = (node.clone(), graph.clone());
            Some(Guard(Arc::new(move |_, new| {
                node_event(&graph, &node, new)
            })))
        }
        // A node-local snapshot's content: the node records what it did (annotations,
        // finalizers, status), never what is to be done.
        (Role::Node(node), Kind::VolumeSnapshotContent) => {
            let node = node.clone();
            Some(Guard(Arc::new(move |old, new| match (old, new) {
                (
                    Some(AnyObject::VolumeSnapshotContent(o)),
                    AnyObject::VolumeSnapshotContent(n),
                ) if o.spec == n.spec
                    && o.metadata.labels == n.metadata.labels
                    && crate::controllers::snapshots::contents::node_of(n)
                        == Some(node.as_str())
                    && node_content_meta_ok(&o.metadata, &n.metadata) =>
                {
                    Ok(())
                }
                _ => Err(ApiError::forbidden(format!(
                    "node \"{node}\" may only record the progress of snapshots labelled {}={node}",
                    names::labels::SNAPSHOT_MANAGED_BY
                ))),
            })))
        }
        // What a node publishes stays its own after every patch.
        (Role::Node(node), Kind::CSIStorageCapacity) => {
            let (node, graph) = (node.clone(), graph.clone());
            Some(Guard(Arc::new(move |_, new| match new {
                AnyObject::CSIStorageCapacity(c)
                    if !published_by(c, &node) || !capacity_of_own_class(&graph, c, &node) =>
                {
                    Err(ApiError::forbidden(format!(
                        "node \"{node}\" may only publish capacity labelled {}={} whose topology is its own {}, one per class of a provider it runs, named as its agent names it",
                        crate::controllers::capacity::MANAGED_BY_LABEL,
                        crate::controllers::capacity::NODE_MANAGED_BY,
                        names::node::HOSTNAME_LABEL
                    )))
                }
                _ => Ok(()),
            })))
        }
        (Role::Namespace(ns), Kind::Event) => {
            let ns = ns.clone();
            Some(Guard(Arc::new(move |_, new| tenant_event(&ns, new))))
        }
        _ => None,
    }
}

/// Kubernetes' NodeRestriction for a node's own Node: it registers with its labels, but may
/// not change its taints, its providerID, or the labels that place or size it afterwards, and
/// may never declare itself out of service or set its own attach limits.
fn node_restriction(node: &str, old: Option<&AnyObject>, new: &AnyObject) -> Result<(), ApiError> {
    let AnyObject::Node(n) = new else {
        return Ok(());
    };
    let refuse = |what: &str| {
        Err(ApiError::forbidden(format!(
            "node \"{node}\" is not allowed to {what}; an admin token can"
        )))
    };
    let taints = |n: &Node| {
        n.spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default()
    };
    let provider_id = |n: &Node| n.spec.as_ref().and_then(|s| s.provider_id.clone());
    let protected = |n: &Node| -> Vec<(String, String)> {
        let m = &n.metadata;
        m.labels
            .iter()
            .flatten()
            .chain(m.annotations.iter().flatten())
            .filter(|(k, _)| names::node::is_protected_key(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let limits = |n: &Node| -> Vec<(String, String)> {
        protected(n)
            .into_iter()
            .filter(|(k, _)| k.starts_with(names::node::MAX_ATTACHMENTS_ANNOTATION))
            .collect()
    };
    match old {
        None => {
            if taints(n)
                .iter()
                .any(|t| t.key == names::node::OUT_OF_SERVICE_TAINT)
            {
                return refuse("declare itself out of service");
            }
            if !limits(n).is_empty() {
                return refuse("set its own attach limits");
            }
            Ok(())
        }
        Some(AnyObject::Node(o)) => {
            if taints(n) != taints(o) {
                return refuse("modify its taints");
            }
            if provider_id(o).is_some_and(|p| !p.is_empty()) && provider_id(n) != provider_id(o) {
                return refuse("modify its providerID");
            }
            if protected(n) != protected(o) {
                return refuse("modify its topology labels or attach limits");
            }
            Ok(())
        }
        Some(_) => Ok(()),
    }
}

/// A tenant may file events only about objects in its own namespace: an event about a volume
/// or a node would put words in the server's mouth that other tenants' tools print.
fn tenant_event(ns: &str, new: &AnyObject) -> Result<(), ApiError> {
    let AnyObject::Event(e) = new else {
        return Ok(());
    };
    let about_own = |r: &k8s_openapi::api::core::v1::ObjectReference| {
        let kind = r.kind.as_deref().unwrap_or_default();
        let cluster_scoped = kind == "Namespace"
            || crate::resources::kind_by_any_name(kind).is_some_and(|k| !k.info().namespaced);
        r.namespace.as_deref() == Some(ns) && !cluster_scoped
    };
    if !about_own(&e.involved_object) || e.related.as_ref().is_some_and(|r| !about_own(r)) {
        return Err(ApiError::forbidden(format!(
            "events in namespace \"{ns}\" may only be about namespaced objects in namespace \"{ns}\" (involvedObject)"
        )));
    }
    Ok(())
}

/// A node files events about itself and about the pods scheduled to it, nothing else.
fn node_event(graph: &Store, node: &str, new: &AnyObject) -> Result<(), ApiError> {
    let AnyObject::Event(e) = new else {
        return Ok(());
    };
    let r = &e.involved_object;
    let allowed = match r.kind.as_deref() {
        Some("Node") => r.name.as_deref() == Some(node),
        Some("Pod") => {
            let ns = r.namespace.as_deref().unwrap_or_default();
            e.metadata.namespace.as_deref() == Some(ns)
                && graph
                    .get_typed::<Pod>(ns, r.name.as_deref().unwrap_or_default())
                    .is_some_and(|p| pod::node_name(&p.typed::<Pod>()) == Some(node))
        }
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "node \"{node}\" may only file events about itself and the pods scheduled to it"
        )))
    }
}

/// Which namespaces a caller may see (namespaces are not stored objects; see `api`).
pub enum Namespaces {
    All,
    Only(String),
    None,
}

impl Namespaces {
    pub fn admits(&self, ns: &str) -> bool {
        match self {
            Namespaces::All => true,
            Namespaces::Only(own) => own == ns,
            Namespaces::None => false,
        }
    }
}

/// Decides a request on `/api/v1/namespaces`: anyone reads the namespaces they may use
/// (admins and viewers all, a tenant its own, a node none); only admins "create" them.
pub fn authorize_namespaces(identity: &Identity, read: bool) -> Result<Namespaces, ApiError> {
    if !read && identity.role != Role::Admin {
        return Err(ApiError::forbidden(
            "only admin tokens may create namespaces",
        ));
    }
    Ok(match &identity.role {
        Role::Admin | Role::Viewer => Namespaces::All,
        Role::Namespace(own) => Namespaces::Only(own.clone()),
        Role::Node(_) => Namespaces::None,
    })
}

/// Discovery, OpenAPI and namespaces: any authenticated caller may read them.
pub fn may_discover(_identity: &Identity) -> bool {
    true
}

/// Token management and metrics: admins only (viewers may read metrics).
pub fn is_admin(identity: &Identity) -> bool {
    identity.role == Role::Admin
}

/// Per-token request rate (token bucket) and concurrent watches.
pub struct Limits {
    rate_per_second: f64,
    burst: f64,
    max_watches: usize,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
    watches: Mutex<HashMap<String, usize>>,
}

impl Limits {
    pub fn new(rate_per_second: f64, max_watches: usize) -> Self {
        Limits {
            rate_per_second,
            burst: (rate_per_second * 2.0).max(1.0),
            max_watches,
            buckets: Mutex::new(HashMap::new()),
            watches: Mutex::new(HashMap::new()),
        }
    }

    /// No limits at all.
    pub fn unlimited() -> Self {
        Limits::new(0.0, usize::MAX)
    }

    /// Takes one request from the token's bucket; on refusal, the seconds until one is free.
    pub fn take(&self, token: &str) -> Result<(), u64> {
        if self.rate_per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        let (tokens, last) = buckets
            .entry(token.to_string())
            .or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate_per_second)
            .min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.rate_per_second).ceil().max(1.0) as u64)
        }
    }

    /// Counts a watch against its token; `None` if the token has too many open.
    pub fn open_watch(self: &Arc<Self>, token: &str) -> Option<WatchSlot> {
        let mut w = self.watches.lock();
        let n = w.entry(token.to_string()).or_insert(0);
        if *n >= self.max_watches {
            return None;
        }
        *n += 1;
        Some(WatchSlot {
            limits: self.clone(),
            token: token.to_string(),
        })
    }
}

/// An open watch, counted until dropped.
pub struct WatchSlot {
    limits: Arc<Limits>,
    token: String,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        if let Some(n) = self.limits.watches.lock().get_mut(&self.token) {
            *n = n.saturating_sub(1);
        }
    }
}

/// Authentication and limits, as the API uses them.
pub struct Auth {
    pub tokens: Tokens,
    /// Limits for every token but admins'.
    pub limits: Arc<Limits>,
    /// Limits for admin tokens (by default: none).
    pub admin_limits: Arc<Limits>,
    /// Limits for node tokens: higher than tenants', as Kubernetes' API Priority and Fairness
    /// gives nodes the `system` level. A node agent reads every claim and volume its pods use.
    pub node_limits: Arc<Limits>,
    /// Serve `/metrics` without a token.
    pub metrics_public: bool,
}

impl Auth {
    /// `/metrics`: admin and viewer tokens, or anyone with `--metrics-public`.
    pub fn authorize_metrics(&self, identity: Option<&Identity>) -> Result<(), ApiError> {
        let allowed = self.metrics_public
            || identity.is_some_and(|i| matches!(i.role, Role::Admin | Role::Viewer));
        if allowed {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "metrics are readable by admin and viewer tokens only",
            ))
        }
    }

    pub fn limits_for(&self, identity: &Identity) -> &Arc<Limits> {
        match identity.role {
            Role::Admin => &self.admin_limits,
            Role::Node(_) => &self.node_limits,
            Role::Viewer | Role::Namespace(_) => &self.limits,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(role: &str) -> Identity {
        Identity {
            token_id: "t".into(),
            name: "tester".into(),
            role: role.parse().unwrap(),
            expires_at: None,
        }
    }

    fn target(kind: Kind, ns: Option<&str>, name: Option<&str>) -> Target {
        Target {
            kind,
            namespace: ns.map(str::to_string),
            name: name.map(str::to_string),
            subresource: None,
        }
    }

    #[test]
    fn roles_parse_and_print() {
        for r in ["admin", "viewer", "namespace:team-a", "node:node-1.example"] {
            assert_eq!(r.parse::<Role>().unwrap().to_string(), r);
        }
        for bad in ["root", "namespace:", "namespace:Bad_Ns", "node:", ""] {
            assert!(bad.parse::<Role>().is_err(), "{bad}");
        }
    }

    async fn graph() -> Store {
        Store::in_memory(Default::default()).await
    }

    #[tokio::test]
    async fn viewers_read_everything_and_write_nothing() {
        let g = graph().await;
        let authorize = |i: &Identity, v: Verb, t: &Target| super::authorize(i, v, t, &g);
        let v = who("viewer");
        assert!(authorize(&v, Verb::List, &target(Kind::PersistentVolume, None, None)).is_ok());
        assert_eq!(
            authorize(
                &v,
                Verb::Delete,
                &target(Kind::PersistentVolume, None, Some("x"))
            )
            .err()
            .unwrap()
            .code,
            403
        );
    }

    #[tokio::test]
    async fn namespace_tokens_stay_in_their_namespace() {
        let g = graph().await;
        let authorize = |i: &Identity, v: Verb, t: &Target| super::authorize(i, v, t, &g);
        let t = who("namespace:a");
        assert!(
            authorize(
                &t,
                Verb::Create,
                &target(Kind::PersistentVolumeClaim, Some("a"), None)
            )
            .is_ok()
        );
        assert_eq!(
            authorize(
                &t,
                Verb::Get,
                &target(Kind::PersistentVolumeClaim, Some("b"), Some("x"))
            )
            .err()
            .unwrap()
            .code,
            403
        );
        assert!(matches!(
            authorize(&t, Verb::List, &target(Kind::Pod, None, None)),
            Ok(Visibility::Only(_))
        ));
        assert!(authorize(&t, Verb::List, &target(Kind::StorageClass, None, None)).is_ok());
        assert!(authorize(&t, Verb::Create, &target(Kind::StorageClass, None, None)).is_err());
        assert!(
            authorize(
                &t,
                Verb::Get,
                &target(Kind::PersistentVolume, None, Some("x"))
            )
            .is_err()
        );
    }

    #[test]
    fn a_volume_is_pinned_to_a_node_only_if_every_term_requires_that_node_alone() {
        let pv = |terms: serde_json::Value| -> crate::resources::PersistentVolume {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "v"},
                "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": terms}}}
            }))
            .unwrap()
        };
        let host = |op: &str, values: &[&str]| {
            serde_json::json!({"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": op, "values": values}]})
        };
        assert!(volume_pinned_to(
            &pv(serde_json::json!([host("In", &["n1"])])),
            "n1"
        ));
        assert!(!volume_pinned_to(
            &pv(serde_json::json!([host("In", &["n1"])])),
            "n2"
        ));
        assert!(!volume_pinned_to(
            &pv(serde_json::json!([host("In", &["n1", "n2"])])),
            "n1"
        ));
        assert!(!volume_pinned_to(
            &pv(serde_json::json!([host("NotIn", &["n2"])])),
            "n1"
        ));
        // A second term reaching another node makes it reachable elsewhere.
        assert!(!volume_pinned_to(
            &pv(
                serde_json::json!([host("In", &["n1"]), {"matchExpressions": [
                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["z"]}]}])
            ),
            "n1"
        ));
        assert!(!volume_pinned_to(&pv(serde_json::json!([])), "n1"));
    }

    #[test]
    fn a_node_reports_capacity_and_conditions_of_a_claim_but_not_its_attribute_classes() {
        let claim = |status: serde_json::Value| {
            let c: crate::resources::PersistentVolumeClaim = serde_json::from_value(
                serde_json::json!({"metadata": {"name": "c", "namespace": "a"}, "spec": {}, "status": status}),
            )
            .unwrap();
            AnyObject::PersistentVolumeClaim(Box::new(c))
        };
        let old = claim(
            serde_json::json!({"phase": "Bound", "capacity": {"storage": "1Gi"},
            "currentVolumeAttributesClassName": "gold"}),
        );
        let grown = claim(
            serde_json::json!({"phase": "Bound", "capacity": {"storage": "2Gi"},
            "currentVolumeAttributesClassName": "gold", "conditions": [],
            "allocatedResourceStatuses": {}}),
        );
        assert!(node_claim_status("n1", Some(&old), &grown).is_ok());
        for forged in [
            serde_json::json!({"phase": "Bound", "capacity": {"storage": "1Gi"},
                "currentVolumeAttributesClassName": "platinum"}),
            serde_json::json!({"phase": "Bound", "capacity": {"storage": "1Gi"},
                "currentVolumeAttributesClassName": "gold",
                "modifyVolumeStatus": {"targetVolumeAttributesClassName": "x", "status": "Pending"}}),
            serde_json::json!({"phase": "Lost", "capacity": {"storage": "1Gi"},
                "currentVolumeAttributesClassName": "gold"}),
        ] {
            let e = node_claim_status("n1", Some(&old), &claim(forged.clone())).unwrap_err();
            assert_eq!(e.code, 403, "{forged}");
        }
    }

    #[test]
    fn rate_limits_refuse_with_a_retry_hint() {
        let l = Limits::new(1.0, 1);
        assert!(l.take("a").is_ok());
        assert!(l.take("a").is_ok());
        assert_eq!(l.take("a"), Err(1));
        assert!(l.take("b").is_ok(), "buckets are per token");
    }
}
