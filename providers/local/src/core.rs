//! Shared state of the local provider: the root, the node, and the ledger that enforces capacity.
//!
//! The ledger is an append-only journal, `<root>/.stowage/ledger.jsonl`: one line per change
//! (a volume recorded with its size and parameters, or removed). Changes happen under an
//! exclusive lock on the journal, so several provider instances on one root (a restarted
//! server, a second process) never over-commit between them; each instance keeps the records
//! in memory and reads only the lines other instances appended since it last looked.
//!
//! Durability is group-committed: a change is appended under the lock, and callers then wait
//! for an `fdatasync` of the journal that began after their append; one sync serves every
//! change made before it, so a thousand concurrent creates cost a handful of syncs, not a
//! thousand. The journal is rewritten compactly when it grows to several times its live size.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use parking_lot::{Condvar, Mutex};
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
    /// What the volume was copied from: `snapshot:<id>` or `volume:<handle>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// One journal line.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Entry {
    Put { record: Record },
    Del { name: String },
}

/// What this instance has read of the journal.
#[derive(Default)]
struct Cache {
    /// The journal file this cache reflects (a compaction replaces it).
    inode: u64,
    /// Bytes of the journal already applied.
    offset: u64,
    records: HashMap<String, Record>,
    /// Sum of the records' sizes, kept current so a create need not add them all up.
    used: i64,
    /// Lines in the journal (live or not), to decide when to compact.
    lines: usize,
}

impl Cache {
    fn insert(&mut self, record: Record) {
        self.used += record.capacity_bytes;
        if let Some(old) = self.records.insert(record.name.clone(), record) {
            self.used -= old.capacity_bytes;
        }
    }

    fn remove(&mut self, name: &str) {
        if let Some(old) = self.records.remove(name) {
            self.used -= old.capacity_bytes;
        }
    }
}

pub(crate) struct Core {
    pub root: PathBuf,
    pub node: String,
    pub capacity_bytes: i64,
    pub quota: QuotaMode,
    ledger_dir: PathBuf,
    cache: Mutex<Cache>,
    syncer: Syncer,
    /// Snapshot and restore copies running now.
    pub copies: stowage_provider::copies::Copies,
}

/// The ledger while its lock is held.
pub(crate) struct Ledger<'a> {
    cache: &'a mut Cache,
    journal: &'a mut File,
}

const JOURNAL: &str = "ledger.jsonl";

impl Core {
    pub fn open(
        root: PathBuf,
        node: String,
        capacity_bytes: i64,
        quota: QuotaMode,
    ) -> io::Result<Core> {
        let ledger_dir = root.join(".stowage");
        fs::create_dir_all(&ledger_dir)?;
        let journal = ledger_dir.join(JOURNAL);
        if !journal.exists() {
            File::create(&journal)?.sync_all()?;
            File::open(&ledger_dir)?.sync_all()?;
        }
        Ok(Core {
            root,
            node,
            capacity_bytes,
            quota,
            ledger_dir,
            cache: Mutex::new(Cache::default()),
            syncer: Syncer::default(),
            copies: Default::default(),
        })
    }

    /// The directory of a volume. `name` must already be validated.
    pub fn volume_path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Where finished snapshots are: `<root>/.stowage/snapshots/<id>`, each a `data` tree and a
    /// `meta.json`. `id` must already be validated.
    pub fn snapshot_path(&self, id: &str) -> PathBuf {
        self.ledger_dir.join("snapshots").join(id)
    }

    /// Where a copy is made before it is moved into place (`volumes` or `snapshots`), on the
    /// same filesystem as its destination so the move is a rename.
    pub fn scratch_path(&self, kind: &str, name: &str) -> PathBuf {
        self.ledger_dir.join("scratch").join(kind).join(name)
    }

    fn journal_path(&self) -> PathBuf {
        self.ledger_dir.join(JOURNAL)
    }

    /// Runs `f` with the ledger locked against every other instance on this root. Blocking.
    pub fn locked<T>(&self, f: impl FnOnce(&mut Ledger<'_>) -> io::Result<T>) -> io::Result<T> {
        let mut cache = self.cache.lock();
        let mut journal = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(self.journal_path())?;
        journal.lock()?;
        catch_up(&mut cache, &mut journal)?;
        let result = f(&mut Ledger {
            cache: &mut cache,
            journal: &mut journal,
        });
        if result.is_ok() && cache.lines > 1024 && cache.lines > 4 * cache.records.len() {
            self.compact(&mut cache)?;
        }
        drop(journal);
        result
    }

    /// Rewrites the journal with only the live records. Called with the lock held.
    fn compact(&self, cache: &mut Cache) -> io::Result<()> {
        let tmp = self.ledger_dir.join("ledger.jsonl.tmp");
        let mut out = File::create(&tmp)?;
        let mut lines = 0;
        for r in cache.records.values() {
            serde_json::to_writer(&mut out, &Entry::Put { record: r.clone() })
                .map_err(io::Error::other)?;
            out.write_all(b"\n")?;
            lines += 1;
        }
        out.sync_all()?;
        fs::rename(&tmp, self.journal_path())?;
        File::open(&self.ledger_dir)?.sync_all()?;
        let meta = fs::metadata(self.journal_path())?;
        cache.inode = meta.ino();
        cache.offset = meta.len();
        cache.lines = lines;
        Ok(())
    }

    /// Every record, for listing (a snapshot; takes the lock briefly).
    pub fn records(&self) -> io::Result<Vec<Record>> {
        self.locked(|l| Ok(l.cache.records.values().cloned().collect()))
    }

    /// Waits until every change made so far is on stable storage.
    pub fn sync(&self) -> io::Result<()> {
        self.syncer.sync(&self.journal_path())
    }
}

/// Applies the journal lines this instance has not seen yet.
fn catch_up(cache: &mut Cache, journal: &mut File) -> io::Result<()> {
    let meta = journal.metadata()?;
    if meta.ino() != cache.inode || meta.len() < cache.offset {
        // First look, or another instance compacted the journal: read it all.
        cache.inode = meta.ino();
        cache.offset = 0;
        cache.records.clear();
        cache.used = 0;
        cache.lines = 0;
    }
    if meta.len() == cache.offset {
        return Ok(());
    }
    journal.seek(SeekFrom::Start(cache.offset))?;
    let mut reader = BufReader::new((&*journal).take(meta.len() - cache.offset));
    let mut line = String::new();
    let mut consumed = 0u64;
    loop {
        line.clear();
        let n = reader.read_line(&mut line)?;
        if n == 0 || !line.ends_with('\n') {
            // A line torn by a crash is not applied: its create is retried and re-recorded.
            break;
        }
        consumed += n as u64;
        cache.lines += 1;
        match serde_json::from_str::<Entry>(line.trim_end()) {
            Ok(Entry::Put { record }) => cache.insert(record),
            Ok(Entry::Del { name }) => cache.remove(&name),
            Err(e) => tracing::warn!(error = %e, "ignoring an unreadable ledger line"),
        }
    }
    cache.offset += consumed;
    Ok(())
}

impl Ledger<'_> {
    pub fn get(&self, name: &str) -> Option<&Record> {
        self.cache.records.get(name)
    }

    /// Bytes promised to volumes, excluding `except`.
    pub fn used_except(&self, except: &str) -> i64 {
        self.cache.used
            - self
                .cache
                .records
                .get(except)
                .map_or(0, |r| r.capacity_bytes)
    }

    pub fn project_ids(&self) -> Vec<u32> {
        self.cache
            .records
            .values()
            .filter_map(|r| r.project_id)
            .collect()
    }

    fn append(&mut self, entry: &Entry) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        self.journal.write_all(&line)?;
        self.cache.offset += line.len() as u64;
        self.cache.lines += 1;
        Ok(())
    }

    /// Records a volume (durable after [`Core::sync`]).
    pub fn put(&mut self, record: Record) -> io::Result<()> {
        self.append(&Entry::Put {
            record: record.clone(),
        })?;
        self.cache.insert(record);
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> io::Result<()> {
        if self.cache.records.contains_key(name) {
            self.append(&Entry::Del {
                name: name.to_string(),
            })?;
            self.cache.remove(name);
        }
        Ok(())
    }
}

/// Coalesces durability requests into as few syncs as possible.
#[derive(Default)]
struct Syncer {
    state: Mutex<SyncState>,
    done: Condvar,
}

#[derive(Default)]
struct SyncState {
    /// Requests made so far (a ticket number per request).
    requested: u64,
    /// Every request up to this ticket is durable.
    completed: u64,
    running: bool,
    error: Option<String>,
}

impl Syncer {
    fn sync(&self, journal: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.requested += 1;
        let ticket = s.requested;
        loop {
            if s.completed >= ticket {
                return match &s.error {
                    Some(e) => Err(io::Error::other(e.clone())),
                    None => Ok(()),
                };
            }
            if s.running {
                self.done.wait(&mut s);
                continue;
            }
            // This sync starts after our append, so it covers every request made so far.
            s.running = true;
            let covers = s.requested;
            drop(s);
            let result = File::open(journal).and_then(|f| f.sync_data());
            s = self.state.lock();
            s.running = false;
            s.completed = covers;
            s.error = result.err().map(|e| e.to_string());
            self.done.notify_all();
        }
    }
}
