//! One NFS export, spoken to from userspace: the connection (made on first use, remade after
//! a failure), every NFS request the provider makes (each bounded by the call timeout and
//! counted), and the share's [`Ledger`] of volume records.
//!
//! Requests go by file handle, not by path, so a request is one round trip: handles of the
//! directories the provider walks through are cached per connection. A request that fails for
//! any reason other than a plain answer (no such file, exists, not empty, ...) drops the
//! connection, because an NFSv4.1 session does not survive a server restart; the next request
//! mounts again. A slow or dead server therefore costs each request at most the call timeout,
//! and only requests to that server.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use nfs_rs::{Attr, Mount, Nfs3ErrorCode, Nfs4ErrorCode, NfsError, ObjRes, Time, WriteOutcome};
use parking_lot::Mutex;
use stowage_provider::keyed_lock::KeyedLock;
use stowage_provider::{ErrorKind, ProviderError};

use crate::params::{Server, Version};
use crate::records::{Ledger, RECORDS_DIR, Record};

/// Which export, reached how. Two classes naming the same export share one [`Share`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ShareKey {
    pub server: Server,
    pub path: String,
    pub version: Version,
}

impl ShareKey {
    /// `host:/path`, as people write NFS sources.
    pub fn describe(&self) -> String {
        format!(
            "{}:{} (NFSv{})",
            self.server.display(),
            self.path,
            self.version.as_str()
        )
    }

    fn url(&self) -> String {
        let mut url = format!("nfs://{}", self.server.display());
        for segment in self.path.split('/').filter(|s| !s.is_empty()) {
            url.push('/');
            for b in segment.bytes() {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    url.push(b as char);
                } else {
                    url.push_str(&format!("%{b:02X}"));
                }
            }
        }
        if self.path == "/" {
            url.push('/');
        }
        let version = match self.version {
            Version::V3 => "3",
            Version::V41 => "4.1",
        };
        // Root may bind a privileged source port (servers exporting with `secure`, the Linux
        // default, require it); anyone else cannot, and needs an `insecure` export.
        let noresvport = !running_as_root();
        format!("{url}?version={version}&noresvport={noresvport}")
    }
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|ids| ids.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// How an NFS request failed, as far as the provider cares.
#[derive(Debug)]
pub enum Failure {
    NotFound,
    Exists,
    NotEmpty,
    NotDir,
    /// The server refused (permissions, read-only export): fixable on the server, so retried.
    Denied(String),
    /// No space or over quota on the server.
    NoSpace(String),
    /// Timeout, connection lost, server restarting or confused: retried with a new connection.
    Unavailable(String),
}

impl Failure {
    /// For request counts.
    fn outcome(&self) -> &'static str {
        match self {
            Failure::NotFound => "not_found",
            Failure::Exists => "exists",
            Failure::NotEmpty => "not_empty",
            Failure::NotDir => "not_dir",
            Failure::Denied(_) => "denied",
            Failure::NoSpace(_) => "no_space",
            Failure::Unavailable(_) => "unavailable",
        }
    }

    fn classify(e: &NfsError) -> Failure {
        if e.is_not_found() {
            return Failure::NotFound;
        }
        if e.is_exist() {
            return Failure::Exists;
        }
        match e {
            NfsError::Nfs3(Nfs3ErrorCode::NFS3ERR_NOTEMPTY)
            | NfsError::Nfs4(Nfs4ErrorCode::NFS4ERR_NOTEMPTY) => Failure::NotEmpty,
            NfsError::Nfs3(Nfs3ErrorCode::NFS3ERR_NOTDIR)
            | NfsError::Nfs4(Nfs4ErrorCode::NFS4ERR_NOTDIR) => Failure::NotDir,
            NfsError::Nfs3(
                Nfs3ErrorCode::NFS3ERR_ACCES
                | Nfs3ErrorCode::NFS3ERR_PERM
                | Nfs3ErrorCode::NFS3ERR_ROFS,
            )
            | NfsError::Nfs4(
                Nfs4ErrorCode::NFS4ERR_ACCESS
                | Nfs4ErrorCode::NFS4ERR_PERM
                | Nfs4ErrorCode::NFS4ERR_ROFS,
            ) => Failure::Denied(e.to_string()),
            NfsError::Nfs3(Nfs3ErrorCode::NFS3ERR_NOSPC | Nfs3ErrorCode::NFS3ERR_DQUOT)
            | NfsError::Nfs4(Nfs4ErrorCode::NFS4ERR_NOSPC | Nfs4ErrorCode::NFS4ERR_DQUOT) => {
                Failure::NoSpace(e.to_string())
            }
            _ => Failure::Unavailable(e.to_string()),
        }
    }

    /// As the provider reports it: `what` says which request on which share.
    pub fn into_error(self, what: &str) -> ProviderError {
        let (kind, message) = match self {
            Failure::NotFound => (ErrorKind::NotFound, "no such file or directory".to_string()),
            Failure::Exists => (ErrorKind::AlreadyExists, "it exists".to_string()),
            Failure::NotEmpty => (
                ErrorKind::FailedPrecondition,
                "directory not empty".to_string(),
            ),
            Failure::NotDir => (ErrorKind::FailedPrecondition, "not a directory".to_string()),
            Failure::Denied(m) => (
                ErrorKind::FailedPrecondition,
                format!("server refused: {m}"),
            ),
            Failure::NoSpace(m) => (ErrorKind::ResourceExhausted, m),
            Failure::Unavailable(m) => (ErrorKind::Temporary, m),
        };
        ProviderError::new(kind, format!("{what}: {message}"))
    }
}

/// NFS requests made, by procedure and outcome, for `backend_requests`.
#[derive(Default)]
pub struct Counters(Mutex<BTreeMap<(&'static str, &'static str), u64>>);

impl Counters {
    fn count(&self, op: &'static str, outcome: &'static str) {
        *self.0.lock().entry((op, outcome)).or_default() += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<(String, String), u64> {
        self.0
            .lock()
            .iter()
            .map(|((op, outcome), v)| ((op.to_string(), outcome.to_string()), *v))
            .collect()
    }
}

/// A mounted export and the handles of directories walked through on it.
struct Connection {
    mount: Box<dyn Mount>,
    root: Bytes,
    dirs: Mutex<HashMap<String, Bytes>>,
}

/// A directory entry.
pub struct Entry {
    pub name: String,
    pub handle: Bytes,
    pub is_dir: bool,
}

/// A directory entry with its attributes (what a copy needs to know of it).
pub struct Item {
    pub name: String,
    pub handle: Bytes,
    pub attr: Attr,
}

/// Attributes to set with SETATTR; `None` leaves one as it is.
#[derive(Clone, Debug, Default)]
pub struct SetAttrs {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<Time>,
    pub mtime: Option<Time>,
}

// File types, the same numbers in NFSv3 (ftype3) and NFSv4 (nfs_ftype4).
pub const TYPE_REG: u32 = 1;
pub const TYPE_DIR: u32 = 2;
pub const TYPE_LNK: u32 = 5;

pub struct Share {
    pub key: ShareKey,
    timeout: Duration,
    counters: Arc<Counters>,
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
    /// The records as last read from the share, plus reservations of creates in flight.
    pub ledger: Mutex<Ledger>,
    /// Serializes reading the records directory; holds when the last read started.
    sync: tokio::sync::Mutex<Option<Instant>>,
    /// Per-volume serialization of create/delete/expand.
    pub volume_locks: KeyedLock,
    /// Total size the server reports (FSSTAT), and when it was asked.
    size: Mutex<Option<(Instant, i64)>>,
}

type Result<T> = std::result::Result<T, Failure>;

impl Share {
    pub fn new(key: ShareKey, timeout: Duration, counters: Arc<Counters>) -> Share {
        Share {
            key,
            timeout,
            counters,
            connection: tokio::sync::Mutex::new(None),
            ledger: Mutex::new(Ledger::default()),
            sync: tokio::sync::Mutex::new(None),
            volume_locks: KeyedLock::new(),
            size: Mutex::new(None),
        }
    }

    async fn connect(&self) -> Result<Arc<Connection>> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let mount =
            match tokio::time::timeout(self.timeout, nfs_rs::parse_url_and_mount(&self.key.url()))
                .await
            {
                Ok(Ok(m)) => m,
                Ok(Err(e)) => {
                    self.counters.count("MOUNT", "unavailable");
                    return Err(Failure::Unavailable(format!("cannot mount: {e}")));
                }
                Err(_) => {
                    self.counters.count("MOUNT", "timeout");
                    return Err(Failure::Unavailable(format!(
                        "mounting timed out after {:?}",
                        self.timeout
                    )));
                }
            };
        self.counters.count("MOUNT", "ok");
        let root = mount.getfh().await;
        tracing::info!(share = self.key.describe(), "mounted");
        let c = Arc::new(Connection {
            mount,
            root,
            dirs: Mutex::new(HashMap::new()),
        });
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Drops a connection that failed, so the next request mounts again.
    async fn disconnect(&self, failed: &Arc<Connection>) {
        let mut slot = self.connection.lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, failed)) {
            let old = slot.take();
            tracing::warn!(
                share = self.key.describe(),
                "dropped the connection after a failure"
            );
            // Say goodbye if the server is still there (ends an NFSv4.1 session), without
            // making anyone wait for it.
            if let Some(old) = old {
                let timeout = self.timeout;
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(timeout, old.mount.umount()).await;
                });
            }
        }
    }

    /// One NFS request, bounded by the call timeout and counted under `op`.
    async fn call<T, F, Fut>(&self, op: &'static str, request: F) -> Result<T>
    where
        F: FnOnce(Arc<Connection>) -> Fut,
        Fut: Future<Output = nfs_rs::Result<T>>,
    {
        let c = self.connect().await?;
        let (failure, outcome) = match tokio::time::timeout(self.timeout, request(c.clone())).await
        {
            Ok(Ok(v)) => {
                self.counters.count(op, "ok");
                return Ok(v);
            }
            Ok(Err(e)) => {
                let f = Failure::classify(&e);
                let outcome = f.outcome();
                (f, outcome)
            }
            Err(_) => (
                Failure::Unavailable(format!("{op} timed out after {:?}", self.timeout)),
                "timeout",
            ),
        };
        self.counters.count(op, outcome);
        if matches!(failure, Failure::Unavailable(_)) {
            self.disconnect(&c).await;
        }
        Err(failure)
    }

    async fn root(&self) -> Result<Bytes> {
        Ok(self.connect().await?.root.clone())
    }

    pub async fn lookup(&self, dir: &Bytes, name: &str) -> Result<ObjRes> {
        let dir = dir.clone();
        self.call("LOOKUP", |c| async move { c.mount.lookup(dir, name).await })
            .await
    }

    /// The handle of a directory below the share's root, walking (and caching) each level.
    /// With `create`, missing levels are made with `mode` (like `mkdir -p`).
    pub async fn dir(&self, path: &str, create: Option<u32>) -> Result<Bytes> {
        let c = self.connect().await?;
        let mut fh = c.root.clone();
        let mut walked = String::new();
        for segment in path.split('/').filter(|s| !s.is_empty()) {
            if !walked.is_empty() {
                walked.push('/');
            }
            walked.push_str(segment);
            let cached = c.dirs.lock().get(&walked).cloned();
            fh = match cached {
                Some(h) => h,
                None => {
                    let found = match create {
                        Some(mode) => self.mkdir(&fh, segment, mode).await.map(|(o, _)| o),
                        None => self.lookup(&fh, segment).await,
                    }?;
                    if found.attr.as_ref().is_some_and(|a| a.type_ != TYPE_DIR) {
                        return Err(Failure::NotDir);
                    }
                    c.dirs.lock().insert(walked.clone(), found.fh.clone());
                    found.fh
                }
            };
        }
        Ok(fh)
    }

    /// Makes a directory, or finds the one that is there. Returns it and whether it was new.
    pub async fn mkdir(&self, dir: &Bytes, name: &str, mode: u32) -> Result<(ObjRes, bool)> {
        let d = dir.clone();
        match self
            .call(
                "MKDIR",
                |c| async move { c.mount.mkdir(d, name, mode).await },
            )
            .await
        {
            Ok(o) => Ok((o, true)),
            Err(Failure::Exists) => {
                let o = self.lookup(dir, name).await?;
                if o.attr.as_ref().is_some_and(|a| a.type_ != TYPE_DIR) {
                    return Err(Failure::NotDir);
                }
                Ok((o, false))
            }
            Err(e) => Err(e),
        }
    }

    pub async fn chmod(&self, fh: &Bytes, mode: u32) -> Result<()> {
        let fh = fh.clone();
        self.call("SETATTR", |c| async move {
            c.mount
                .setattr(fh, None, Some(mode), None, None, None, None, None)
                .await
        })
        .await
    }

    pub async fn list(&self, dir: &Bytes) -> Result<Vec<Entry>> {
        Ok(self
            .list_items(dir)
            .await?
            .into_iter()
            .map(|i| Entry {
                is_dir: i.attr.type_ == TYPE_DIR,
                name: i.name,
                handle: i.handle,
            })
            .collect())
    }

    /// A directory's entries with their attributes (asked for separately where READDIRPLUS
    /// left them out).
    pub async fn list_items(&self, dir: &Bytes) -> Result<Vec<Item>> {
        let dir = dir.clone();
        let raw = self
            .call("READDIRPLUS", |c| async move {
                let entries = c.mount.readdirplus(dir).await;
                entries.try_collect::<Vec<_>>().await
            })
            .await?;
        let mut out = Vec::with_capacity(raw.len());
        for e in raw {
            if e.file_name == "." || e.file_name == ".." {
                continue;
            }
            let attr = match e.attr {
                Some(a) => a,
                None => self.getattr(&e.handle).await?,
            };
            out.push(Item {
                name: e.file_name,
                handle: e.handle,
                attr,
            });
        }
        Ok(out)
    }

    pub async fn getattr(&self, fh: &Bytes) -> Result<Attr> {
        let fh = fh.clone();
        self.call("GETATTR", |c| async move { c.mount.getattr(fh).await })
            .await
    }

    pub async fn setattr(&self, fh: &Bytes, a: SetAttrs) -> Result<()> {
        let fh = fh.clone();
        self.call("SETATTR", |c| async move {
            c.mount
                .setattr(fh, None, a.mode, a.uid, a.gid, a.size, a.atime, a.mtime)
                .await
        })
        .await
    }

    /// Creates a regular file (and, in NFSv4, opens it for writing: [`Share::close`] it).
    pub async fn create_file(&self, dir: &Bytes, name: &str, mode: u32) -> Result<ObjRes> {
        let dir = dir.clone();
        self.call("CREATE", |c| async move {
            c.mount.create(dir, name, Some(mode)).await
        })
        .await
    }

    /// Ends what [`Share::create_file`] opened (nothing in NFSv3).
    pub async fn close(&self, fh: &Bytes) -> Result<()> {
        let fh = fh.clone();
        self.call("CLOSE", |c| async move { c.mount.close(fh).await })
            .await
    }

    /// The largest READ and WRITE the connection allows, whichever is smaller.
    pub async fn io_size(&self) -> Result<u32> {
        let c = self.connect().await?;
        Ok(c.mount
            .get_max_read_size()
            .min(c.mount.get_max_write_size())
            .max(4096))
    }

    /// Up to `count` bytes from `offset`; fewer only at the end of the file.
    pub async fn read(&self, fh: &Bytes, offset: u64, count: u32) -> Result<Bytes> {
        let fh = fh.clone();
        self.call(
            "READ",
            |c| async move { c.mount.read(fh, offset, count).await },
        )
        .await
    }

    /// One UNSTABLE WRITE; the server may take fewer bytes than sent (see the outcome's
    /// count). [`Share::commit`] makes them durable.
    pub async fn write(&self, fh: &Bytes, offset: u64, data: Bytes) -> Result<WriteOutcome> {
        let fh = fh.clone();
        self.call(
            "WRITE",
            |c| async move { c.mount.write(fh, offset, data).await },
        )
        .await
    }

    /// COMMITs a file's writes and checks that none was lost meanwhile (a server restart
    /// between WRITE and COMMIT changes the verifier).
    pub async fn commit(&self, fh: &Bytes, writes: &[WriteOutcome]) -> Result<()> {
        let fh = fh.clone();
        self.call("COMMIT", |c| async move {
            c.mount.commit_write_batch(fh, 0, 0, writes).await
        })
        .await
    }

    pub async fn symlink(&self, target: &str, dir: &Bytes, name: &str) -> Result<ObjRes> {
        let dir = dir.clone();
        self.call("SYMLINK", |c| async move {
            c.mount.symlink(target, dir, name).await
        })
        .await
    }

    pub async fn readlink(&self, fh: &Bytes) -> Result<String> {
        let fh = fh.clone();
        self.call("READLINK", |c| async move { c.mount.readlink(fh).await })
            .await
    }

    pub async fn remove(&self, dir: &Bytes, name: &str) -> Result<()> {
        let dir = dir.clone();
        self.call("REMOVE", |c| async move { c.mount.remove(dir, name).await })
            .await
    }

    pub async fn rmdir(&self, dir: &Bytes, name: &str) -> Result<()> {
        let dir = dir.clone();
        self.call("RMDIR", |c| async move { c.mount.rmdir(dir, name).await })
            .await
    }

    pub async fn rename(&self, dir: &Bytes, from: &str, to: &str) -> Result<()> {
        self.move_to(dir, from, dir, to).await
    }

    /// Renames `from` in `from_dir` to `to` in `to_dir` (the same server file system).
    pub async fn move_to(
        &self,
        from_dir: &Bytes,
        from: &str,
        to_dir: &Bytes,
        to: &str,
    ) -> Result<()> {
        let (d1, d2) = (from_dir.clone(), to_dir.clone());
        self.call("RENAME", |c| async move {
            c.mount.rename(d1, from, d2, to).await
        })
        .await
    }

    /// Removes `name` from `dir`, whatever it is, with everything inside it (see
    /// [`Share::empty_dir`]); a missing one is fine.
    pub async fn remove_tree(&self, dir: &Bytes, name: &str) -> Result<()> {
        let found = match self.lookup(dir, name).await {
            Ok(o) => o,
            Err(Failure::NotFound) => return Ok(()),
            Err(e) => return Err(e),
        };
        let is_dir = match &found.attr {
            Some(a) => a.type_ == TYPE_DIR,
            None => self.getattr(&found.fh).await?.type_ == TYPE_DIR,
        };
        let removed = if is_dir {
            self.empty_dir(&found.fh, 0).await?;
            self.rmdir(dir, name).await
        } else {
            self.remove(dir, name).await
        };
        match removed {
            Ok(()) | Err(Failure::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes everything inside a directory (not the directory itself). Walks by handle from
    /// the directory down, so nothing outside it is touched; symbolic links are removed, never
    /// followed.
    pub async fn empty_dir(&self, dir: &Bytes, depth: usize) -> Result<()> {
        if depth > 512 {
            return Err(Failure::Unavailable(
                "directory tree deeper than 512 levels".into(),
            ));
        }
        for entry in self.list(dir).await? {
            if entry.is_dir {
                Box::pin(self.empty_dir(&entry.handle, depth + 1)).await?;
                match self.rmdir(dir, &entry.name).await {
                    Ok(()) | Err(Failure::NotFound) => {}
                    Err(e) => return Err(e),
                }
            } else {
                match self.remove(dir, &entry.name).await {
                    Ok(()) | Err(Failure::NotFound) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// The server's total size of the share (FSSTAT), asked at most every 30 seconds.
    pub async fn total_bytes(&self) -> Result<i64> {
        if let Some((at, bytes)) = *self.size.lock()
            && at.elapsed() < Duration::from_secs(30)
        {
            return Ok(bytes);
        }
        let stat = self
            .call("FSSTAT", |c| async move { c.mount.fsstat().await })
            .await?;
        let bytes = i64::try_from(stat.tbytes).unwrap_or(i64::MAX);
        *self.size.lock() = Some((Instant::now(), bytes));
        Ok(bytes)
    }

    // --- Records (see `records`) ---

    async fn records_dir(&self) -> Result<Bytes> {
        self.dir(&RECORDS_DIR.join("/"), Some(0o700)).await
    }

    /// Writes a new record; `Exists` if the volume has one.
    pub async fn write_record(&self, name: &str, record: &Record) -> Result<()> {
        let dir = self.records_dir().await?;
        let target = record.encode();
        let t = target.as_str();
        self.call(
            "SYMLINK",
            |c| async move { c.mount.symlink(t, dir, name).await },
        )
        .await
        .map(|_| ())
    }

    /// Replaces a volume's record atomically (a new link renamed over the old one).
    pub async fn replace_record(&self, name: &str, record: &Record) -> Result<()> {
        let dir = self.records_dir().await?;
        let staged = format!("{name}.new");
        match self.remove(&dir, &staged).await {
            Ok(()) | Err(Failure::NotFound) => {}
            Err(e) => return Err(e),
        }
        let target = record.encode();
        let (t, s, d) = (target.as_str(), staged.as_str(), dir.clone());
        self.call("SYMLINK", |c| async move { c.mount.symlink(t, d, s).await })
            .await?;
        self.rename(&dir, &staged, name).await
    }

    pub async fn read_record(&self, name: &str) -> Result<Option<Record>> {
        let dir = self.records_dir().await?;
        let link = match self.lookup(&dir, name).await {
            Ok(o) => o.fh,
            Err(Failure::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        let target = self
            .call("READLINK", |c| async move { c.mount.readlink(link).await })
            .await?;
        Ok(Record::decode(&target))
    }

    pub async fn remove_record(&self, name: &str) -> Result<()> {
        let dir = self.records_dir().await?;
        match self.remove(&dir, name).await {
            Ok(()) | Err(Failure::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Brings the ledger up to date with the records on the share: reads the records
    /// directory, and the link targets of records it has not seen yet. Cheap when nothing
    /// changed: one READDIRPLUS.
    pub async fn sync_records(&self) -> Result<()> {
        self.sync_since(Instant::now()).await
    }

    /// Makes sure the ledger reflects every record written on the share before `since`: a
    /// read that started after it is enough, so concurrent callers share one read.
    pub async fn sync_since(&self, since: Instant) -> Result<()> {
        let mut last = self.sync.lock().await;
        if last.is_some_and(|started| started > since) {
            return Ok(());
        }
        let started = Instant::now();
        self.read_records().await?;
        *last = Some(started);
        Ok(())
    }

    /// Reads the records once, the first time the share is used.
    pub async fn ensure_synced(&self) -> Result<()> {
        let mut last = self.sync.lock().await;
        if last.is_none() {
            let started = Instant::now();
            self.read_records().await?;
            *last = Some(started);
        }
        Ok(())
    }

    async fn read_records(&self) -> Result<()> {
        let dir = self.records_dir().await?;
        let entries = self.list(&dir).await?;
        let on_share: HashMap<String, Bytes> = entries
            .into_iter()
            .filter(|e| !e.name.ends_with(".new"))
            .map(|e| (e.name, e.handle))
            .collect();
        let unseen: Vec<(String, Bytes)> = {
            let mut ledger = self.ledger.lock();
            let gone: Vec<String> = ledger
                .names()
                .filter(|n| !on_share.contains_key(*n))
                .cloned()
                .collect();
            for name in gone {
                ledger.remove(&name);
            }
            on_share
                .into_iter()
                .filter(|(name, _)| ledger.get(name).is_none())
                .collect()
        };
        let mut targets = Vec::with_capacity(unseen.len());
        let mut reads = futures::stream::iter(unseen)
            .map(|(name, link)| self.read_link(&dir, name, link))
            .buffer_unordered(32);
        while let Some(read) = reads.next().await {
            targets.extend(read?);
        }
        let mut ledger = self.ledger.lock();
        for (name, target) in targets {
            match Record::decode(&target) {
                Some(r) => ledger.put(&name, r),
                None => tracing::warn!(
                    share = self.key.describe(),
                    record = name,
                    "ignoring a record that is not Stowage's"
                ),
            }
        }
        Ok(())
    }

    /// Reads a record's link target. A record replaced (renamed over) or removed since the
    /// directory was listed has a stale handle: it is looked up again by name, and skipped if
    /// it is gone.
    async fn read_link(
        &self,
        dir: &Bytes,
        name: String,
        link: Bytes,
    ) -> Result<Option<(String, String)>> {
        let first = self
            .call("READLINK", |c| async move { c.mount.readlink(link).await })
            .await;
        let target = match first {
            Ok(t) => t,
            Err(_) => {
                let fresh = match self.lookup(dir, &name).await {
                    Ok(o) => o.fh,
                    Err(Failure::NotFound) => return Ok(None),
                    Err(e) => return Err(e),
                };
                self.call("READLINK", |c| async move { c.mount.readlink(fresh).await })
                    .await?
            }
        };
        Ok(Some((name, target)))
    }

    /// The object at `path` below the share's root. Only the parents' handles are cached
    /// (the last part is often a volume's or snapshot's directory, which may be removed and
    /// made again).
    pub async fn find(&self, path: &str) -> Result<ObjRes> {
        let (parent, last) = match path.rsplit_once('/') {
            Some((p, l)) => (self.dir(p, None).await?, l),
            None => (self.root().await?, path),
        };
        self.lookup(&parent, last).await
    }

    /// Checks that the share answers (used by attach, which otherwise needs no request).
    pub async fn exists(&self, path: &str) -> Result<bool> {
        let root = self.root().await?;
        let (parent, last) = match path.rsplit_once('/') {
            Some((p, l)) => (self.dir(p, None).await, l),
            None => (Ok(root), path),
        };
        let parent = match parent {
            Ok(p) => p,
            Err(Failure::NotFound) => return Ok(false),
            Err(e) => return Err(e),
        };
        match self.lookup(&parent, last).await {
            Ok(o) => Ok(o.attr.as_ref().is_none_or(|a| a.type_ == TYPE_DIR)),
            Err(Failure::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
