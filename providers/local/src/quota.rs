//! Hard limits: XFS project quotas, where the root's filesystem supports them.
//!
//! Detection: the root is on XFS, mounted with `prjquota`/`pquota`, and `xfs_quota` is
//! installed. Then each volume directory becomes an XFS project with a hard block limit equal
//! to its size. Elsewhere the ledger's accounting is the limit (creates that would over-commit
//! are refused, but a volume can outgrow its size on disk).

use std::path::{Path, PathBuf};
use std::process::Command;

const XFS_SUPER_MAGIC: i64 = 0x5846_5342;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum QuotaMode {
    Accounting,
    XfsProjectQuota { mount_point: PathBuf },
}

impl QuotaMode {
    pub fn detect(root: &Path) -> QuotaMode {
        let is_xfs = nix::sys::statfs::statfs(root)
            .map(|s| s.filesystem_type().0 == XFS_SUPER_MAGIC)
            .unwrap_or(false);
        if !is_xfs {
            return QuotaMode::Accounting;
        }
        let Some((mount_point, options)) = mount_of(root) else {
            return QuotaMode::Accounting;
        };
        let quotas_on = options
            .split(',')
            .any(|o| o == "prjquota" || o == "pquota" || o == "pqnoenforce");
        let tool = Command::new("xfs_quota").arg("-V").output().is_ok();
        if quotas_on && tool {
            QuotaMode::XfsProjectQuota { mount_point }
        } else {
            tracing::info!(
                root = %root.display(),
                "root is on XFS without project quotas (mount with prjquota and install xfsprogs for hard limits)"
            );
            QuotaMode::Accounting
        }
    }

    pub fn describe(&self) -> &'static str {
        match self {
            QuotaMode::Accounting => "accounting",
            QuotaMode::XfsProjectQuota { .. } => "xfs-project-quota",
        }
    }

    /// Sets a hard limit of `bytes` on `dir` under project `id`. No-op without quota support.
    pub fn set(&self, dir: &Path, id: u32, bytes: i64) -> Result<(), String> {
        let QuotaMode::XfsProjectQuota { mount_point } = self else {
            return Ok(());
        };
        xfs_quota(
            mount_point,
            &[
                format!("project -s -p {} {id}", dir.display()),
                format!("limit -p bhard={bytes} {id}"),
            ],
        )
    }

    /// Lifts the limit of project `id`.
    pub fn clear(&self, id: u32) -> Result<(), String> {
        let QuotaMode::XfsProjectQuota { mount_point } = self else {
            return Ok(());
        };
        xfs_quota(mount_point, &[format!("limit -p bhard=0 {id}")])
    }
}

fn xfs_quota(mount_point: &Path, commands: &[String]) -> Result<(), String> {
    let mut cmd = Command::new("xfs_quota");
    cmd.arg("-x");
    for c in commands {
        cmd.arg("-c").arg(c);
    }
    let out = cmd
        .arg(mount_point)
        .output()
        .map_err(|e| format!("running xfs_quota: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "xfs_quota failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The mount point containing `path` and its super-block options, from /proc/self/mountinfo.
fn mount_of(path: &Path) -> Option<(PathBuf, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let mount_point = PathBuf::from(fields.get(4)?);
            let dash = fields.iter().position(|f| *f == "-")?;
            let super_options = fields.get(dash + 3)?.to_string();
            let mount_options = fields.get(5)?.to_string();
            path.starts_with(&mount_point)
                .then(|| (mount_point, format!("{mount_options},{super_options}")))
        })
        .max_by_key(|(m, _)| m.as_os_str().len())
}

/// A project id for a volume name: a stable hash, never 0 (the default project).
pub(crate) fn project_id(name: &str, taken: impl Fn(u32) -> bool) -> u32 {
    let mut id = name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    }) | 1;
    while taken(id) {
        id = id.wrapping_add(2);
    }
    id
}
