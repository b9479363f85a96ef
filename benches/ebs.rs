//! EBS lifecycle benchmark: N claims and N pods (across 4 nodes) through the whole life of a
//! volume (create, attach, detach, delete) on a real release server against a real EC2 API
//! (moto's server mode on loopback). Reports the time of each phase and the EC2 calls per
//! volume by API, from the server's `stowage_provider_backend_requests_total`.
//!
//! Between the detach and delete phases, one volume is moved ten times off a node declared out
//! of service onto a node on a fresh instance (the failover figure; its EC2 calls are counted
//! apart from the lifecycle's).
//!
//! Run: `cargo bench --bench ebs -- --n 200` (needs moto: `scripts/test.sh` installs it into
//! `.cache/moto`).

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stowage_provider_ebs::testing::Moto;
use support::*;

const NODES: usize = 4;

async fn list(conn: &mut Conn, path: &str) -> Vec<Value> {
    let (code, body) = conn.get(path).await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    v["items"].as_array().cloned().unwrap_or_default()
}

/// Waits until `done(items)` for the list at `path`; returns how long it took.
async fn wait_list(conn: &mut Conn, path: &str, what: &str, done: impl Fn(&[Value]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if done(&list(conn, path).await) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Deletes the collection at `path`, then waits until the list at `until_empty` is empty.
async fn delete_all_then_wait(conn: &mut Conn, path: &str, until_empty: &str) {
    let (code, body) = conn
        .request("DELETE", path, None, bytes::Bytes::new())
        .await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    wait_list(conn, until_empty, until_empty, |items| items.is_empty()).await;
}

async fn ec2_calls(addr: &str) -> std::collections::BTreeMap<String, u64> {
    let mut conn = Conn::open(addr).await;
    let (_, body) = conn.get("/metrics").await;
    backend_requests(&String::from_utf8_lossy(&body), "ebs.stowage.dev")
}

/// Whether a volume is attached to `node` (during failover only `c0`'s volume is in use).
async fn attached_on(conn: &mut Conn, node: &str) -> bool {
    let (_, body) = conn
        .get(&format!(
            "/apis/storage.k8s.io/v1/volumeattachments?fieldSelector=spec.nodeName%3D{node}"
        ))
        .await;
    let list: Value = serde_json::from_slice(&body).unwrap();
    list["items"]
        .as_array()
        .is_some_and(|items| items.iter().any(|v| v["status"]["attached"] == true))
}

async fn patch(conn: &mut Conn, path: &str, body: Value) {
    let (code, resp) = conn
        .request(
            "PATCH",
            path,
            Some("application/merge-patch+json"),
            bytes::Bytes::from(serde_json::to_vec(&body).unwrap()),
        )
        .await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&resp));
}

/// Moves the claim `c0`'s volume off a node declared out of service to a node on a fresh
/// instance, `rounds` times; returns the times from the taint to attached on the new node.
async fn failover(moto: &Moto, conn: &mut Conn, rounds: usize) -> Vec<Duration> {
    let (_, body) = conn
        .get("/api/v1/namespaces/bench/persistentvolumeclaims/c0")
        .await;
    let claim: Value = serde_json::from_slice(&body).unwrap();
    let volume = claim["spec"]["volumeName"].as_str().unwrap().to_string();
    let (_, body) = conn
        .get(&format!("/api/v1/persistentvolumes/{volume}"))
        .await;
    let pv: Value = serde_json::from_slice(&body).unwrap();
    let unique = format!(
        "kubernetes.io/csi/ebs.stowage.dev^{}",
        pv["spec"]["csi"]["volumeHandle"].as_str().unwrap()
    );
    let mut times = Vec::new();
    let new_node = |round: usize| format!("fo-{round}");
    let add_node = |round: usize| async move {
        let instance = moto.run_instance("us-east-1a").await;
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": format!("fo-{round}"),
                            "labels": {"topology.kubernetes.io/zone": "us-east-1a"}},
               "spec": {"providerID": format!("aws:///us-east-1a/{instance}")}})
    };
    let node = add_node(0).await;
    conn.post_json("/api/v1/nodes", &node).await;
    let pod = |name: String, node: String| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"nodeName": node,
                        "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "c0"}}]}})
    };
    conn.post_json(
        "/api/v1/namespaces/bench/pods",
        &pod("fo-app-0".into(), new_node(0)),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !attached_on(conn, &new_node(0)).await {
        assert!(Instant::now() < deadline, "failover pod never attached");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for round in 0..rounds {
        let (current, next) = (new_node(round), new_node(round + 1));
        let node = add_node(round + 1).await;
        conn.post_json("/api/v1/nodes", &node).await;
        // Mounted on the node, then the node fails and is declared out of service.
        patch(
            conn,
            &format!("/api/v1/nodes/{current}/status"),
            json!({"status": {"volumesInUse": [unique]}}),
        )
        .await;
        let started = Instant::now();
        patch(
            conn,
            &format!("/api/v1/nodes/{current}"),
            json!({"spec": {"taints": [{"key": "node.kubernetes.io/out-of-service", "effect": "NoExecute"}]}}),
        )
        .await;
        conn.request(
            "DELETE",
            &format!("/api/v1/namespaces/bench/pods/fo-app-{round}"),
            None,
            bytes::Bytes::new(),
        )
        .await;
        conn.post_json(
            "/api/v1/namespaces/bench/pods",
            &pod(format!("fo-app-{}", round + 1), next.clone()),
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !attached_on(conn, &next).await {
            assert!(
                Instant::now() < deadline,
                "failover to {next} never attached"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        times.push(started.elapsed());
    }
    conn.request(
        "DELETE",
        &format!("/api/v1/namespaces/bench/pods/fo-app-{rounds}"),
        None,
        bytes::Bytes::new(),
    )
    .await;
    wait_list(
        conn,
        "/apis/storage.k8s.io/v1/volumeattachments",
        "failover detach",
        |items| items.is_empty(),
    )
    .await;
    times.sort();
    times
}

#[tokio::main]
async fn main() {
    let n: usize = arg("n", 200);
    let moto = Moto::start().expect("moto_server (scripts/test.sh installs it into .cache/moto)");
    let config = server_config(&format!(
        "providers:\n  ebs:\n    region: us-east-1\n    endpoint: {}\n    defaultZone: us-east-1a\n    accessKeyId: testing\n    secretAccessKey: testing\n",
        moto.endpoint()
    ));
    let server = Server::start(&["--config", config.path().to_str().unwrap()]);
    let addr = server.addr.clone();
    let mut conn = Conn::open(&addr).await;
    println!(
        "EBS lifecycle benchmark: {n} claims and {n} pods on {NODES} nodes (moto on loopback)"
    );

    let (code, body) = conn
        .post_json(
            "/apis/storage.k8s.io/v1/storageclasses",
            &json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                    "metadata": {"name": "ebs"}, "provisioner": "ebs.stowage.dev",
                    "parameters": {"type": "gp3"}}),
        )
        .await;
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    for i in 0..NODES {
        let instance = moto.run_instance("us-east-1a").await;
        let (code, body) = conn
            .post_json(
                "/api/v1/nodes",
                &json!({"apiVersion": "v1", "kind": "Node",
                        "metadata": {"name": format!("node-{i}"),
                                     "labels": {"topology.kubernetes.io/zone": "us-east-1a"},
                                     // 50 volumes each: more than a t3's 26, within 52 device names.
                                     "annotations": {"stowage.dev/max-volume-attachments": "52"}},
                        "spec": {"providerID": format!("aws:///us-east-1a/{instance}")}}),
            )
            .await;
        assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    }
    let before = ec2_calls(&addr).await;
    let started = Instant::now();

    // Claims → volumes.
    let t = Instant::now();
    run_concurrently(&addr, 16, n, |i| {
        (
            "/api/v1/namespaces/bench/persistentvolumeclaims".to_string(),
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": format!("c{i}")},
                   "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "ebs",
                            "resources": {"requests": {"storage": "1Gi"}}}}),
        )
    })
    .await;
    wait_list(
        &mut conn,
        "/api/v1/namespaces/bench/persistentvolumeclaims",
        "claims bound",
        |items| {
            items
                .iter()
                .filter(|c| c["status"]["phase"] == "Bound")
                .count()
                == n
        },
    )
    .await;
    let provisioned = t.elapsed();

    // Pods → attachments.
    let t = Instant::now();
    run_concurrently(&addr, 16, n, |i| {
        (
            "/api/v1/namespaces/bench/pods".to_string(),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p{i}")},
                   "spec": {"nodeName": format!("node-{}", i % NODES),
                            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": format!("c{i}")}}]}}),
        )
    })
    .await;
    wait_list(
        &mut conn,
        "/apis/storage.k8s.io/v1/volumeattachments",
        "attachments",
        |items| {
            items
                .iter()
                .filter(|v| v["status"]["attached"] == true)
                .count()
                == n
        },
    )
    .await;
    let attached = t.elapsed();

    // Pods gone → detached.
    let t = Instant::now();
    delete_all_then_wait(
        &mut conn,
        "/api/v1/namespaces/bench/pods",
        "/apis/storage.k8s.io/v1/volumeattachments",
    )
    .await;
    let detached = t.elapsed();

    // Failover, counted apart from the lifecycle: one volume moved off nodes declared out of
    // service, round after round, each time to a fresh instance.
    let before_failover = ec2_calls(&addr).await;
    let moves = failover(&moto, &mut conn, 10).await;
    let after_failover = ec2_calls(&addr).await;
    let failover_calls: std::collections::BTreeMap<String, u64> = after_failover
        .iter()
        .map(|(api, c)| {
            (
                api.clone(),
                c - before_failover.get(api).copied().unwrap_or(0),
            )
        })
        .collect();

    // Claims gone → volumes deleted.
    let t = Instant::now();
    delete_all_then_wait(
        &mut conn,
        "/api/v1/namespaces/bench/persistentvolumeclaims",
        "/api/v1/persistentvolumes",
    )
    .await;
    let deleted = t.elapsed();
    let total = started.elapsed();

    let after = ec2_calls(&addr).await;
    let mut total_calls = 0u64;
    let mut by_api = Vec::new();
    for (api, count) in &after {
        let d = count
            - before.get(api).copied().unwrap_or(0)
            - failover_calls.get(api).copied().unwrap_or(0);
        if d > 0 {
            total_calls += d;
            by_api.push(format!("{api} {:.2}", d as f64 / n as f64));
        }
    }
    let remaining = moto
        .client()
        .describe_volumes()
        .send()
        .await
        .unwrap()
        .volumes()
        .iter()
        .filter(|v| v.state().map(|s| s.as_str()) != Some("deleted"))
        // The instances' root volumes are not ours.
        .filter(|v| {
            v.tags()
                .iter()
                .any(|t| t.key() == Some("stowage.dev/volume-name"))
        })
        .count();
    println!(
        "phases: all Bound {:.2} s, all attached {:.2} s, all detached {:.2} s, all deleted {:.2} s; total {:.2} s",
        provisioned.as_secs_f64(),
        attached.as_secs_f64(),
        detached.as_secs_f64(),
        deleted.as_secs_f64(),
        total.as_secs_f64()
    );
    println!(
        "EC2 calls per volume lifecycle: {:.2} ({})",
        total_calls as f64 / n as f64,
        by_api.join(", ")
    );
    println!(
        "failover (out-of-service node → attached on a new instance), {} moves: p50 {}  max {}; {:.1} EC2 calls per move",
        moves.len(),
        ms(percentile(&moves, 0.5)),
        ms(*moves.last().unwrap()),
        failover_calls.values().sum::<u64>() as f64 / moves.len() as f64
    );
    println!("volumes made by Stowage left in EC2: {remaining}");
    assert_eq!(remaining, 0);
}
