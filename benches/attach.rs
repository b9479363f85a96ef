//! Attach benchmark against a real release server.
//!
//! 1. 1,000 pods, each with its own bound local claim, created at once on the local provider's
//!    node: time from each pod's create to its VolumeAttachment `attached=true` (p50/p99), and
//!    the total.
//! 2. The same with in-memory (network-disk-like) volumes spread over 10 nodes.
//! 3. Failover: a pod moved off a node marked out-of-service, until its volume is attached on
//!    the new node (p50/max over repeated moves).
//!
//! Run: `cargo bench --bench attach -- --pods 1000`

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

async fn bound_claims(addr: &str, ns: &str, class: &str, n: usize) -> HashMap<String, String> {
    let start_rv = current_rv(addr).await;
    let bound = EventLog::start(
        addr,
        &format!("/api/v1/namespaces/{ns}/persistentvolumeclaims?watch=1&resourceVersion={start_rv}&fieldSelector=status.phase%3DBound"),
    )
    .await;
    let ns_owned = ns.to_string();
    let class_owned = class.to_string();
    run_concurrently(addr, 64, n, move |i| {
        (
            format!("/api/v1/namespaces/{ns_owned}/persistentvolumeclaims"),
            json!({"metadata": {"name": format!("c{i}")},
                   "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "100Mi"}},
                            "storageClassName": class_owned}}),
        )
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let volumes: HashMap<String, String> = bound
            .events
            .lock()
            .iter()
            .filter_map(|(_, e)| {
                let o = &e["object"];
                Some((
                    o["spec"]["volumeName"].as_str()?.to_string(),
                    o["metadata"]["name"].as_str()?.to_string(),
                ))
            })
            .collect();
        if volumes.len() >= n {
            return volumes;
        }
        assert!(Instant::now() < deadline, "claims did not bind");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates one pod per claim at once; returns per-pod latency to attached, and the total.
async fn attach_all(
    addr: &str,
    ns: &str,
    volumes: &HashMap<String, String>,
    nodes: usize,
    node_base: &str,
) -> (Vec<Duration>, Duration) {
    let n = volumes.len();
    let start_rv = current_rv(addr).await;
    let attached = EventLog::start(
        addr,
        &format!("/apis/storage.k8s.io/v1/volumeattachments?watch=1&resourceVersion={start_rv}&fieldSelector=status.attached%3Dtrue"),
    )
    .await;
    let created: std::sync::Arc<parking_lot::Mutex<HashMap<String, Instant>>> = Default::default();
    let started = Instant::now();
    let (ns_owned, node_base, created_log) =
        (ns.to_string(), node_base.to_string(), created.clone());
    run_concurrently(addr, 64, n, move |i| {
        created_log.lock().insert(format!("c{i}"), Instant::now());
        let node = if nodes == 1 { node_base.clone() } else { format!("{node_base}-{}", i % nodes) };
        (
            format!("/api/v1/namespaces/{ns_owned}/pods"),
            json!({"metadata": {"name": format!("p{i}")},
                   "spec": {"nodeName": node, "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": format!("c{i}")}}]}}),
        )
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = attached.events.lock().len();
        if done >= n {
            break;
        }
        assert!(Instant::now() < deadline, "only {done} of {n} attached");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let total = started.elapsed();
    let created = created.lock();
    let mut latencies: Vec<Duration> = attached
        .events
        .lock()
        .iter()
        .filter_map(|(at, e)| {
            let volume = e["object"]["spec"]["source"]["persistentVolumeName"].as_str()?;
            let claim = volumes.get(volume)?;
            Some(at.duration_since(*created.get(claim)?))
        })
        .collect();
    latencies.sort();
    (latencies, total)
}

async fn failover(addr: &str, rounds: usize) -> Vec<Duration> {
    let volumes = bound_claims(addr, "failover", "mem", 1).await;
    let volume = volumes.keys().next().unwrap().clone();
    let mut conn = Conn::open(addr).await;
    let mut times = Vec::new();
    let mut current = "fo-0".to_string();
    for round in 0..rounds {
        let node = json!({"metadata": {"name": current.clone()}});
        conn.post_json("/api/v1/nodes", &node).await;
        let pod = format!("app-{round}");
        conn.post_json(
            "/api/v1/namespaces/failover/pods",
            &json!({"metadata": {"name": pod}, "spec": {"nodeName": current,
                "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "c0"}}]}}),
        )
        .await;
        wait_attached(&mut conn, &volume, &current).await;
        // In use on the node, then the node fails and is declared out of service.
        let unique = format!("kubernetes.io/csi/memory.stowage.dev^mem-{volume}");
        conn.request(
            "PATCH",
            &format!("/api/v1/nodes/{current}/status"),
            Some("application/merge-patch+json"),
            bytes::Bytes::from(
                serde_json::to_vec(&json!({"status": {"volumesInUse": [unique]}})).unwrap(),
            ),
        )
        .await;
        let started = Instant::now();
        conn.request("PATCH", &format!("/api/v1/nodes/{current}"), Some("application/merge-patch+json"),
            bytes::Bytes::from(serde_json::to_vec(&json!({"spec": {"taints": [{"key": "node.kubernetes.io/out-of-service", "effect": "NoExecute"}]}})).unwrap())).await;
        conn.request(
            "DELETE",
            &format!("/api/v1/namespaces/failover/pods/{pod}"),
            None,
            bytes::Bytes::new(),
        )
        .await;
        let next = format!("fo-{}", round + 1);
        conn.post_json(
            "/api/v1/namespaces/failover/pods",
            &json!({"metadata": {"name": format!("app-{round}-moved")}, "spec": {"nodeName": next,
                "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "c0"}}]}}),
        )
        .await;
        wait_attached(&mut conn, &volume, &next).await;
        times.push(started.elapsed());
        conn.request(
            "DELETE",
            &format!("/api/v1/namespaces/failover/pods/app-{round}-moved"),
            None,
            bytes::Bytes::new(),
        )
        .await;
        wait_gone_from(&mut conn, &volume, &next).await;
        current = next;
    }
    times.sort();
    times
}

async fn find_attachment(conn: &mut Conn, volume: &str, node: &str) -> Option<serde_json::Value> {
    let (_, body) = conn
        .get(&format!(
            "/apis/storage.k8s.io/v1/volumeattachments?fieldSelector=spec.nodeName%3D{node}"
        ))
        .await;
    let list: serde_json::Value = serde_json::from_slice(&body).ok()?;
    list["items"]
        .as_array()?
        .iter()
        .find(|v| v["spec"]["source"]["persistentVolumeName"] == volume)
        .cloned()
}

async fn wait_attached(conn: &mut Conn, volume: &str, node: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !find_attachment(conn, volume, node)
        .await
        .is_some_and(|v| v["status"]["attached"] == true)
    {
        assert!(
            Instant::now() < deadline,
            "{volume} never attached to {node}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn wait_gone_from(conn: &mut Conn, volume: &str, node: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while find_attachment(conn, volume, node).await.is_some() {
        assert!(
            Instant::now() < deadline,
            "{volume} never detached from {node}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn report(label: &str, latencies: &[Duration], total: Duration) {
    println!(
        "{label}: {} attached; all within {:.3} s; pod create → attached p50 {}  p99 {}  max {}",
        latencies.len(),
        total.as_secs_f64(),
        ms(percentile(latencies, 0.50)),
        ms(percentile(latencies, 0.99)),
        ms(*latencies.last().unwrap_or(&Duration::ZERO)),
    );
}

#[tokio::main]
async fn main() {
    let pods: usize = arg("pods", 1000);
    let config = server_config(
        "providers:\n  local:\n    node: node-a\n    capacity: 100Ti\n  memory:\n    enabled: true\n",
    );
    let server = Server::start(&[
        "--watch-history",
        "1000000",
        "--config",
        config.path().to_str().unwrap(),
    ]);
    let addr = server.addr.clone();
    let mut conn = Conn::open(&addr).await;
    conn.post_json(
        "/apis/storage.k8s.io/v1/storageclasses",
        &json!({"metadata": {"name": "mem"}, "provisioner": "memory.stowage.dev"}),
    )
    .await;
    println!("attach benchmark: {pods} pods, each with its own bound claim, created at once");

    let local = bound_claims(&addr, "local-pods", "local", pods).await;
    let (lat, total) = attach_all(&addr, "local-pods", &local, 1, "node-a").await;
    report("local, 1 node", &lat, total);

    let memory = bound_claims(&addr, "mem-pods", "mem", pods).await;
    let (lat, total) = attach_all(&addr, "mem-pods", &memory, 10, "node").await;
    report("in-memory, 10 nodes", &lat, total);

    let times = failover(&addr, 20).await;
    println!(
        "failover (out-of-service node → attached on the new node), 20 moves: p50 {}  max {}",
        ms(percentile(&times, 0.5)),
        ms(*times.last().unwrap())
    );
}
