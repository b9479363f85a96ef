//! Copying a directory tree on a share through the NFS client, as `cp -a` would on a mount:
//! snapshots, restores and clones are all this copy. There is no kernel mount here, and NFS
//! has no server-side tree copy (NFSv4.2 COPY is per file, and not offered by every server),
//! so the data passes through this process.
//!
//! It streams: file data moves in chunks of at most [`CHUNK`] bytes, and the chunks alive at
//! once are bounded for the whole provider ([`Throttle`]: 16 MiB, however many copies run and
//! however large the tree or one file is). Trees are walked one directory listing at a time,
//! never held whole. A tree of small files is bound by round trips, not bandwidth, so several
//! files are copied at once (and up to [`PER_FILE`] chunks of one file), over the share's one
//! connection, which carries concurrent requests. Requests already sent are always waited for,
//! also when the copy stops (cancelled, or failed elsewhere): dropping them would leave an
//! NFSv4.1 session unsure of its state.
//!
//! Kept: directories, regular files, symbolic links, permission bits (set-id and sticky bits
//! included), and, where the server lets this client set them, owner, group and times. Chunks
//! that are all zeros are not written, so holes stay holes. Not kept: hard links (each name
//! becomes its own file), device nodes, FIFOs and sockets (skipped with a warning: NFS clients
//! cannot make them through nfs-rs), ACLs and extended attributes. A copy of a volume in use
//! sees each file as it is when that file is read: it is not a point-in-time image.
//!
//! It never follows a symbolic link (links are copied as links), and walks only down from the
//! handles it is given, so nothing outside the source is read and nothing outside the target
//! is written.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use nfs_rs::{Attr, WriteOutcome};
use parking_lot::Mutex;
use stowage_provider::copies::Tracker;
use stowage_provider::{ProviderError, Result};
use tokio::sync::Semaphore;

use crate::share::{Failure, Item, SetAttrs, Share, TYPE_DIR, TYPE_LNK, TYPE_REG};

/// The most one READ or WRITE moves.
pub const CHUNK: u32 = 1 << 20;
/// Entries of one directory handled at once.
const WIDTH: usize = 16;
/// Chunks of one file in flight at once.
pub const PER_FILE: usize = 4;
/// Deeper trees are refused rather than walked.
const MAX_DEPTH: usize = 512;

/// What all copies of one provider share, so that running many at once costs no more memory
/// or server load than a few: files open for copying, chunk buffers alive, and directories
/// walked side by side.
pub struct Throttle {
    files: Semaphore,
    chunks: Semaphore,
    /// Each directory walks one subdirectory at a time, and more only with one of these: so
    /// at most (walkers + 1) × depth directory listings are held, however wide the tree.
    walkers: Semaphore,
}

impl Throttle {
    pub fn new(files: usize, chunks: usize, walkers: usize) -> Throttle {
        Throttle {
            files: Semaphore::new(files.max(1)),
            chunks: Semaphore::new(chunks.max(1)),
            walkers: Semaphore::new(walkers),
        }
    }
}

impl Default for Throttle {
    /// 16 files and 16 chunks of 1 MiB (at most 16 MiB of file data in memory), 8 walkers.
    fn default() -> Self {
        Throttle::new(16, 16, 8)
    }
}

/// Copies the directory `from` to a new directory `to_name` in `to_parent` (which must not
/// exist), with `from`'s contents and attributes. Sets the tracker's total first (a walk of
/// the source), then counts bytes as they are copied. Stops with
/// [`Tracker::cancelled_error`] soon after the tracker is cancelled.
pub async fn copy_tree(
    share: &Share,
    throttle: &Throttle,
    from: &Bytes,
    to_parent: &Bytes,
    to_name: &str,
    tracker: &Tracker,
) -> Result<()> {
    let io = share
        .io_size()
        .await
        .map_err(|f| failed(share, "connecting to", "", f))?;
    let copier = Copier {
        share,
        throttle,
        tracker,
        chunk: io.min(CHUNK),
        owner_refused: AtomicBool::new(false),
        failure: Mutex::new(None),
    };
    let total = copier.count(from.clone(), String::new(), 0).await;
    tracker.set_total(copier.cause(total)?);
    let root = share
        .getattr(from)
        .await
        .map_err(|f| failed(share, "reading", "", f))?;
    let made = share
        .mkdir(to_parent, to_name, 0o700)
        .await
        .map_err(|f| failed(share, "making the copy of", "", f))?;
    if !made.1 {
        return Err(ProviderError::temporary(format!(
            "the copy's target {to_name} on {} exists already",
            share.key.describe()
        )));
    }
    let copied = copier
        .dir(from.clone(), made.0.fh.clone(), String::new(), 0)
        .await;
    copier.cause(copied)?;
    copier.finish(&made.0.fh, &root, "").await
}

struct Copier<'a> {
    share: &'a Share,
    throttle: &'a Throttle,
    tracker: &'a Tracker,
    chunk: u32,
    /// The server refused to set an owner once: it will refuse again, so stop asking.
    owner_refused: AtomicBool,
    /// The first part of the copy that failed. The rest then starts no new request, but
    /// waits for those already sent (see the module's documentation).
    failure: Mutex<Option<ProviderError>>,
}

/// All the values, or an error if there is one among `results`.
fn all_ok<T>(results: impl IntoIterator<Item = Result<T>>) -> Result<Vec<T>> {
    results.into_iter().collect()
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

fn failed(share: &Share, doing: &str, path: &str, f: Failure) -> ProviderError {
    let what = if path.is_empty() {
        format!("{doing} the copy's root on {}", share.key.describe())
    } else {
        format!("{doing} {path} on {}", share.key.describe())
    };
    f.into_error(&what)
}

fn too_deep(share: &Share, path: &str) -> ProviderError {
    ProviderError::precondition(format!(
        "{path} on {} is more than {MAX_DEPTH} directories deep: not copied",
        share.key.describe()
    ))
}

impl<'a> Copier<'a> {
    /// Whether to go on: not if the copy was cancelled, or a part of it failed.
    fn check(&self) -> Result<()> {
        if self.tracker.is_cancelled() {
            return Err(Tracker::cancelled_error());
        }
        if self.failure.lock().is_some() {
            return Err(ProviderError::temporary("the copy stopped after a failure"));
        }
        Ok(())
    }

    /// A failed walk's error is the first failure noted: the later ones may only say that the
    /// copy was stopping.
    fn cause<T>(&self, r: Result<T>) -> Result<T> {
        r.map_err(|e| self.failure.lock().take().unwrap_or(e))
    }

    /// Bytes of regular-file data under the directory `dir`, as the copy will count them.
    fn count(&'a self, dir: Bytes, path: String, depth: usize) -> BoxFuture<'a, Result<i64>> {
        async move {
            if depth > MAX_DEPTH {
                return Err(self.failed(too_deep(self.share, &path)));
            }
            self.check()?;
            let items = self
                .share
                .list_items(&dir)
                .await
                .map_err(|f| self.failed(failed(self.share, "listing", &path, f)))?;
            let here: i64 = items
                .iter()
                .filter(|i| i.attr.type_ == TYPE_REG)
                .map(|i| i64::try_from(i.attr.filesize).unwrap_or(i64::MAX))
                .fold(0, i64::saturating_add);
            let subdirs = items.into_iter().filter(|i| i.attr.type_ == TYPE_DIR);
            let below = self
                .branches(subdirs, |i| {
                    self.count(i.handle, join(&path, &i.name), depth + 1)
                })
                .await;
            Ok(all_ok(below)?.into_iter().fold(here, i64::saturating_add))
        }
        .boxed()
    }

    /// Runs `walk` on each of a directory's subdirectories: one at a time, and more side by
    /// side while walkers are free. Never waits for a walker, only for a subdirectory it
    /// started, so no walk can wait on another forever.
    async fn branches<T, W, F>(
        &'a self,
        subdirs: impl IntoIterator<Item = Item>,
        walk: W,
    ) -> Vec<Result<T>>
    where
        W: Fn(Item) -> F,
        F: Future<Output = Result<T>>,
    {
        let mut running = FuturesUnordered::new();
        let mut done = Vec::new();
        for item in subdirs {
            let walker = loop {
                if running.is_empty() {
                    break None;
                }
                if let Ok(permit) = self.throttle.walkers.try_acquire() {
                    break Some(permit);
                }
                done.extend(running.next().await);
            };
            let walked = walk(item);
            running.push(async move {
                let _walker = walker;
                walked.await
            });
        }
        while let Some(r) = running.next().await {
            done.push(r);
        }
        done
    }

    /// Notes a failure (the first one is reported), so the rest of the copy stops.
    fn failed(&self, e: ProviderError) -> ProviderError {
        self.failure.lock().get_or_insert_with(|| e.clone());
        e
    }

    /// Copies what is in directory `from` into the (new, empty) directory `to`.
    fn dir(
        &'a self,
        from: Bytes,
        to: Bytes,
        path: String,
        depth: usize,
    ) -> BoxFuture<'a, Result<()>> {
        async move {
            if depth > MAX_DEPTH {
                return Err(too_deep(self.share, &path));
            }
            self.check()?;
            let items = self
                .share
                .list_items(&from)
                .await
                .map_err(|f| failed(self.share, "listing", &path, f))?;
            let (subdirs, leaves): (Vec<Item>, Vec<Item>) =
                items.into_iter().partition(|i| i.attr.type_ == TYPE_DIR);
            let entry = |item: Item| async {
                let path = join(&path, &item.name);
                self.entry(item, &to, &path, depth)
                    .await
                    .map_err(|e| self.failed(e))
            };
            let leaves = futures::stream::iter(leaves)
                .map(entry)
                .buffer_unordered(WIDTH)
                .collect::<Vec<_>>();
            let (mut done, below) = futures::join!(leaves, self.branches(subdirs, entry));
            done.extend(below);
            all_ok(done).map(|_| ())
        }
        .boxed()
    }

    async fn entry(&'a self, item: Item, to: &Bytes, path: &str, depth: usize) -> Result<()> {
        match item.attr.type_ {
            TYPE_DIR => {
                self.check()?;
                let (made, _) = self
                    .share
                    .mkdir(to, &item.name, 0o700)
                    .await
                    .map_err(|f| failed(self.share, "making", path, f))?;
                self.dir(
                    item.handle.clone(),
                    made.fh.clone(),
                    path.to_string(),
                    depth + 1,
                )
                .await?;
                // Mode and times last: its contents are in, and writing them changed its time.
                self.finish(&made.fh, &item.attr, path).await
            }
            TYPE_REG => self.file(&item, to, path).await,
            TYPE_LNK => self.symlink(&item, to, path).await,
            other => {
                tracing::warn!(
                    share = self.share.key.describe(),
                    path,
                    file_type = other,
                    "not copied: only directories, files and symbolic links can be made over NFS"
                );
                Ok(())
            }
        }
    }

    async fn file(&self, item: &Item, to: &Bytes, path: &str) -> Result<()> {
        let _open = self
            .throttle
            .files
            .acquire()
            .await
            .map_err(|_| Tracker::cancelled_error())?;
        self.check()?;
        // Owner-writable while it is filled (NFSv3 checks every WRITE); its mode comes last.
        let made = self
            .share
            .create_file(to, &item.name, 0o600)
            .await
            .map_err(|f| failed(self.share, "creating", path, f))?;
        let copied = self
            .data(&item.handle, &made.fh, item.attr.filesize, path)
            .await;
        let closed = self.share.close(&made.fh).await;
        copied?;
        closed.map_err(|f| failed(self.share, "closing", path, f))?;
        self.finish(&made.fh, &item.attr, path).await
    }

    /// Copies a file's data (up to `size`, or less if the file shrank meanwhile).
    async fn data(&self, from: &Bytes, to: &Bytes, size: u64, path: &str) -> Result<()> {
        let chunk = u64::from(self.chunk);
        // Where the data read ends, and where the data written ends: zeros after the last
        // write are made by setting the size.
        let end = AtomicU64::new(0);
        let written_end = AtomicU64::new(0);
        let chunks: Vec<Result<Vec<WriteOutcome>>> =
            futures::stream::iter((0..size.div_ceil(chunk)).map(|i| i * chunk))
                .map(|offset| {
                    let len = chunk.min(size - offset) as u32;
                    let (end, written_end) = (&end, &written_end);
                    async move {
                        let _buffer = self
                            .throttle
                            .chunks
                            .acquire()
                            .await
                            .map_err(|_| Tracker::cancelled_error())?;
                        self.check()?;
                        let data = self.read(from, offset, len, path).await?;
                        end.fetch_max(offset + data.len() as u64, Ordering::Relaxed);
                        let n = data.len() as i64;
                        // A chunk of zeros is left a hole: the final size makes it read as zeros.
                        let written = if data.iter().all(|b| *b == 0) {
                            Vec::new()
                        } else {
                            written_end.fetch_max(offset + data.len() as u64, Ordering::Relaxed);
                            self.write(to, offset, data, path).await?
                        };
                        self.tracker.add(n);
                        Ok::<_, ProviderError>(written)
                    }
                })
                .buffer_unordered(PER_FILE)
                .collect()
                .await;
        let writes: Vec<WriteOutcome> = all_ok(chunks)
            .map_err(|e| self.failed(e))?
            .into_iter()
            .flatten()
            .collect();
        if !writes.is_empty() {
            self.share
                .commit(to, &writes)
                .await
                .map_err(|f| failed(self.share, "committing", path, f))?;
        }
        let end = end.into_inner();
        if written_end.into_inner() < end {
            self.share
                .setattr(
                    to,
                    SetAttrs {
                        size: Some(end),
                        ..SetAttrs::default()
                    },
                )
                .await
                .map_err(|f| failed(self.share, "sizing", path, f))?;
        }
        Ok(())
    }

    /// Reads `len` bytes at `offset`, in several READs if the server sends less; fewer only
    /// at the end of the file.
    async fn read(&self, fh: &Bytes, offset: u64, len: u32, path: &str) -> Result<Bytes> {
        let first = self
            .share
            .read(fh, offset, len)
            .await
            .map_err(|f| failed(self.share, "reading", path, f))?;
        if first.len() >= len as usize || first.is_empty() {
            return Ok(first);
        }
        let mut all = BytesMut::from(&first[..]);
        while all.len() < len as usize {
            let more = self
                .share
                .read(fh, offset + all.len() as u64, len - all.len() as u32)
                .await
                .map_err(|f| failed(self.share, "reading", path, f))?;
            if more.is_empty() {
                break;
            }
            all.extend_from_slice(&more);
        }
        Ok(all.freeze())
    }

    /// Writes all of `data` at `offset` (the server may take it in parts).
    async fn write(
        &self,
        fh: &Bytes,
        offset: u64,
        data: Bytes,
        path: &str,
    ) -> Result<Vec<WriteOutcome>> {
        let mut done = 0usize;
        let mut outcomes = Vec::with_capacity(1);
        while done < data.len() {
            let outcome = self
                .share
                .write(fh, offset + done as u64, data.slice(done..))
                .await
                .map_err(|f| failed(self.share, "writing", path, f))?;
            let n = outcome.count as usize;
            if n == 0 {
                return Err(ProviderError::temporary(format!(
                    "writing {path} on {}: the server took no bytes",
                    self.share.key.describe()
                )));
            }
            done += n.min(data.len() - done);
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    async fn symlink(&self, item: &Item, to: &Bytes, path: &str) -> Result<()> {
        self.check()?;
        let target = self
            .share
            .readlink(&item.handle)
            .await
            .map_err(|f| failed(self.share, "reading the link", path, f))?;
        let made = self
            .share
            .symlink(&target, to, &item.name)
            .await
            .map_err(|f| failed(self.share, "making the link", path, f))?;
        // A link's own mode means nothing; its owner and time are kept where the server can.
        let a = &item.attr;
        let mut attrs = SetAttrs {
            atime: Some(a.atime),
            mtime: Some(a.mtime),
            ..SetAttrs::default()
        };
        if !self.owner_refused.load(Ordering::Relaxed) {
            attrs.uid = Some(a.uid);
            attrs.gid = Some(a.gid);
        }
        // Best effort: a server may refuse attributes on links; if the connection is gone,
        // the next request says so.
        if let Err(f) = self.share.setattr(&made.fh, attrs).await {
            tracing::debug!(path, error = ?f, "a link's owner or time was not kept");
        }
        Ok(())
    }

    /// Gives a copied directory or file its source's owner, mode and times. Changing the
    /// owner clears set-id bits, so those are set again after it. Where the server refuses
    /// owners (a root-squashed export), the copy keeps what the server gave it.
    async fn finish(&self, fh: &Bytes, a: &Attr, path: &str) -> Result<()> {
        let mode = a.file_mode & 0o7777;
        let mut attrs = SetAttrs {
            mode: Some(mode),
            atime: Some(a.atime),
            mtime: Some(a.mtime),
            ..SetAttrs::default()
        };
        if !self.owner_refused.load(Ordering::Relaxed) {
            attrs.uid = Some(a.uid);
            attrs.gid = Some(a.gid);
        }
        let set = |attrs: SetAttrs| async move {
            self.share
                .setattr(fh, attrs)
                .await
                .map_err(|f| failed(self.share, "setting the attributes of", path, f))
        };
        match self.share.setattr(fh, attrs.clone()).await {
            Ok(()) => {}
            Err(Failure::Denied(why)) if attrs.uid.is_some() => {
                if !self.owner_refused.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        share = self.share.key.describe(),
                        error = why,
                        "the server refuses to set owners: copies belong to the provider's user"
                    );
                }
                attrs.uid = None;
                attrs.gid = None;
                set(attrs).await?;
                return Ok(());
            }
            Err(f) => return Err(failed(self.share, "setting the attributes of", path, f)),
        }
        if mode & 0o6000 != 0 {
            set(SetAttrs {
                mode: Some(mode),
                ..SetAttrs::default()
            })
            .await?;
        }
        Ok(())
    }
}
