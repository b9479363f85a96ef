//! NFS provisioning benchmark: N claims of an NFS class through the API of a real release
//! server, against a real nfs-ganesha on loopback (NFSv4.1). Reports the time until every claim
//! is Bound, per-claim create → Bound latency, and NFS requests per volume (from the server's
//! `stowage_provider_backend_requests_total`); then deletes them all and reports the same for
//! deletion.
//!
//! Run: `cargo bench --bench nfs -- --n 1000`
//!
//! Claims ask for 64 MiB each: the provider refuses to commit more than the export's
//! filesystem holds, and 1,000 claims of 64 MiB fit on any test machine.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::json;
use stowage_provider_nfs::testing::Ganesha;
use support::*;

/// NFS requests the server has made so far, by procedure.
async fn nfs_requests(addr: &str) -> BTreeMap<String, u64> {
    let mut conn = Conn::open(addr).await;
    let (_, body) = conn.get("/metrics").await;
    let text = String::from_utf8_lossy(&body).into_owned();
    backend_requests(&text, "nfs.stowage.dev")
}

fn per_volume(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, n: usize) -> String {
    let mut parts = Vec::new();
    let mut total = 0;
    for (op, count) in after {
        let d = count - before.get(op).copied().unwrap_or(0);
        if d > 0 {
            total += d;
            parts.push(format!("{op} {:.2}", d as f64 / n as f64));
        }
    }
    format!(
        "{:.2} NFS requests per volume ({})",
        total as f64 / n as f64,
        parts.join(", ")
    )
}

#[tokio::main]
async fn main() {
    let n: usize = arg("n", 1000);
    let clients: usize = arg("clients", 32);
    let dir = tempfile::tempdir().unwrap();
    let ganesha = Ganesha::start(dir.path())
        .expect("nfs-ganesha (apt-get install nfs-ganesha nfs-ganesha-vfs)");
    let server = Server::start(&["--watch-history", "1000000", "--no-default-class"]);
    let addr = server.addr.clone();
    let mut conn = Conn::open(&addr).await;
    let (code, body) = conn
        .post_json(
            "/apis/storage.k8s.io/v1/storageclasses",
            &json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                    "metadata": {"name": "nfs"}, "provisioner": "nfs.stowage.dev",
                    "parameters": {"server": ganesha.server(), "share": ganesha.share(),
                                   "subDir": "${pvc.metadata.namespace}/${pvc.metadata.name}"}}),
        )
        .await;
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    println!(
        "NFS provisioning benchmark: {n} claims of an NFS class (nfs-ganesha on loopback, NFSv4.1), {clients} clients"
    );

    let start_rv = current_rv(&addr).await;
    let bound = EventLog::start(
        &addr,
        &format!("/api/v1/persistentvolumeclaims?watch=1&resourceVersion={start_rv}&fieldSelector=status.phase%3DBound"),
    )
    .await;
    let before = nfs_requests(&addr).await;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (addr, next, sent) = (addr.clone(), next.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&addr).await;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let (ns, name) = (format!("team-{}", i % 8), format!("data-{i}"));
                sent.lock().insert(format!("{ns}/{name}"), Instant::now());
                let (code, body) = conn
                    .post_json(
                        &format!("/api/v1/namespaces/{ns}/persistentvolumeclaims"),
                        &json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                "metadata": {"name": name},
                                "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "nfs",
                                         "resources": {"requests": {"storage": "64Mi"}}}}),
                    )
                    .await;
                assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while bound.events.lock().len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} claims bound",
            bound.events.lock().len()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let total = started.elapsed();
    let after = nfs_requests(&addr).await;
    let mut latencies: Vec<Duration> = {
        let sent = sent.lock();
        bound
            .events
            .lock()
            .iter()
            .filter_map(|(at, e)| {
                let o = &e["object"]["metadata"];
                let key = format!("{}/{}", o["namespace"].as_str()?, o["name"].as_str()?);
                Some(at.duration_since(*sent.get(&key)?))
            })
            .collect()
    };
    latencies.sort();
    let dirs = (0..8)
        .map(|t| {
            std::fs::read_dir(ganesha.export_dir().join(format!("team-{t}")))
                .map(|d| d.count())
                .unwrap_or(0)
        })
        .sum::<usize>();
    println!(
        "all {n} Bound {:.2} s after the first create ({:.0} volumes/s); create → Bound p50 {} p99 {} max {}; {dirs} directories on the export",
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64(),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap()),
    );
    println!("provisioning: {}", per_volume(&before, &after, n));
    assert_eq!(dirs, n, "every bound claim has its directory");

    // Delete them all: claims, then (reclaim Delete) volumes and directories.
    let before = after;
    let started = Instant::now();
    for t in 0..8 {
        let (code, body) = conn
            .request(
                "DELETE",
                &format!("/api/v1/namespaces/team-{t}/persistentvolumeclaims"),
                None,
                bytes::Bytes::new(),
            )
            .await;
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (_, body) = conn.get("/api/v1/persistentvolumes?limit=1").await;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if v["items"].as_array().is_some_and(|i| i.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "volumes still there after 300 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = nfs_requests(&addr).await;
    let left = (0..8)
        .map(|t| {
            std::fs::read_dir(ganesha.export_dir().join(format!("team-{t}")))
                .map(|d| d.count())
                .unwrap_or(0)
        })
        .sum::<usize>();
    println!(
        "deleting: all {n} volumes and directories gone in {:.2} s; {}; {left} directories left",
        started.elapsed().as_secs_f64(),
        per_volume(&before, &after, n)
    );
    assert_eq!(left, 0);
}
