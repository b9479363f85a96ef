//! The node's mount table and the commands that change it.
//!
//! What is mounted is read from `/proc/self/mountinfo`, never remembered: after a crash the
//! table is the truth. Mounts go through the system's `mount`, `umount`, `blkid`, `mkfs.*`,
//! `e2fsck`, `resize2fs` and `xfs_growfs`, as Kubernetes' mount-utils do: they know every
//! filesystem's helpers and options. Every command runs with a deadline, so a dead NFS server
//! can stall one volume, never the agent. An unmount is never lazy: a busy mount stays until
//! its files are closed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// How long one mount command may take before it is abandoned (and its process killed).
const COMMAND_DEADLINE: Duration = Duration::from_secs(30);

/// Why a mount command failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// `umount` refused: files are open under the mount point.
    #[error("{0} is busy: files under it are still open")]
    Busy(PathBuf),
    #[error("{0}")]
    Failed(String),
    /// What was asked can never be done here (growing a filesystem type that cannot grow).
    #[error("{0}")]
    Unsupported(String),
}

pub type MountResult<T> = Result<T, MountError>;

/// The mount points in the mount table (unescaped), as of now.
pub fn mount_points() -> std::io::Result<HashSet<PathBuf>> {
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(parse_mountinfo(&table))
}

/// The mount points in a `mountinfo` text: the fifth field of each line, with the kernel's
/// octal escapes (`\040` for a space) undone.
pub fn parse_mountinfo(table: &str) -> HashSet<PathBuf> {
    table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs a command with the deadline; its combined error output on failure.
async fn run(program: &str, args: &[&str]) -> Result<String, (Option<i32>, String)> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| (None, format!("cannot run {program}: {e}")))?;
    match tokio::time::timeout(COMMAND_DEADLINE, child.wait_with_output()).await {
        Err(_) => Err((
            None,
            format!(
                "{program} {} did not finish within {}s",
                args.join(" "),
                COMMAND_DEADLINE.as_secs()
            ),
        )),
        Ok(Err(e)) => Err((None, format!("{program}: {e}"))),
        Ok(Ok(out)) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into()),
        Ok(Ok(out)) => {
            let mut msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if msg.is_empty() {
                msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
            }
            Err((
                out.status.code(),
                format!("{program} {}: {msg}", args.join(" ")),
            ))
        }
    }
}

fn failed((_, msg): (Option<i32>, String)) -> MountError {
    MountError::Failed(msg)
}

fn path_str(p: &Path) -> MountResult<&str> {
    p.to_str()
        .ok_or_else(|| MountError::Failed(format!("{} is not UTF-8", p.display())))
}

/// Bind-mounts `source` at `target` (read-only when asked: a bind mount takes `ro` only on a
/// remount, so it is two steps).
pub async fn bind(source: &Path, target: &Path, read_only: bool) -> MountResult<()> {
    let (s, t) = (path_str(source)?, path_str(target)?);
    run("mount", &["--bind", s, t]).await.map_err(failed)?;
    if read_only {
        run("mount", &["-o", "remount,bind,ro", t])
            .await
            .map_err(failed)?;
    }
    Ok(())
}

/// Mounts a filesystem of `fs_type` from `source` at `target` with `options`.
pub async fn mount(
    source: &str,
    target: &Path,
    fs_type: &str,
    options: &[String],
) -> MountResult<()> {
    let t = path_str(target)?;
    let opts = options.join(",");
    let mut args = vec!["-t", fs_type];
    if !opts.is_empty() {
        args.extend(["-o", opts.as_str()]);
    }
    args.extend([source, t]);
    run("mount", &args).await.map(drop).map_err(failed)
}

/// Unmounts `target`, never lazily: a busy mount is reported as [`MountError::Busy`].
pub async fn unmount(target: &Path) -> MountResult<()> {
    match run("umount", &[path_str(target)?]).await {
        Ok(_) => Ok(()),
        Err((_, msg)) if msg.contains("busy") => Err(MountError::Busy(target.to_path_buf())),
        Err((_, msg)) if msg.contains("not mounted") => Ok(()),
        Err(e) => Err(failed(e)),
    }
}

/// The filesystem on a device, or `None` when it is blank (no signature at all).
pub async fn filesystem_of(device: &Path) -> MountResult<Option<String>> {
    match run(
        "blkid",
        &["-p", "-s", "TYPE", "-o", "value", path_str(device)?],
    )
    .await
    {
        Ok(out) => Ok(Some(out.trim().to_string()).filter(|t| !t.is_empty())),
        // blkid's exit code 2: no signature found, the device is blank.
        Err((Some(2), _)) => Ok(None),
        Err(e) => Err(failed(e)),
    }
}

/// Makes a filesystem on a blank device. The caller has checked that it is blank: this is the
/// only place a filesystem is made, and it is never reached for a device that has one.
pub async fn make_filesystem(device: &Path, fs_type: &str) -> MountResult<()> {
    let dev = path_str(device)?;
    let program = format!("mkfs.{fs_type}");
    let args: Vec<&str> = match fs_type {
        // -F: a whole device, not a partition; -m0: no blocks reserved for root in a volume.
        "ext2" | "ext3" | "ext4" => vec!["-F", "-q", "-m0", dev],
        "xfs" => vec!["-q", dev],
        _ => vec![dev],
    };
    run(&program, &args).await.map(drop).map_err(failed)
}

/// Grows the filesystem on `device` (mounted at `mount_point`, if it is) to fill the device.
pub async fn grow_filesystem(
    device: &Path,
    fs_type: &str,
    mount_point: Option<&Path>,
) -> MountResult<()> {
    let dev = path_str(device)?;
    match fs_type {
        "ext2" | "ext3" | "ext4" => {
            if mount_point.is_none() {
                // resize2fs wants a freshly checked filesystem when it is offline.
                run("e2fsck", &["-f", "-p", dev]).await.map_err(failed)?;
            }
            run("resize2fs", &[dev]).await.map(drop).map_err(failed)
        }
        "xfs" => {
            let Some(mp) = mount_point else {
                return Err(MountError::Failed(
                    "xfs grows only while mounted".to_string(),
                ));
            };
            run("xfs_growfs", &[path_str(mp)?])
                .await
                .map(drop)
                .map_err(failed)
        }
        other => Err(MountError::Unsupported(format!(
            "growing a {other} filesystem is not supported"
        ))),
    }
}

/// Bytes of a block device.
pub async fn device_bytes(device: &Path) -> Option<u64> {
    let out = run("blockdev", &["--getsize64", device.to_str()?])
        .await
        .ok()?;
    out.trim().parse().ok()
}

/// Whether this node can mount NFS: a kernel NFS client needs the `mount.nfs` helper.
pub fn has_nfs_client() -> bool {
    [
        "/sbin/mount.nfs",
        "/usr/sbin/mount.nfs",
        "/usr/bin/mount.nfs",
    ]
    .iter()
    .any(|p| Path::new(p).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_points_are_unescaped() {
        let table = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n\
                     37 35 0:5 / /var/lib/stowage-node/pods/u/volumes/data rw - tmpfs t rw\n";
        let points = parse_mountinfo(table);
        assert!(points.contains(Path::new("/mnt/with space")));
        assert!(points.contains(Path::new("/var/lib/stowage-node/pods/u/volumes/data")));
        assert_eq!(points.len(), 2);
    }

    #[test]
    fn a_trailing_backslash_is_kept() {
        assert_eq!(unescape("a\\0"), "a\\0");
        assert_eq!(unescape("a\\134b"), "a\\b");
    }
}
