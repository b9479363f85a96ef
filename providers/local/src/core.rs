//! Shared state of the local provider: the root, the node, and the ledger that enforces capacity.
//!
//! The ledger is one small JSON record per volume under `<root>/.stowage/` (name, size,
//! parameters). Changes happen under an exclusive file lock, so several provider instances on
//! one root (a restarted server, a second process) never over-commit between them. Each
//! instance caches the records and reloads them when the ledger's generation counter shows
//! another instance changed something.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::quota::QuotaMode;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Record {
    pub name: String,
    pub capacity_bytes: i64,
    pub parameters: BTreeMap<String, String>,
    /// The XFS project id of the volume's hard quota, when one was set.
    #[serde(default)]
    pub project_id: Option<u32>,
}

#[derive(Default)]
struct Cache {
    generation: Option<u64>,
    records: HashMap<String, Record>,
}

pub(crate) struct Core {
    pub root: PathBuf,
    pub node: String,
    pub capacity_bytes: i64,
    pub quota: QuotaMode,
    ledger: PathBuf,
    cache: Mutex<Cache>,
}

/// The ledger while its lock is held.
pub(crate) struct Ledger<'a> {
    core: &'a Core,
    cache: &'a mut Cache,
    changed: bool,
}

impl Core {
    pub fn open(
        root: PathBuf,
        node: String,
        capacity_bytes: i64,
        quota: QuotaMode,
    ) -> io::Result<Core> {
        let ledger = root.join(".stowage");
        fs::create_dir_all(&ledger)?;
        Ok(Core {
            root,
            node,
            capacity_bytes,
            quota,
            ledger,
            cache: Mutex::new(Cache::default()),
        })
    }

    /// The directory of a volume. `name` must already be validated.
    pub fn volume_path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn record_path(&self, name: &str) -> PathBuf {
        self.ledger.join(format!("{name}.json"))
    }

    /// Runs `f` with the ledger locked against every other instance on this root. Blocking.
    pub fn locked<T>(&self, f: impl FnOnce(&mut Ledger<'_>) -> io::Result<T>) -> io::Result<T> {
        let mut cache = self.cache.lock();
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.ledger.join("lock"))?;
        lock.lock()?;
        let generation = read_generation(&self.ledger)?;
        if cache.generation != Some(generation) {
            cache.records = load_records(&self.ledger)?;
            cache.generation = Some(generation);
        }
        let mut ledger = Ledger {
            core: self,
            cache: &mut cache,
            changed: false,
        };
        let result = f(&mut ledger);
        if ledger.changed {
            let next = generation + 1;
            fs::write(self.ledger.join("generation"), next.to_string())?;
            ledger.cache.generation = Some(next);
        }
        drop(lock);
        result
    }

    /// Every record, for listing (a snapshot; takes the lock briefly).
    pub fn records(&self) -> io::Result<Vec<Record>> {
        self.locked(|l| Ok(l.cache.records.values().cloned().collect()))
    }
}

impl Ledger<'_> {
    pub fn get(&self, name: &str) -> Option<&Record> {
        self.cache.records.get(name)
    }

    /// Bytes promised to volumes, excluding `except`.
    pub fn used_except(&self, except: &str) -> i64 {
        self.cache
            .records
            .values()
            .filter(|r| r.name != except)
            .map(|r| r.capacity_bytes)
            .sum()
    }

    pub fn project_ids(&self) -> Vec<u32> {
        self.cache
            .records
            .values()
            .filter_map(|r| r.project_id)
            .collect()
    }

    /// Records a volume. The write reaches the page cache here; call [`sync_record`] after
    /// releasing the lock to make it durable, so concurrent creates share the disk's flushes.
    pub fn put(&mut self, record: Record) -> io::Result<()> {
        let bytes = serde_json::to_vec(&record).map_err(io::Error::other)?;
        let mut f = File::create(self.core.record_path(&record.name))?;
        f.write_all(&bytes)?;
        self.cache.records.insert(record.name.clone(), record);
        self.changed = true;
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> io::Result<()> {
        match fs::remove_file(self.core.record_path(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.cache.records.remove(name);
        self.changed = true;
        Ok(())
    }
}

/// Flushes a volume's record and directory entry to disk.
pub(crate) fn sync_record(core: &Core, name: &str) -> io::Result<()> {
    File::open(core.record_path(name))?.sync_all()?;
    File::open(&core.ledger)?.sync_all()?;
    File::open(&core.root)?.sync_all()
}

fn read_generation(ledger: &Path) -> io::Result<u64> {
    match fs::read_to_string(ledger.join("generation")) {
        Ok(s) => Ok(s.trim().parse().unwrap_or(0)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

fn load_records(ledger: &Path) -> io::Result<HashMap<String, Record>> {
    let mut records = HashMap::new();
    for entry in fs::read_dir(ledger)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        // A record torn by a crash reads as absent: its volume is re-adopted on the next create.
        match fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
        {
            Some(r) => {
                records.insert(r.name.clone(), r);
            }
            None => tracing::warn!(path = %path.display(), "ignoring an unreadable volume record"),
        }
    }
    Ok(records)
}
