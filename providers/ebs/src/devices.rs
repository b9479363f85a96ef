//! Which device names are in use on which instance, and how many volumes an instance may have.
//!
//! Device names are allocated here, per instance, under one lock: two concurrent attaches to
//! one instance never get the same name (EC2 emulators do not even check). A name whose attach
//! failed is held back for a while rather than handed out again at once, in case the failure
//! was the name itself (AWS refuses names still in use by a detaching volume).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// `/dev/xvdaa` … `/dev/xvdbz`: the names the AWS EBS CSI driver uses too, clear of the root
/// device and of instance-store names.
pub fn all_names() -> impl Iterator<Item = String> {
    ['a', 'b']
        .into_iter()
        .flat_map(|first| ('a'..='z').map(move |second| format!("/dev/xvd{first}{second}")))
}

/// How long a name whose attach failed is not handed out again.
const QUARANTINE: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Instance {
    /// Volume id → device name, for volumes attached or being attached under our names; these
    /// count against the instance's limit.
    used: HashMap<String, String>,
    /// Names taken by devices outside our range (the root volume): they block the name but do
    /// not count, as the per-instance limits already leave room for the root volume.
    foreign: BTreeSet<String>,
    quarantined: HashMap<String, Instant>,
}

#[derive(Default)]
pub struct Devices {
    instances: Mutex<HashMap<String, Instance>>,
}

impl Devices {
    /// Whether the instance's existing devices have been recorded.
    pub fn knows(&self, instance: &str) -> bool {
        self.instances.lock().contains_key(instance)
    }

    /// Records an instance's devices as EC2 reports them (volume id, device name): names in
    /// our range are volumes we attached (before a restart, say); others are the instance's own.
    pub fn learn(&self, instance: &str, devices: Vec<(String, String)>) {
        let ours: BTreeSet<String> = all_names().collect();
        let mut all = self.instances.lock();
        let i = all.entry(instance.to_string()).or_default();
        for (volume, device) in devices {
            if ours.contains(&device) {
                i.used.entry(volume).or_insert(device);
            } else {
                i.foreign.insert(device);
            }
        }
    }

    /// The device name for a volume on an instance: the one it has, or a free one. `None`
    /// when the instance has `limit` volumes already or no name is free.
    pub fn assign(&self, instance: &str, volume: &str, limit: u32) -> Option<String> {
        let mut all = self.instances.lock();
        let i = all.entry(instance.to_string()).or_default();
        if let Some(d) = i.used.get(volume) {
            return Some(d.clone());
        }
        if i.used.len() >= limit as usize {
            return None;
        }
        i.quarantined
            .retain(|_, since| since.elapsed() < QUARANTINE);
        let taken: BTreeSet<&String> = i
            .used
            .values()
            .chain(i.foreign.iter())
            .chain(i.quarantined.keys())
            .collect();
        let name = all_names().find(|n| !taken.contains(n))?;
        i.used.insert(volume.to_string(), name.clone());
        Some(name)
    }

    /// How many volumes are attached to (or being attached to) an instance.
    pub fn count(&self, instance: &str) -> usize {
        self.instances
            .lock()
            .get(instance)
            .map_or(0, |i| i.used.len())
    }

    /// The volume is no longer on the instance (detached).
    pub fn release(&self, instance: &str, volume: &str) {
        if let Some(i) = self.instances.lock().get_mut(instance) {
            i.used.remove(volume);
        }
    }

    /// The attach with this name failed: free it, but do not hand it out again for a while.
    pub fn failed(&self, instance: &str, volume: &str) {
        if let Some(i) = self.instances.lock().get_mut(instance)
            && let Some(name) = i.used.remove(volume)
        {
            i.quarantined.insert(name, Instant::now());
        }
    }
}

/// Volumes an instance type can have attached, for common types (EBS volumes only; the root
/// volume and one network interface are counted out). Nitro instances share 28 slots between
/// EBS volumes, network interfaces and NVMe instance stores; older Xen instances allow 39.
pub fn attach_limit_for(instance_type: &str) -> Option<u32> {
    let family = instance_type.split('.').next()?;
    let xen = [
        "t2", "m3", "m4", "c3", "c4", "r3", "r4", "x1", "x1e", "d2", "h1", "i2", "i3", "p2", "p3",
        "g3", "f1",
    ];
    if xen.contains(&family) {
        return Some(39);
    }
    let nitro_prefixes = [
        "t3", "t4g", "m5", "m6", "m7", "c5", "c6", "c7", "r5", "r6", "r7", "x2", "z1d", "i4",
        "im4", "is4", "g4", "g5", "p4", "inf",
    ];
    if nitro_prefixes.iter().any(|p| family.starts_with(p)) {
        return Some(26);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_per_instance_and_reused_after_release() {
        let d = Devices::default();
        d.learn(
            "i-1",
            vec![
                ("vol-root".into(), "/dev/xvda".into()),
                ("vol-earlier".into(), "/dev/xvdac".into()),
            ],
        );
        let a = d.assign("i-1", "vol-a", 10).unwrap();
        let b = d.assign("i-1", "vol-b", 10).unwrap();
        assert_eq!(a, "/dev/xvdaa");
        assert_eq!(b, "/dev/xvdab");
        assert_eq!(
            d.assign("i-1", "vol-earlier", 10).unwrap(),
            "/dev/xvdac",
            "a volume attached before a restart keeps its name"
        );
        assert_eq!(d.assign("i-1", "vol-x", 10).unwrap(), "/dev/xvdad");
        d.release("i-1", "vol-x");
        assert_eq!(
            d.assign("i-1", "vol-a", 10).unwrap(),
            a,
            "same volume, same name"
        );
        assert_eq!(
            d.assign("i-2", "vol-c", 10).unwrap(),
            "/dev/xvdaa",
            "per instance"
        );
        d.release("i-1", "vol-a");
        assert_eq!(d.assign("i-1", "vol-d", 10).unwrap(), "/dev/xvdaa");
        assert_eq!(
            d.count("i-1"),
            3,
            "vol-b, vol-earlier and vol-d; the root does not count"
        );
    }

    #[test]
    fn a_failed_name_is_not_reused_at_once_and_limits_hold() {
        let d = Devices::default();
        assert_eq!(d.assign("i-1", "vol-a", 2).unwrap(), "/dev/xvdaa");
        d.failed("i-1", "vol-a");
        assert_eq!(d.assign("i-1", "vol-b", 2).unwrap(), "/dev/xvdab");
        assert_eq!(d.assign("i-1", "vol-c", 2).unwrap(), "/dev/xvdac");
        assert_eq!(d.assign("i-1", "vol-e", 2), None, "at the limit");
        assert_eq!(all_names().count(), 52);
    }

    #[test]
    fn instance_types_have_limits() {
        assert_eq!(attach_limit_for("m5.large"), Some(26));
        assert_eq!(attach_limit_for("t2.micro"), Some(39));
        assert_eq!(attach_limit_for("weird.type"), None);
    }
}
