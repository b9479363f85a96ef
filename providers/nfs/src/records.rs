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
//! [`Ledger`] is the in-memory view of a share's records: which volumes exist, which
//! directories they use, and how many bytes are committed, with reservations for creates in
//! flight so that concurrent creates cannot over-commit between them.

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

    /// Bytes committed or reserved on the share.
    pub fn used(&self) -> i64 {
        self.committed_bytes + self.reserved_bytes
    }

    /// Another volume (live or being made) whose directory is `sub_dir`.
    pub fn user_of(&self, sub_dir: &str, except: &str) -> Option<String> {
        self.records
            .iter()
            .map(|(n, r)| (n, r.sub_dir.as_str()))
            .chain(self.reserved.iter().map(|(n, (d, _))| (n, d.as_str())))
            .find(|(n, d)| *d == sub_dir && n.as_str() != except)
            .map(|(n, _)| n.clone())
    }

    pub fn put(&mut self, name: &str, record: Record) {
        self.committed_bytes += record.bytes;
        if let Some(old) = self.records.insert(name.to_string(), record) {
            self.committed_bytes -= old.bytes;
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<Record> {
        let old = self.records.remove(name)?;
        self.committed_bytes -= old.bytes;
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
        }
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
        assert_eq!(l.user_of("a", "b"), Some("a".into()));
        l.put("a", record("a", 10));
        l.release("a");
        assert_eq!(l.used(), 10);
        l.put("a", record("a", 20));
        assert_eq!(l.used(), 20, "an update replaces the old size");
        assert_eq!(
            l.user_of("a", "a"),
            None,
            "a volume does not conflict with itself"
        );
        l.remove("a");
        l.release("nothing");
        assert_eq!(l.used(), 0);
    }
}
