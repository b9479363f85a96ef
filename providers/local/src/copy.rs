//! Copying a directory tree as `cp -a` does: contents, modes, owners, times, symbolic and hard
//! links, FIFOs and device nodes. Snapshots, restores and clones are all this copy.
//!
//! The source is a tenant's volume, possibly in use while it is copied, and the copy runs as
//! the server: a symbolic link swapped in for a directory or a file between the walk and the
//! copy must not make it read outside the volume (`/etc/shadow`, another tenant's volume).
//! So every path is opened beneath the source's root with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV)`, and a file is copied only if what was opened is the
//! very regular file the walk saw (same device and inode). Linux 5.6 or later.
//!
//! File data moves with `copy_file_range` between the data segments of the source
//! (`SEEK_DATA`/`SEEK_HOLE`), so holes stay holes: on XFS and Btrfs that shares extents (a
//! reflink, nearly free); elsewhere the kernel copies without the data passing through this
//! process. Files are copied by several threads at once, because a tree of small files is bound
//! by per-file system calls, not by bandwidth. Before anything is written, the room the source
//! takes is checked against the free space of the target's filesystem.
//!
//! Extended attributes and ACLs are not copied.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, UtimensatFlags, fstat, fstatat, mknod, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Whence, lseek};
use parking_lot::Mutex;
use stowage_provider::copies::Tracker;

/// How many files are copied at once.
fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() * 2)
        .unwrap_or(4)
        .clamp(2, 8)
}

/// One thing in the tree, by its path relative to the root, as the walk saw it.
struct Item {
    relative: PathBuf,
    stat: FileStat,
}

fn kind(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits())
}

fn permissions(stat: &FileStat) -> u32 {
    stat.st_mode & 0o7777
}

/// Opens `relative` beneath `root`, never through a symbolic link, never onto another
/// filesystem, never outside.
fn beneath(root: &OwnedFd, relative: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    let relative = if relative.as_os_str().is_empty() {
        Path::new(".")
    } else {
        relative
    };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    openat2(root, relative, how).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!(
                "{}: {e} (did it change during the copy?)",
                relative.display()
            ),
        )
    })
}

/// Bytes of regular-file data under `root`, without following links.
#[cfg(test)]
pub fn tree_bytes(root: &Path) -> io::Result<i64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0i64;
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() && (meta.nlink() == 1 || seen.insert((meta.dev(), meta.ino())))
            {
                total += meta.len() as i64;
            }
        }
    }
    Ok(total)
}

/// Copies the tree at `from` into `to`, which must not exist. `to`'s parent must exist.
/// Stops with [`Tracker::cancelled_error`]'s message when the tracker is cancelled, and with
/// [`io::ErrorKind::StorageFull`] when the target has no room for it.
pub fn copy_tree(from: &Path, to: &Path, tracker: &Tracker) -> io::Result<()> {
    let root = nix::fcntl::open(
        from,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut dirs = Vec::new();
    let mut others = Vec::new();
    let mut stack = vec![PathBuf::new()];
    // The walk: directories in parent-before-child order, everything else after.
    while let Some(relative) = stack.pop() {
        let fd = beneath(&root, &relative, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        let stat = fstat(&fd)?;
        let mut dir = Dir::from_fd(fd)?;
        let mut names: Vec<OsString> = Vec::new();
        for entry in dir.iter() {
            let name = entry?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                names.push(OsString::from(OsStr::from_bytes(&name)));
            }
        }
        names.sort();
        for name in names {
            let s = fstatat(dir.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
            let child = relative.join(&name);
            if kind(&s) == SFlag::S_IFDIR {
                stack.push(child);
            } else {
                others.push(Item {
                    relative: child,
                    stat: s,
                });
            }
        }
        dirs.push(Item { relative, stat });
    }

    // Hard links: the first path of an inode is copied, the others link to that copy. They are
    // done after the parallel copy, so the first copy exists.
    let mut first_of: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut links = Vec::new();
    let mut work = Vec::new();
    for item in &others {
        if item.stat.st_nlink > 1 && kind(&item.stat) != SFlag::S_IFLNK {
            let id = (item.stat.st_dev, item.stat.st_ino);
            if let Some(first) = first_of.get(&id) {
                links.push((first.clone(), item.relative.clone()));
                continue;
            }
            first_of.insert(id, item.relative.clone());
        }
        work.push(item);
    }
    let files = || work.iter().filter(|i| kind(&i.stat) == SFlag::S_IFREG);
    tracker.set_total(files().map(|i| i.stat.st_size).sum());
    ensure_room(
        to,
        files().map(|i| i.stat.st_blocks * 512).sum::<i64>() + dirs.len() as i64 * 4096,
    )?;

    for d in &dirs {
        // Owner-writable while filling it; its own mode is set once its contents are in.
        fs::create_dir(to.join(&d.relative))?;
    }
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<io::Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..workers().min(work.len().max(1)) {
            scope.spawn(|| {
                loop {
                    if tracker.is_cancelled() || failure.lock().is_some() {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = work.get(i) else { return };
                    match copy_one(&root, to, item) {
                        Ok(bytes) => tracker.add(bytes),
                        Err(e) => {
                            let mut f = failure.lock();
                            if f.is_none() {
                                *f = Some(io::Error::new(
                                    e.kind(),
                                    format!("{}: {e}", item.relative.display()),
                                ));
                            }
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner() {
        return Err(e);
    }
    if tracker.is_cancelled() {
        return Err(io::Error::other(Tracker::cancelled_error().message));
    }
    for (first, other) in links {
        fs::hard_link(to.join(first), to.join(other))?;
    }
    // Deepest first, so setting a directory's times is not undone by filling its children.
    for d in dirs.iter().rev() {
        let target = to.join(&d.relative);
        fs::set_permissions(&target, fs::Permissions::from_mode(permissions(&d.stat)))?;
        keep_owner_and_times(&target, &d.stat)?;
    }
    Ok(())
}

/// Refuses a copy that needs more than the free space where it goes (`StorageFull`).
fn ensure_room(to: &Path, bytes: i64) -> io::Result<()> {
    let parent = to.parent().unwrap_or(to);
    let st = nix::sys::statvfs::statvfs(parent)?;
    let free = (st.blocks_available() as i64).saturating_mul(st.fragment_size() as i64);
    if bytes > free {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!("the copy needs {bytes} bytes and {free} are free"),
        ));
    }
    Ok(())
}

/// Copies one non-directory; returns the data bytes it moved.
fn copy_one(root: &OwnedFd, to: &Path, item: &Item) -> io::Result<i64> {
    let target = to.join(&item.relative);
    let stat = &item.stat;
    let bytes = match kind(stat) {
        SFlag::S_IFREG => {
            let source = beneath(root, &item.relative, OFlag::O_RDONLY)?;
            let now = fstat(&source)?;
            if kind(&now) != SFlag::S_IFREG
                || (now.st_dev, now.st_ino) != (stat.st_dev, stat.st_ino)
            {
                return Err(io::Error::other("it was replaced during the copy"));
            }
            let out = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(permissions(stat))
                .open(&target)?;
            copy_data(&source, &out, now.st_size)?;
            now.st_size
        }
        SFlag::S_IFLNK => {
            let parent = item.relative.parent().unwrap_or(Path::new(""));
            let dir = beneath(root, parent, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
            let name = item.relative.file_name().unwrap_or_default();
            std::os::unix::fs::symlink(readlinkat(&dir, name)?, &target)?;
            0
        }
        flag @ (SFlag::S_IFIFO | SFlag::S_IFCHR | SFlag::S_IFBLK) => {
            mknod(
                &target,
                flag,
                Mode::from_bits_truncate(permissions(stat)),
                stat.st_rdev,
            )?;
            fs::set_permissions(&target, fs::Permissions::from_mode(permissions(stat)))?;
            0
        }
        // A socket is not content: a copy of one would not be listened on.
        _ => return Ok(0),
    };
    keep_owner_and_times(&target, stat)?;
    Ok(bytes)
}

/// Copies `len` bytes of `source` into `out` segment by segment of data, leaving holes as
/// holes; the kernel moves the data (or shares the extents, where the filesystem can).
fn copy_data(source: &OwnedFd, out: &fs::File, len: i64) -> io::Result<()> {
    let mut offset = 0i64;
    while offset < len {
        let data = match lseek(source, offset, Whence::SeekData) {
            Ok(at) => at,
            // No data after `offset`: the rest is a hole.
            Err(Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let hole = lseek(source, data, Whence::SeekHole)?.min(len);
        let (mut from, mut into) = (data, data);
        while from < hole {
            let want = (hole - from) as usize;
            let n = nix::fcntl::copy_file_range(
                source,
                Some(&mut from),
                out.as_fd(),
                Some(&mut into),
                want,
            )?;
            if n == 0 {
                // The file shrank under us: what was copied is what there is.
                break;
            }
        }
        offset = hole;
    }
    out.set_len(len as u64)
}

/// Gives `target` the owner and the access and modification times of `stat`, without following
/// a symbolic link. Changing the owner needs privilege; without it, the copy keeps the
/// copier's, as `cp -a` does for an ordinary user.
fn keep_owner_and_times(target: &Path, stat: &FileStat) -> io::Result<()> {
    match std::os::unix::fs::lchown(target, Some(stat.st_uid), Some(stat.st_gid)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
        Err(e) => return Err(e),
    }
    // chown clears set-user-ID and set-group-ID bits: put them back.
    if stat.st_mode & 0o6000 != 0 && kind(stat) != SFlag::S_IFLNK {
        fs::set_permissions(target, fs::Permissions::from_mode(permissions(stat)))?;
    }
    utimensat(
        nix::fcntl::AT_FDCWD,
        target,
        &TimeSpec::new(stat.st_atime, stat.st_atime_nsec),
        &TimeSpec::new(stat.st_mtime, stat.st_mtime_nsec),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

/// Removes a tree if it is there.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Flushes everything written to the filesystem holding `path` to stable storage, so that a
/// copy renamed into place after this is whole after a power loss too.
pub fn sync_filesystem(path: &Path) -> io::Result<()> {
    let fd = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    nix::unistd::syncfs(fd)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, Write};
    use std::os::unix::fs::{FileTypeExt, MetadataExt, symlink};

    #[test]
    fn a_copy_keeps_contents_modes_links_holes_and_times() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        fs::create_dir_all(from.join("a/b")).unwrap();
        fs::File::create(from.join("a/b/data"))
            .unwrap()
            .write_all(&vec![7u8; 300_000])
            .unwrap();
        fs::write(from.join("top"), b"hello").unwrap();
        fs::set_permissions(from.join("top"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::hard_link(from.join("top"), from.join("a/also-top")).unwrap();
        symlink("b/data", from.join("a/link")).unwrap();
        nix::unistd::mkfifo(&from.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        // 64 MiB apparent, 4 KiB of data at the end.
        let mut sparse = fs::File::create(from.join("sparse")).unwrap();
        sparse.seek(io::SeekFrom::Start((64 << 20) - 4096)).unwrap();
        sparse.write_all(&[1u8; 4096]).unwrap();
        drop(sparse);
        fs::set_permissions(from.join("a"), fs::Permissions::from_mode(0o750)).unwrap();
        let old = TimeSpec::new(1_000_000, 0);
        utimensat(
            nix::fcntl::AT_FDCWD,
            &from.join("a"),
            &old,
            &old,
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();

        let to = dir.path().join("to");
        let tracker = Tracker::default();
        copy_tree(&from, &to, &tracker).unwrap();

        assert_eq!(fs::read(to.join("a/b/data")).unwrap(), vec![7u8; 300_000]);
        assert_eq!(fs::read(to.join("top")).unwrap(), b"hello");
        assert_eq!(fs::metadata(to.join("top")).unwrap().mode() & 0o777, 0o640);
        assert_eq!(
            fs::metadata(to.join("a/also-top")).unwrap().ino(),
            fs::metadata(to.join("top")).unwrap().ino(),
            "a hard link stays one file"
        );
        assert_eq!(
            fs::read_link(to.join("a/link")).unwrap(),
            Path::new("b/data")
        );
        assert!(
            fs::symlink_metadata(to.join("fifo"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
        let copied = fs::metadata(to.join("sparse")).unwrap();
        assert_eq!(copied.len(), 64 << 20);
        assert!(copied.blocks() * 512 < 1 << 20, "the hole stays a hole");
        assert_eq!(
            &fs::read(to.join("sparse")).unwrap()[(64 << 20) - 4096..],
            &[1u8; 4096]
        );
        let a = fs::metadata(to.join("a")).unwrap();
        assert_eq!(a.mode() & 0o777, 0o750);
        assert_eq!(a.mtime(), 1_000_000, "a directory keeps its time");
        let progress = tracker.progress();
        assert_eq!(progress.total_bytes, 300_005 + (64 << 20));
        assert_eq!(progress.done_bytes, progress.total_bytes);
        assert_eq!(
            tree_bytes(&to).unwrap(),
            300_005 + (64 << 20),
            "a hard link counts once"
        );
    }

    #[test]
    fn links_never_lead_the_copy_out_of_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        fs::create_dir(&secret).unwrap();
        fs::write(secret.join("key"), b"private").unwrap();
        let from = dir.path().join("from");
        fs::create_dir(&from).unwrap();
        // A link to a directory outside is copied as a link, never followed.
        symlink(&secret, from.join("outside")).unwrap();
        let to = dir.path().join("to");
        copy_tree(&from, &to, &Tracker::default()).unwrap();
        assert_eq!(fs::read_link(to.join("outside")).unwrap(), secret);
        assert!(
            fs::symlink_metadata(to.join("outside"))
                .unwrap()
                .file_type()
                .is_symlink()
        );

        // A file the walk saw, replaced by a link before it is copied: opening it beneath the
        // root refuses the link.
        fs::write(from.join("file"), b"mine").unwrap();
        let root = nix::fcntl::open(
            &from,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        fs::remove_file(from.join("file")).unwrap();
        symlink(secret.join("key"), from.join("file")).unwrap();
        assert!(beneath(&root, Path::new("file"), OFlag::O_RDONLY).is_err());
        // And a directory on the way replaced by a link.
        fs::create_dir(from.join("d")).unwrap();
        fs::remove_dir(from.join("d")).unwrap();
        symlink(&secret, from.join("d")).unwrap();
        assert!(beneath(&root, Path::new("d/key"), OFlag::O_RDONLY).is_err());
    }

    #[test]
    fn a_cancelled_copy_stops_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        fs::create_dir(&from).unwrap();
        for i in 0..50 {
            fs::write(from.join(format!("f{i}")), b"x").unwrap();
        }
        let tracker = Tracker::default();
        // Cancelled before it starts: no file is copied.
        tracker.cancel();
        let err = copy_tree(&from, &dir.path().join("to"), &tracker).unwrap_err();
        assert!(err.to_string().contains("cancelled"), "{err}");
        assert_eq!(tracker.progress().done_bytes, 0);
    }

    #[test]
    fn a_copy_larger_than_the_free_space_is_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let err = ensure_room(&dir.path().join("to"), i64::MAX).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert!(ensure_room(&dir.path().join("to"), 1).is_ok());
    }

    #[test]
    fn a_missing_source_is_an_error_and_nothing_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("to");
        assert!(copy_tree(&dir.path().join("nope"), &to, &Tracker::default()).is_err());
        assert!(!to.exists());
    }
}
