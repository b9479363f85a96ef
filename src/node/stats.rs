//! Volume stats on the agent's `/metrics`, under the kubelet's metric names so that existing
//! dashboards and alerts (`kubelet_volume_stats_available_bytes` and friends) work unchanged.
//!
//! The figures are read with `statvfs` on each published volume once per agent pass, off the
//! async threads and with a deadline: a hung NFS server makes its volume abnormal, it does not
//! hang the agent or the scrape.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

/// One published volume's figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeStats {
    pub namespace: String,
    pub claim: String,
    /// `None` when the mount did not answer: the volume is abnormal.
    pub usage: Option<Usage>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub capacity_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub inodes: u64,
    pub inodes_free: u64,
    pub inodes_used: u64,
}

/// A metric family: name, help, and the figure it shows.
type Family = (&'static str, &'static str, fn(&Usage) -> u64);

/// The latest figures, shared with the `/metrics` handler.
#[derive(Clone, Default)]
pub struct Stats(Arc<Mutex<Vec<VolumeStats>>>);

impl Stats {
    pub fn set(&self, volumes: Vec<VolumeStats>) {
        *self.0.lock() = volumes;
    }

    /// The Prometheus text exposition of the figures.
    pub fn render(&self) -> String {
        let volumes = self.0.lock().clone();
        let mut out = String::new();
        let families: [Family; 6] = [
            (
                "kubelet_volume_stats_capacity_bytes",
                "Capacity in bytes of the volume",
                |u| u.capacity_bytes,
            ),
            (
                "kubelet_volume_stats_available_bytes",
                "Number of available bytes in the volume",
                |u| u.available_bytes,
            ),
            (
                "kubelet_volume_stats_used_bytes",
                "Number of used bytes in the volume",
                |u| u.used_bytes,
            ),
            (
                "kubelet_volume_stats_inodes",
                "Maximum number of inodes in the volume",
                |u| u.inodes,
            ),
            (
                "kubelet_volume_stats_inodes_free",
                "Number of free inodes in the volume",
                |u| u.inodes_free,
            ),
            (
                "kubelet_volume_stats_inodes_used",
                "Number of used inodes in the volume",
                |u| u.inodes_used,
            ),
        ];
        for (name, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for v in &volumes {
                if let Some(u) = &v.usage {
                    let _ = writeln!(out, "{name}{} {}", labels(v), value(u));
                }
            }
        }
        let name = "kubelet_volume_stats_health_status_abnormal";
        let _ = writeln!(
            out,
            "# HELP {name} Abnormal volume health status: 1 when the mount does not answer\n# TYPE {name} gauge"
        );
        for v in &volumes {
            let _ = writeln!(out, "{name}{} {}", labels(v), u8::from(v.usage.is_none()));
        }
        out
    }
}

fn labels(v: &VolumeStats) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "{{namespace=\"{}\",persistentvolumeclaim=\"{}\"}}",
        esc(&v.namespace),
        esc(&v.claim)
    )
}

/// Reads a mounted volume's usage; `Err` when the mount does not answer within `deadline`
/// (a stale NFS handle, a vanished device) or fails.
pub async fn usage_of(path: &Path, deadline: Duration) -> Result<Usage, String> {
    let p = path.to_path_buf();
    let read = tokio::task::spawn_blocking(move || nix::sys::statvfs::statvfs(&p));
    match tokio::time::timeout(deadline, read).await {
        Err(_) => Err(format!("no answer within {}s", deadline.as_secs())),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(Err(e))) => Err(e.desc().to_string()),
        Ok(Ok(Ok(st))) => {
            let frag = st.fragment_size();
            let capacity = st.blocks() * frag;
            let free = st.blocks_free() * frag;
            let available = st.blocks_available() * frag;
            let (files, files_free) = (st.files(), st.files_free());
            Ok(Usage {
                capacity_bytes: capacity,
                available_bytes: available,
                used_bytes: capacity.saturating_sub(free),
                inodes: files,
                inodes_free: files_free,
                inodes_used: files.saturating_sub(files_free),
            })
        }
    }
}

/// Serves `/metrics` (and `/healthz`) until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, stats: Stats) {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let stats = stats.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        stats.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("serving metrics: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_render_with_kubelet_names_and_abnormal_volumes_say_so() {
        let s = Stats::default();
        let usage = Usage {
            capacity_bytes: 100,
            available_bytes: 40,
            used_bytes: 50,
            inodes: 10,
            inodes_free: 7,
            inodes_used: 3,
        };
        s.set(vec![
            VolumeStats {
                namespace: "a".into(),
                claim: "data".into(),
                usage: Some(usage),
            },
            VolumeStats {
                namespace: "b".into(),
                claim: "gone\"".into(),
                usage: None,
            },
        ]);
        let text = s.render();
        assert!(text.contains(
            "kubelet_volume_stats_available_bytes{namespace=\"a\",persistentvolumeclaim=\"data\"} 40"
        ));
        assert!(text.contains(
            "kubelet_volume_stats_inodes_used{namespace=\"a\",persistentvolumeclaim=\"data\"} 3"
        ));
        assert!(text.contains("kubelet_volume_stats_health_status_abnormal{namespace=\"b\",persistentvolumeclaim=\"gone\\\"\"} 1"));
        assert!(!text.contains("kubelet_volume_stats_used_bytes{namespace=\"b\""));
    }

    #[tokio::test]
    async fn usage_reads_a_real_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let u = usage_of(dir.path(), Duration::from_secs(5)).await.unwrap();
        assert!(u.capacity_bytes > 0 && u.available_bytes <= u.capacity_bytes);
        assert!(u.inodes_used <= u.inodes);
    }
}
