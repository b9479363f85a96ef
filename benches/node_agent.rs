//! Node agent benchmark: 200 pods with local volumes on one agent (real bind mounts; run as
//! root), against a release server.
//!
//! 1. 200 claims are created and bound first.
//! 2. 200 pods using them are created at once (64 clients): for each pod, the time from its
//!    create to its volume being a mount point at `<root>/pods/<uid>/volumes/data`
//!    (p50/p99), and the total until all 200 are mounted.
//! 3. All 200 are deleted at once: for each, the time until it is unmounted (p50/p99), and the
//!    total until every volume is unmounted, out of `volumesInUse` and detached (no
//!    VolumeAttachment left).
//!
//! Targets (issue 13): mounted p99 ≤ 1 s; all 200 within 5 s.
//! Run: `cargo bench --bench node_agent -- --pods 200`

mod support;

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const NODE: &str = "bench-node";

fn mount_points() -> HashSet<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .collect()
}

async fn get_json(addr: &str, path: &str) -> Value {
    let (code, body) = Conn::open(addr).await.get(path).await;
    assert_eq!(code, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("JSON")
}

#[tokio::main]
async fn main() {
    let pods: usize = arg("--pods", 200);
    let clients: usize = arg("--clients", 64);
    let volumes = tempfile::tempdir().unwrap();
    let config = server_config(&format!(
        "providers:\n  local:\n    node: {NODE}\n    root: {}\n    capacity: 1000Ti\n",
        volumes.path().display()
    ));
    let server = Server::start(&["--config", config.path().to_str().unwrap()]);
    let addr = server.addr.clone();

    // The agent, with a node token, as on a real node.
    let (code, body) = Conn::open(&addr)
        .await
        .post_json(
            "/apis/auth.stowage.dev/v1/tokens",
            &json!({"spec": {"name": "bench-node", "role": format!("node:{NODE}")}}),
        )
        .await;
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    let token: Value = serde_json::from_slice(&body).unwrap();
    let token = token["status"]["token"].as_str().unwrap().to_string();
    let root_dir = tempfile::tempdir().unwrap();
    let root = root_dir.path().join("root");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_stowage"))
        .args(["node", "--node-name", NODE, "--server"])
        .arg(format!("http://{addr}"))
        .args(["--token", &token, "--root"])
        .arg(&root)
        .args(["--metrics-listen", "127.0.0.1:0"])
        .env("STOWAGE_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("starting stowage node");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Conn::open(&addr)
        .await
        .get(&format!("/api/v1/nodes/{NODE}"))
        .await
        .0
        != 200
    {
        assert!(Instant::now() < deadline, "the agent did not register");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 1. Bound claims.
    run_concurrently(&addr, clients, pods, |i| {
        (
            "/api/v1/namespaces/bench/persistentvolumeclaims".to_string(),
            json!({"metadata": {"name": format!("c{i}")},
                   "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Mi"}},
                            "storageClassName": "local"}}),
        )
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = get_json(
            &addr,
            "/api/v1/namespaces/bench/persistentvolumeclaims?fieldSelector=status.phase%3DBound",
        )
        .await;
        if list["items"].as_array().map_or(0, Vec::len) == pods {
            break;
        }
        assert!(Instant::now() < deadline, "claims did not bind");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 2. Pods created at once; each one's create time and uid.
    let created: Arc<parking_lot::Mutex<HashMap<String, Instant>>> = Default::default();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (addr, created, next) = (addr.clone(), created.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&addr).await;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= pods {
                    break;
                }
                let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p{i}")},
                    "spec": {"nodeName": NODE, "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": format!("c{i}")}}]}});
                let at = Instant::now();
                let (code, body) = conn.post_json("/api/v1/namespaces/bench/pods", &pod).await;
                assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
                let v: Value = serde_json::from_slice(&body).unwrap();
                created
                    .lock()
                    .insert(v["metadata"]["uid"].as_str().unwrap().to_string(), at);
            }
        }));
    }
    let targets = |uid: &str| -> String {
        root.join("pods")
            .join(uid)
            .join("volumes/data")
            .display()
            .to_string()
    };
    let mut mounted_after: HashMap<String, Duration> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while mounted_after.len() < pods {
        assert!(
            Instant::now() < deadline,
            "not all volumes were mounted in 120 s"
        );
        let points = mount_points();
        let now = Instant::now();
        for (uid, at) in created.lock().iter() {
            if !mounted_after.contains_key(uid) && points.contains(&targets(uid)) {
                mounted_after.insert(uid.clone(), now.duration_since(*at));
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let all_mounted = started.elapsed();
    for t in tasks {
        t.await.unwrap();
    }
    let mut lat: Vec<Duration> = mounted_after.values().copied().collect();
    lat.sort();
    println!(
        "mount:   {pods} pods, create → mounted p50 {} p99 {} max {}; all mounted in {} (targets: p99 ≤ 1 s, all ≤ 5 s)",
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.99)),
        ms(*lat.last().unwrap()),
        ms(all_mounted)
    );

    // 3. Pods deleted at once.
    let uids: Vec<String> = created.lock().keys().cloned().collect();
    let started = Instant::now();
    let deleted_at: Arc<parking_lot::Mutex<HashMap<String, Instant>>> = Default::default();
    let mut tasks = Vec::new();
    let names: Arc<Vec<(String, String)>> = Arc::new({
        let list = get_json(&addr, "/api/v1/namespaces/bench/pods").await;
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["metadata"]["name"].as_str().unwrap().to_string(),
                    p["metadata"]["uid"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    });
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..clients {
        let (addr, names, next, deleted_at) = (
            addr.clone(),
            names.clone(),
            next.clone(),
            deleted_at.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&addr).await;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((name, uid)) = names.get(i) else {
                    break;
                };
                let at = Instant::now();
                let (code, body) = conn
                    .request(
                        "DELETE",
                        &format!("/api/v1/namespaces/bench/pods/{name}"),
                        None,
                        bytes::Bytes::new(),
                    )
                    .await;
                assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
                deleted_at.lock().insert(uid.clone(), at);
            }
        }));
    }
    let mut unmounted_after: HashMap<String, Duration> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while unmounted_after.len() < uids.len() {
        assert!(
            Instant::now() < deadline,
            "not all volumes were unmounted in 120 s"
        );
        let points = mount_points();
        let now = Instant::now();
        for (uid, at) in deleted_at.lock().iter() {
            if !unmounted_after.contains_key(uid) && !points.contains(&targets(uid)) {
                unmounted_after.insert(uid.clone(), now.duration_since(*at));
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let all_unmounted = started.elapsed();
    for t in tasks {
        t.await.unwrap();
    }
    loop {
        let node = get_json(&addr, &format!("/api/v1/nodes/{NODE}")).await;
        let in_use = node["status"]["volumesInUse"]
            .as_array()
            .map_or(0, Vec::len);
        let attachments = get_json(&addr, "/apis/storage.k8s.io/v1/volumeattachments").await;
        let left = attachments["items"].as_array().map_or(0, Vec::len);
        if in_use == 0 && left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{in_use} volumes still in use, {left} attachments left"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all_detached = started.elapsed();
    let mut lat: Vec<Duration> = unmounted_after.values().copied().collect();
    lat.sort();
    println!(
        "unmount: {pods} pods, delete → unmounted p50 {} p99 {} max {}; all unmounted in {}, all out of use and detached in {}",
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.99)),
        ms(*lat.last().unwrap()),
        ms(all_unmounted),
        ms(all_detached)
    );
    let _ = agent.kill();
    let _ = agent.wait();
    // Leave no mount behind if something above failed half-way.
    let root = root.display().to_string();
    for p in mount_points().into_iter().filter(|p| p.starts_with(&root)) {
        let _ = Command::new("umount").arg(p).status();
    }
}
