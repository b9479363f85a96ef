//! What the provider knows about its volumes, kept on the share itself so that it survives
//! restarts and needs no server-side setup: one record per volume in `.stowage/volumes/` at the
//! top of the share.
//!
//! A record is a **symbolic link** named after the volume whose target is a small JSON text
//! (`pvc-1 -> {"subDir":"pvc-1","bytes":1073741824,...}`). Making a symlink is one NFS request,
//! is durable when the server answers (directory operations are synchronous in NFS, unlike
//! WRITE, which needs a COMMIT), and fails if the name exists, which makes concurrent creators
//! agree. Nothing ever follows these links. An update (expansion) makes a new link and renames
//! it over the old one, which is atomic.
//!
//! A restored or cloned volume's record also names where its data comes from (`source`), and
//! says while a copy is still `filling` its directory (see the `snapshot` module, which keeps
//! snapshots and unfinished copies next to the records, in `.stowage/snapshots/` and
//! `.stowage/scratch/`).
//!
//! A volume deleted with `onDelete: retain` keeps a **retained** record: its directory stays,
//! and the record says whose it was. A new volume may take over (adopt) a directory only if a
//! retained record names the same directory and a claim of the same namespace; a directory
//! that no record accounts for is never handed out.
//!
//! [`Ledger`] is the in-memory view of a share's records: which volumes exist, which
//! directories they use, and how many bytes are committed, with reservations for creates in
//! flight so that concurrent creates cannot over-commit between them. It also answers the
//! question that keeps tenants apart: does a directory [`overlap`](Ledger::overlapping) any
//! other volume's (the same, an ancestor or a descendant)?

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::params::OnDelete;

/// The directory of records, relative to the share.
pub const RECORDS_DIR: [&str; 2] = [crate::subdir::METADATA_DIR, "volumes"];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The volume's directory, relative to the share.
    pub sub_dir: String,
    /// The size accounted for it.
    pub bytes: i64,
    /// What to do with the directory when the volume is deleted; kept here so that even an
    /// orphan (no PersistentVolume, no class) is treated as its class said.
    pub on_delete: OnDelete,
    /// The Stowage installation that made it: a share used by two installations is safe from
    /// each other's orphan sweeps.
    pub owner: String,
    /// The namespace of the claim it was made for (who may adopt the directory once retained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_namespace: Option<String>,
    /// The volume is gone and its directory was kept (`onDelete: retain`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retained: bool,
    /// Written before the create checked the share and made the directory: until it is
    /// cleared, the record proves nothing about whose the directory is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
    /// What the volume's data is copied from, `snapshot:<id>` or `volume:<handle>` (a restore
    /// or a clone); part of what makes a repeated create the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The directory is proven this volume's (the path was free when it was claimed), and a
    /// copy is filling it: the copy is made in scratch and renamed to the directory when
    /// complete, so a directory there is the finished copy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub filling: bool,
}

/// Whether `a` and `b` are the same directory, or one lies inside the other.
pub fn overlap(a: &str, b: &str) -> bool {
    let inside = |child: &str, parent: &str| {
        child
            .strip_prefix(parent)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    inside(a, b) || inside(b, a)
}

/// Another volume's directory that a new one would overlap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overlap {
    pub volume: String,
    pub sub_dir: String,
    /// The installation that made it.
    pub owner: String,
    /// A retained record (no live volume), and the namespace its claim was in.
    pub retained: Option<Option<String>>,
}

impl Record {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn decode(target: &str) -> Option<Record> {
        serde_json::from_str(target).ok()
    }
}

/// A share's records as this process knows them, and its reservations.
#[derive(Debug, Default)]
pub struct Ledger {
    records: HashMap<String, Record>,
    /// Creates in flight: bytes held until their record is written or they fail.
    reserved: HashMap<String, (String, i64)>,
    committed_bytes: i64,
    reserved_bytes: i64,
}

impl Ledger {
    pub fn get(&self, name: &str) -> Option<&Record> {
        self.records.get(name)
    }

    pub fn records(&self) -> impl Iterator<Item = (&String, &Record)> {
        self.records.iter()
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.records.keys()
    }

    /// Bytes committed or reserved on the share (retained directories are not volumes).
    pub fn used(&self) -> i64 {
        self.committed_bytes + self.reserved_bytes
    }

    /// Every other volume's directory (live, being made, or retained) that `sub_dir` would be,
    /// contain, or lie inside. Live volumes come first: they can never be adopted.
    pub fn overlaps(&self, sub_dir: &str, except: &str) -> Vec<Overlap> {
        let records = self.records.iter().map(|(n, r)| {
            let retained = r.retained.then(|| r.claim_namespace.clone());
            (n, r.sub_dir.as_str(), r.owner.as_str(), retained)
        });
        let reserved = self
            .reserved
            .iter()
            .map(|(n, (d, _))| (n, d.as_str(), "", None));
        let mut found: Vec<Overlap> = records
            .chain(reserved)
            .filter(|(n, d, _, _)| n.as_str() != except && overlap(d, sub_dir))
            .map(|(n, d, owner, retained)| Overlap {
                volume: n.clone(),
                sub_dir: d.to_string(),
                owner: owner.to_string(),
                retained,
            })
            .collect();
        found.sort_by_key(|o| o.retained.is_some());
        found
    }

    /// The first of [`Ledger::overlaps`], if any.
    pub fn overlapping(&self, sub_dir: &str, except: &str) -> Option<Overlap> {
        self.overlaps(sub_dir, except).into_iter().next()
    }

    fn counted(r: &Record) -> i64 {
        if r.retained { 0 } else { r.bytes }
    }

    pub fn put(&mut self, name: &str, record: Record) {
        self.committed_bytes += Self::counted(&record);
        if let Some(old) = self.records.insert(name.to_string(), record) {
            self.committed_bytes -= Self::counted(&old);
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<Record> {
        let old = self.records.remove(name)?;
        self.committed_bytes -= Self::counted(&old);
        Some(old)
    }

    pub fn reserve(&mut self, name: &str, sub_dir: &str, bytes: i64) {
        self.release(name);
        self.reserved_bytes += bytes;
        self.reserved
            .insert(name.to_string(), (sub_dir.to_string(), bytes));
    }

    pub fn release(&mut self, name: &str) {
        if let Some((_, bytes)) = self.reserved.remove(name) {
            self.reserved_bytes -= bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(dir: &str, bytes: i64) -> Record {
        Record {
            sub_dir: dir.into(),
            bytes,
            on_delete: OnDelete::Delete,
            owner: "o".into(),
            claim_namespace: None,
            retained: false,
            pending: false,
            source: None,
            filling: false,
        }
    }

    #[test]
    fn directories_overlap_when_one_contains_the_other() {
        assert!(overlap("a", "a"));
        assert!(overlap("a", "a/b"));
        assert!(overlap("a/b/c", "a"));
        assert!(!overlap("a", "ab"));
        assert!(!overlap("a/b", "a/c"));
        let mut l = Ledger::default();
        l.put("v1", record("team-a/data", 1));
        assert_eq!(l.overlapping("team-a", "v2").unwrap().volume, "v1");
        assert_eq!(l.overlapping("team-a/data/x", "v2").unwrap().volume, "v1");
        assert!(l.overlapping("team-a/other", "v2").is_none());
        assert!(
            l.overlapping("team-a/data", "v1").is_none(),
            "not with itself"
        );
        l.reserve("v3", "team-b", 1);
        assert_eq!(l.overlapping("team-b/x", "v2").unwrap().volume, "v3");
        l.put(
            "old",
            Record {
                retained: true,
                claim_namespace: Some("team-c".into()),
                ..record("team-c/data", 5)
            },
        );
        assert_eq!(
            l.used(),
            2,
            "retained directories are not counted as volumes"
        );
        let o = l.overlapping("team-c/data", "v4").unwrap();
        assert_eq!(o.retained, Some(Some("team-c".into())));
    }

    #[test]
    fn records_round_trip_through_link_targets() {
        let r = record("team-a/data", 5);
        assert_eq!(
            r.encode(),
            r#"{"subDir":"team-a/data","bytes":5,"onDelete":"delete","owner":"o"}"#
        );
        assert_eq!(Record::decode(&r.encode()), Some(r));
        assert_eq!(Record::decode("../somewhere"), None);
    }

    #[test]
    fn the_ledger_counts_records_and_reservations_once() {
        let mut l = Ledger::default();
        l.reserve("a", "a", 10);
        assert_eq!(l.used(), 10);
        assert_eq!(l.overlapping("a", "b").map(|o| o.volume), Some("a".into()));
        l.put("a", record("a", 10));
        l.release("a");
        assert_eq!(l.used(), 10);
        l.put("a", record("a", 20));
        assert_eq!(l.used(), 20, "an update replaces the old size");
        assert_eq!(
            l.overlapping("a", "a"),
            None,
            "a volume does not conflict with itself"
        );
        l.remove("a");
        l.release("nothing");
        assert_eq!(l.used(), 0);
    }
}
