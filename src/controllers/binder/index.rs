//! The binder's indexes, kept current from the change feed.
//!
//! - Available volumes, grouped by (class, volume mode) and then by their exact set of access
//!   modes, each group ordered by capacity. A claim's best match is a range query per access
//!   mode superset (at most 15 of them): `O(log n)` per claim, where Kubernetes scans every
//!   volume for every claim.
//! - Waiting claims, grouped the same way and ordered by request, then by how long they have
//!   waited, so a volume that becomes Available wakes the claims it can serve at once, the
//!   longest waiting first among equal requests.
//! - Claims by the volume they name, volumes pre-bound to a claim, and claims by consuming pod.
//!
//! The indexes may lag the store by a moment; the binder re-checks every choice against the
//! store before writing, and the write's preconditions make a stale choice fail harmlessly.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;

use k8s_openapi::api::core::v1::NodeSelector;

use crate::machinery::labels::Selector;
use crate::machinery::validation::{FieldErrors, Path};
use crate::resources::{PersistentVolume, PersistentVolumeClaim, Pod, pod, pv, pvc};
use crate::runtime::FewSet;
use crate::store::ObjectKey;

/// Access modes as a bit set: RWO=1, ROX=2, RWX=4, RWOP=8.
pub type ModeSet = u8;

pub fn mode_set(modes: Option<&Vec<String>>) -> ModeSet {
    modes
        .into_iter()
        .flatten()
        .map(|m| match m.as_str() {
            "ReadWriteOnce" => 1,
            "ReadOnlyMany" => 2,
            "ReadWriteMany" => 4,
            "ReadWriteOncePod" => 8,
            _ => 0,
        })
        .fold(0, |a, b| a | b)
}

/// (storage class, volume mode, volume attributes class): volumes only ever match claims of
/// the same group. As in Kubernetes, a claim's `volumeAttributesClassName` must be the
/// volume's (none matches none).
pub type Group = (String, String, String);

fn volume_group(v: &PersistentVolume) -> Group {
    let spec = v.spec.as_ref();
    (
        spec.and_then(|s| s.storage_class_name.clone())
            .unwrap_or_default(),
        spec.and_then(|s| s.volume_mode.clone())
            .unwrap_or_else(|| "Filesystem".into()),
        spec.and_then(|s| s.volume_attributes_class_name.clone())
            .unwrap_or_default(),
    )
}

pub fn claim_group(c: &PersistentVolumeClaim) -> Group {
    let spec = c.spec.as_ref();
    (
        spec.and_then(|s| s.storage_class_name.clone())
            .unwrap_or_default(),
        spec.and_then(|s| s.volume_mode.clone())
            .unwrap_or_else(|| "Filesystem".into()),
        spec.and_then(|s| s.volume_attributes_class_name.clone())
            .unwrap_or_default(),
    )
}

/// What a claim needs from a volume.
pub struct Needs {
    pub group: Group,
    pub modes: ModeSet,
    pub bytes: i64,
    pub selector: Option<Selector>,
}

impl Needs {
    pub fn of(c: &PersistentVolumeClaim) -> Needs {
        let spec = c.spec.as_ref();
        let selector = spec.and_then(|s| s.selector.as_ref()).map(|sel| {
            Selector::from_label_selector(sel, &Path::default(), &mut FieldErrors::new())
        });
        Needs {
            group: claim_group(c),
            modes: mode_set(spec.and_then(|s| s.access_modes.as_ref())),
            bytes: pvc::request_bytes(c).unwrap_or(i64::MAX),
            selector,
        }
    }

    /// Whether `v` satisfies these needs (class, mode, size, selector); node affinity aside.
    pub fn satisfied_by(&self, v: &PersistentVolume) -> bool {
        volume_group(v) == self.group
            && mode_set(v.spec.as_ref().and_then(|s| s.access_modes.as_ref())) & self.modes
                == self.modes
            && pv::capacity_bytes(v).is_some_and(|c| c >= self.bytes)
            && self
                .selector
                .as_ref()
                .is_none_or(|s| s.matches_opt(v.metadata.labels.as_ref()))
    }
}

struct VolumeEntry {
    group: Group,
    modes: ModeSet,
    bytes: i64,
    labels: BTreeMap<String, String>,
    affinity: Option<NodeSelector>,
}

struct ClaimEntry {
    group: Group,
    bytes: i64,
    /// When it began to wait, as a count of claims the index has seen wait. As the index
    /// knows it: after the binder relists, claims wait again from when they were listed.
    since: u64,
}

/// A waiting claim's place: by request, then the longest waiting first (hence the reverse).
/// Placed by numbers, not by the claim's key: a new claim goes to the same end of its run of
/// equal requests, a path through the tree that stays in cache, where ordering by key searched
/// a tree of every waiting claim comparing keys (3% of the server's CPU under a load of
/// creates that never bind).
type WaitingPlace = (i64, Reverse<u64>);

#[derive(Default)]
pub struct Index {
    /// Group → access-mode set → (capacity, name) of available volumes.
    available: HashMap<Group, BTreeMap<ModeSet, BTreeSet<(i64, String)>>>,
    volumes: HashMap<String, VolumeEntry>,
    /// Volumes handed to a bind in progress; not offered again until released.
    reserved: HashSet<String>,
    /// Group → claims waiting for a volume, by their place.
    waiting: HashMap<Group, BTreeMap<WaitingPlace, ObjectKey>>,
    claims: HashMap<ObjectKey, ClaimEntry>,
    /// The next [`ClaimEntry::since`].
    next_since: u64,
    /// Volume name → claims whose `spec.volumeName` names it.
    claims_naming: HashMap<String, FewSet<ObjectKey>>,
    claim_naming: HashMap<ObjectKey, String>,
    /// Claim → volumes whose `claimRef` names it (pre-bound by an admin).
    prebound: HashMap<ObjectKey, FewSet<String>>,
    prebound_of: HashMap<String, ObjectKey>,
    /// Claim → pods (by name) in its namespace using it.
    pods_of_claim: HashMap<ObjectKey, FewSet<String>>,
    claims_of_pod: HashMap<ObjectKey, Vec<ObjectKey>>,
}

/// A volume is offered for matching when nothing claims it and it is not being released.
fn available(v: &PersistentVolume) -> bool {
    v.metadata.deletion_timestamp.is_none()
        && v.spec.as_ref().is_some_and(|s| s.claim_ref.is_none())
        && matches!(
            pv::phase(v),
            None | Some(pv::Phase::Pending | pv::Phase::Available)
        )
}

impl Index {
    pub fn clear(&mut self) {
        *self = Index::default();
    }

    pub fn upsert_volume(&mut self, name: &str, v: &PersistentVolume) {
        self.remove_volume(name);
        // Pre-bound by name (an admin), or to the claim's uid (a volume an outside provisioner,
        // such as a node agent, made for the claim): the claim's sync binds it.
        if let Some(claim) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref())
            && v.metadata.deletion_timestamp.is_none()
            && v.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound")
        {
            let key = ObjectKey::new(
                claim.namespace.clone().unwrap_or_default(),
                claim.name.clone().unwrap_or_default(),
            );
            self.prebound
                .entry(key.clone())
                .or_default()
                .insert(name.to_string());
            self.prebound_of.insert(name.to_string(), key);
        }
        if !available(v) {
            return;
        }
        let entry = VolumeEntry {
            group: volume_group(v),
            modes: mode_set(v.spec.as_ref().and_then(|s| s.access_modes.as_ref())),
            bytes: pv::capacity_bytes(v).unwrap_or(0),
            labels: v.metadata.labels.clone().unwrap_or_default(),
            affinity: v
                .spec
                .as_ref()
                .and_then(|s| s.node_affinity.as_ref())
                .and_then(|a| a.required.clone()),
        };
        self.available
            .entry(entry.group.clone())
            .or_default()
            .entry(entry.modes)
            .or_default()
            .insert((entry.bytes, name.to_string()));
        self.volumes.insert(name.to_string(), entry);
    }

    pub fn remove_volume(&mut self, name: &str) {
        if let Some(e) = self.volumes.remove(name)
            && let Some(by_modes) = self.available.get_mut(&e.group)
            && let Some(set) = by_modes.get_mut(&e.modes)
        {
            set.remove(&(e.bytes, name.to_string()));
        }
        self.reserved.remove(name);
        if let Some(claim) = self.prebound_of.remove(name)
            && let Some(set) = self.prebound.get_mut(&claim)
        {
            set.remove(name);
            if set.is_empty() {
                self.prebound.remove(&claim);
            }
        }
    }

    pub fn is_available(&self, name: &str) -> bool {
        self.volumes.contains_key(name)
    }

    pub fn upsert_claim(&mut self, key: &ObjectKey, c: &PersistentVolumeClaim) {
        // A claim that was waiting and still is keeps its place in the queue.
        let since = self.forget_claim(key);
        let volume_name = c
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .filter(|n| !n.is_empty());
        if let Some(v) = volume_name {
            self.claims_naming
                .entry(v.clone())
                .or_default()
                .insert(key.clone());
            self.claim_naming.insert(key.clone(), v);
            return;
        }
        if c.metadata.deletion_timestamp.is_some() {
            return;
        }
        let since = since.unwrap_or_else(|| {
            self.next_since += 1;
            self.next_since
        });
        let entry = ClaimEntry {
            group: claim_group(c),
            bytes: pvc::request_bytes(c).unwrap_or(i64::MAX),
            since,
        };
        // Looked up before `entry`, which would clone the group on every upsert.
        let place = (entry.bytes, Reverse(since));
        match self.waiting.get_mut(&entry.group) {
            Some(queue) => {
                queue.insert(place, key.clone());
            }
            None => {
                let queue = BTreeMap::from([(place, key.clone())]);
                self.waiting.insert(entry.group.clone(), queue);
            }
        }
        self.claims.insert(key.clone(), entry);
    }

    pub fn remove_claim(&mut self, key: &ObjectKey) {
        self.forget_claim(key);
    }

    /// Forgets a claim; returns since when it was waiting, if it was.
    fn forget_claim(&mut self, key: &ObjectKey) -> Option<u64> {
        let mut since = None;
        if let Some(e) = self.claims.remove(key) {
            since = Some(e.since);
            if let Some(queue) = self.waiting.get_mut(&e.group) {
                queue.remove(&(e.bytes, Reverse(e.since)));
                if queue.is_empty() {
                    self.waiting.remove(&e.group);
                }
            }
        }
        if let Some(v) = self.claim_naming.remove(key)
            && let Some(set) = self.claims_naming.get_mut(&v)
        {
            set.remove(key);
            if set.is_empty() {
                self.claims_naming.remove(&v);
            }
        }
        since
    }

    pub fn upsert_pod(&mut self, key: &ObjectKey, p: &Pod) {
        self.remove_pod(key);
        let claims: Vec<ObjectKey> = pod::claim_names(p)
            .map(|c| ObjectKey::new(key.namespace.clone(), c))
            .collect();
        for c in &claims {
            self.pods_of_claim
                .entry(c.clone())
                .or_default()
                .insert(key.name.to_string());
        }
        self.claims_of_pod.insert(key.clone(), claims);
    }

    pub fn remove_pod(&mut self, key: &ObjectKey) {
        for c in self.claims_of_pod.remove(key).unwrap_or_default() {
            if let Some(set) = self.pods_of_claim.get_mut(&c) {
                set.remove(key.name.as_str());
                if set.is_empty() {
                    self.pods_of_claim.remove(&c);
                }
            }
        }
    }

    /// The smallest available volume that satisfies `needs` and, when `node` is given, whose
    /// node affinity admits that node. The chosen volume is reserved; release it if the bind
    /// does not happen.
    pub fn take_best(
        &mut self,
        needs: &Needs,
        node: Option<(&str, &BTreeMap<String, String>)>,
    ) -> Option<String> {
        let by_modes = self.available.get(&needs.group)?;
        let mut best: Option<(i64, &String)> = None;
        for (modes, set) in by_modes {
            if modes & needs.modes != needs.modes {
                continue;
            }
            let start = (needs.bytes, String::new());
            for (bytes, name) in set.range((Bound::Included(&start), Bound::Unbounded)) {
                if best.is_some_and(|(b, _)| *bytes >= b) {
                    break;
                }
                if self.reserved.contains(name) {
                    continue;
                }
                let entry = &self.volumes[name];
                if let Some(sel) = &needs.selector
                    && !sel.matches(&entry.labels)
                {
                    continue;
                }
                if let (Some((node_name, labels)), Some(affinity)) = (node, &entry.affinity)
                    && !crate::resources::node::selector_admits(affinity, node_name, labels)
                {
                    continue;
                }
                best = Some((*bytes, name));
                break;
            }
        }
        let name = best.map(|(_, n)| n.clone())?;
        self.reserved.insert(name.clone());
        Some(name)
    }

    pub fn release(&mut self, name: &str) {
        self.reserved.remove(name);
    }

    /// Up to `limit` waiting claims an available volume could serve, largest request first
    /// (the best fit from the volume's side), then the longest waiting.
    pub fn claims_for_volume(&self, name: &str, limit: usize) -> Vec<ObjectKey> {
        let Some(e) = self.volumes.get(name) else {
            return Vec::new();
        };
        let Some(queue) = self.waiting.get(&e.group) else {
            return Vec::new();
        };
        // Every place of a request up to the volume's size, the longest waiting first.
        let end: WaitingPlace = (e.bytes, Reverse(0));
        queue
            .range((Bound::Unbounded, Bound::Included(&end)))
            .rev()
            .take(limit)
            .map(|(_, k)| k.clone())
            .collect()
    }

    /// Waiting claims of a class (when the class appears or changes), in each group the
    /// largest request first, then the longest waiting.
    pub fn claims_of_class(&self, class: &str, limit: usize) -> Vec<ObjectKey> {
        self.waiting
            .iter()
            .filter(|((c, _, _), _)| c == class)
            .flat_map(|(_, queue)| queue.values().rev().cloned())
            .take(limit)
            .collect()
    }

    pub fn claims_naming(&self, volume: &str) -> Vec<ObjectKey> {
        self.claims_naming
            .get(volume)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn prebound_for(&self, claim: &ObjectKey) -> Vec<String> {
        self.prebound
            .get(claim)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn pods_using(&self, claim: &ObjectKey) -> Vec<String> {
        self.pods_of_claim
            .get(claim)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn claims_of_pod(&self, pod: &ObjectKey) -> Vec<ObjectKey> {
        self.claims_of_pod.get(pod).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        PersistentVolumeClaimSpec, PersistentVolumeSpec, VolumeResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn volume(class: &str, modes: &[&str], size: &str) -> PersistentVolume {
        PersistentVolume {
            spec: Some(PersistentVolumeSpec {
                storage_class_name: Some(class.into()),
                access_modes: Some(modes.iter().map(|m| m.to_string()).collect()),
                capacity: Some(BTreeMap::from([("storage".into(), Quantity(size.into()))])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn claim(class: &str, modes: &[&str], size: &str) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: Some(class.into()),
                access_modes: Some(modes.iter().map(|m| m.to_string()).collect()),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([("storage".into(), Quantity(size.into()))])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_smallest_fitting_volume_wins_across_mode_sets() {
        let mut i = Index::default();
        i.upsert_volume("big", &volume("fast", &["ReadWriteOnce"], "10Gi"));
        i.upsert_volume(
            "snug",
            &volume("fast", &["ReadWriteOnce", "ReadWriteMany"], "5Gi"),
        );
        i.upsert_volume("tiny", &volume("fast", &["ReadWriteOnce"], "1Gi"));
        i.upsert_volume("other-class", &volume("slow", &["ReadWriteOnce"], "5Gi"));
        let needs = Needs::of(&claim("fast", &["ReadWriteOnce"], "4Gi"));
        assert_eq!(i.take_best(&needs, None).as_deref(), Some("snug"));
        // Reserved volumes are not offered twice.
        assert_eq!(i.take_best(&needs, None).as_deref(), Some("big"));
        assert_eq!(i.take_best(&needs, None), None);
    }

    #[test]
    fn access_modes_must_be_a_superset() {
        let mut i = Index::default();
        i.upsert_volume("rwo", &volume("", &["ReadWriteOnce"], "1Gi"));
        let needs = Needs::of(&claim("", &["ReadWriteMany"], "1Gi"));
        assert_eq!(i.take_best(&needs, None), None);
        i.upsert_volume(
            "rwx",
            &volume("", &["ReadWriteMany", "ReadWriteOnce"], "1Gi"),
        );
        assert_eq!(i.take_best(&needs, None).as_deref(), Some("rwx"));
    }

    #[test]
    fn claimed_volumes_leave_the_index() {
        let mut i = Index::default();
        let mut v = volume("", &["ReadWriteOnce"], "1Gi");
        i.upsert_volume("v", &v);
        assert!(i.is_available("v"));
        v.spec.as_mut().unwrap().claim_ref = Some(Default::default());
        i.upsert_volume("v", &v);
        assert!(!i.is_available("v"));
    }

    #[test]
    fn a_new_volume_finds_the_largest_waiting_claim_it_fits() {
        let mut i = Index::default();
        for (n, size) in [("a", "1Gi"), ("b", "5Gi"), ("c", "20Gi")] {
            i.upsert_claim(
                &ObjectKey::new("ns", n),
                &claim("", &["ReadWriteOnce"], size),
            );
        }
        i.upsert_volume("v", &volume("", &["ReadWriteOnce"], "8Gi"));
        let woken: Vec<String> = i
            .claims_for_volume("v", 8)
            .into_iter()
            .map(|k| k.name.to_string())
            .collect();
        assert_eq!(woken, vec!["b", "a"]);
    }

    #[test]
    fn among_equal_requests_the_longest_waiting_claim_is_woken_first() {
        let mut i = Index::default();
        let want = |c: &str| claim("", &["ReadWriteOnce"], c);
        let woken = |i: &Index, limit| -> Vec<String> {
            i.claims_for_volume("v", limit)
                .into_iter()
                .map(|k| k.name.to_string())
                .collect()
        };
        // Created in an order unlike their names'.
        for n in ["m", "z", "a", "q"] {
            i.upsert_claim(&ObjectKey::new("ns", n), &want("1Gi"));
        }
        // A change that leaves "m" waiting keeps its place; "z" stops waiting (bound by name
        // elsewhere) and comes back last.
        let mut m = want("1Gi");
        m.metadata.labels = Some([("changed".to_string(), "yes".to_string())].into());
        i.upsert_claim(&ObjectKey::new("ns", "m"), &m);
        let mut named = want("1Gi");
        named.spec.as_mut().unwrap().volume_name = Some("elsewhere".into());
        i.upsert_claim(&ObjectKey::new("ns", "z"), &named);
        i.upsert_claim(&ObjectKey::new("ns", "z"), &want("1Gi"));
        // A larger request still comes before all of them.
        i.upsert_claim(&ObjectKey::new("ns", "big"), &want("2Gi"));
        i.upsert_volume("v", &volume("", &["ReadWriteOnce"], "8Gi"));
        assert_eq!(woken(&i, 8), vec!["big", "m", "a", "q", "z"]);
        assert_eq!(woken(&i, 2), vec!["big", "m"]);
        let of_class: Vec<String> = i
            .claims_of_class("", 8)
            .into_iter()
            .map(|k| k.name.to_string())
            .collect();
        assert_eq!(of_class, vec!["big", "m", "a", "q", "z"]);
        // A request that grows past the volume leaves its place; back within it, it is where
        // its wait began, not last. A volume exactly the size of a request serves it.
        i.upsert_claim(&ObjectKey::new("ns", "a"), &want("9Gi"));
        assert_eq!(woken(&i, 8), vec!["big", "m", "q", "z"]);
        i.upsert_claim(&ObjectKey::new("ns", "a"), &want("1Gi"));
        assert_eq!(woken(&i, 8), vec!["big", "m", "a", "q", "z"]);
        i.upsert_volume("v", &volume("", &["ReadWriteOnce"], "1Gi"));
        assert_eq!(woken(&i, 8), vec!["m", "a", "q", "z"]);
        // A claim moved to another class leaves this group's queue.
        i.upsert_claim(
            &ObjectKey::new("ns", "q"),
            &claim("fast", &["ReadWriteOnce"], "1Gi"),
        );
        assert_eq!(woken(&i, 8), vec!["m", "a", "z"]);
        assert_eq!(
            i.claims_of_class("fast", 8),
            vec![ObjectKey::new("ns", "q")]
        );
        // Deleted claims leave the queue, and an empty queue leaves the index.
        for n in ["m", "a", "q", "z", "big"] {
            i.remove_claim(&ObjectKey::new("ns", n));
        }
        assert!(woken(&i, 8).is_empty());
        assert!(i.waiting.is_empty());
    }
}
