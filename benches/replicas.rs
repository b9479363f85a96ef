//! Replicas benchmark: PVC creates against one SQLite server, one PostgreSQL replica and three
//! PostgreSQL replicas (clients spread over them), in one run with one driver; then how long a
//! write acknowledged by one replica takes to reach a watch on another.
//!
//! Needs a PostgreSQL cluster: `./scripts/bench-replicas.sh` starts a private one and runs
//! `cargo bench --bench replicas -- --clients 64 --creates 20000 --watch-writes 1000`.
//! Each phase uses a fresh database. Prints creates/s with p50/p99, and the watch latency's
//! p50/p99/max.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::*;

fn pvc(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "labels": {"bench": "replicas"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, "storageClassName": ""}
    })
}

/// A fresh database in the cluster `STOWAGE_TEST_POSTGRES` names.
async fn fresh_database(base: &str, name: &str) -> String {
    use sqlx::Connection as _;
    let mut admin = sqlx::PgConnection::connect(base)
        .await
        .expect("connecting to STOWAGE_TEST_POSTGRES");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name}"
    )))
    .execute(&mut admin)
    .await
    .expect("dropping an old bench database");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("creating a bench database");
    let mut url = url::Url::parse(base).expect("a URL");
    url.set_path(name);
    url.to_string()
}

/// `creates` PVC creates from `clients` connections spread over `addrs`; prints and returns
/// creates/s.
async fn creates(label: &str, addrs: &[String], clients: usize, creates: usize) -> f64 {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let next = next.clone();
        let addr = addrs[c % addrs.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&addr).await;
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= creates {
                    break;
                }
                let ns = format!("/api/v1/namespaces/bench-{}/persistentvolumeclaims", i % 16);
                let body = pvc(&format!("claim-{i}"));
                let t = Instant::now();
                let (status, resp) = conn.post_json(&ns, &body).await;
                latencies.push(t.elapsed());
                assert_eq!(
                    status,
                    201,
                    "create failed: {}",
                    String::from_utf8_lossy(&resp)
                );
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(creates);
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let rate = creates as f64 / elapsed.as_secs_f64();
    println!(
        "{label:<34} creates: {rate:>7.0}/s  p50 {}  p99 {}  max {}",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap()),
    );
    rate
}

/// Writes on `writer`, one at a time; times each from its acknowledgement until the watch
/// on `watcher` delivers it.
async fn watch_latency(label: &str, writer: &str, watcher: &str, writes: usize) {
    let log = EventLog::start(
        watcher,
        "/api/v1/namespaces/lat/persistentvolumeclaims?watch=1",
    )
    .await;
    let mut conn = Conn::open(writer).await;
    let mut latencies = Vec::with_capacity(writes);
    for i in 0..writes {
        let name = format!("lat-{i}");
        let (status, _) = conn
            .post_json("/api/v1/namespaces/lat/persistentvolumeclaims", &pvc(&name))
            .await;
        assert_eq!(status, 201);
        let acked = Instant::now();
        let deadline = acked + Duration::from_secs(10);
        let seen = loop {
            let found = log
                .events
                .lock()
                .iter()
                .find(|(_, v)| v["object"]["metadata"]["name"] == name.as_str())
                .map(|(at, _)| *at);
            if let Some(at) = found {
                break at;
            }
            assert!(Instant::now() < deadline, "{name} never reached the watch");
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        latencies.push(seen.saturating_duration_since(acked));
        log.events.lock().clear();
        // A little think time, so that each write is on its own (not a burst).
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    latencies.sort();
    println!(
        "{label:<34} ack → watch: p50 {}  p99 {}  max {}  ({writes} writes)",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap()),
    );
}

#[tokio::main]
async fn main() {
    let clients: usize = arg("clients", 64);
    let n: usize = arg("creates", 20_000);
    let watch_writes: usize = arg("watch-writes", 1_000);
    let base = std::env::var("STOWAGE_TEST_POSTGRES").expect(
        "STOWAGE_TEST_POSTGRES: a PostgreSQL URL (./scripts/bench-replicas.sh starts a cluster)",
    );
    println!("replicas benchmark: {clients} clients, {n} PVC creates per phase (all durable)");

    let sqlite = {
        let s = Server::start(&[]);
        let rate = creates(
            "SQLite, one server",
            std::slice::from_ref(&s.addr),
            clients,
            n,
        )
        .await;
        watch_latency("SQLite, same server", &s.addr, &s.addr, watch_writes).await;
        rate
    };

    let one = {
        let url = fresh_database(&base, "bench_one").await;
        let s = Server::start(&["--store", &url]);
        creates(
            "PostgreSQL, one replica",
            std::slice::from_ref(&s.addr),
            clients,
            n,
        )
        .await
    };

    let url = fresh_database(&base, "bench_three").await;
    let replicas: Vec<Server> = (0..3).map(|_| Server::start(&["--store", &url])).collect();
    let addrs: Vec<String> = replicas.iter().map(|s| s.addr.clone()).collect();
    let three = creates("PostgreSQL, three replicas", &addrs, clients, n).await;
    watch_latency(
        "PostgreSQL, replica A → B",
        &addrs[0],
        &addrs[1],
        watch_writes,
    )
    .await;
    println!(
        "relative to SQLite: one replica {:.0}%, three replicas {:.0}%",
        100.0 * one / sqlite,
        100.0 * three / sqlite
    );
    drop(replicas);
    let provisions: usize = arg("failover-claims", 1_000);
    failover(&base, provisions, 16).await;
}

/// Which of `addrs` leads (by its /readyz).
async fn leader_of(addrs: &[String]) -> Option<usize> {
    for (i, addr) in addrs.iter().enumerate() {
        let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
            continue;
        };
        drop(stream);
        let mut conn = Conn::open(addr).await;
        let (_, body) = conn.get("/readyz").await;
        if String::from_utf8_lossy(&body).contains("(leader)") {
            return Some(i);
        }
    }
    None
}

/// Kills the leader of three replicas in the middle of `n` NFS provisions; checks that every
/// acknowledged claim binds to exactly one volume with one backing directory.
async fn failover(base: &str, n: usize, clients: usize) {
    if n == 0 {
        println!("failover: skipped (--failover-claims 0)");
        return;
    }
    use stowage_provider_nfs::testing::Ganesha;
    let dir = tempfile::tempdir().unwrap();
    let ganesha = Ganesha::start(dir.path())
        .expect("nfs-ganesha (apt-get install nfs-ganesha nfs-ganesha-vfs)");
    let url = fresh_database(base, "bench_failover").await;
    let mut replicas: Vec<Option<Server>> = (0..3)
        .map(|_| Some(Server::start(&["--store", &url])))
        .collect();
    let addrs: Vec<String> = replicas.iter().flatten().map(|s| s.addr.clone()).collect();
    let mut conn = Conn::open(&addrs[0]).await;
    let (code, body) = conn
        .post_json(
            "/apis/storage.k8s.io/v1/storageclasses",
            &serde_json::json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                    "metadata": {"name": "nfs"}, "provisioner": "nfs.stowage.dev",
                    "parameters": {"server": ganesha.server(), "share": ganesha.share()}}),
        )
        .await;
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    let first = loop {
        if let Some(i) = leader_of(&addrs).await {
            break i;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let survivors: Vec<String> = (0..3)
        .filter(|i| *i != first)
        .map(|i| addrs[i].clone())
        .collect();

    // Claims through the replicas that survive; the leader dies after a third of them.
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let next = next.clone();
        let addr = survivors[c % survivors.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&addr).await;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let mut body = pvc(&format!("c{i}"));
                body["spec"]["storageClassName"] = "nfs".into();
                body["spec"]["resources"]["requests"]["storage"] = "1Mi".into();
                let (status, resp) = conn
                    .post_json("/api/v1/namespaces/fail/persistentvolumeclaims", &body)
                    .await;
                assert_eq!(status, 201, "{}", String::from_utf8_lossy(&resp));
            }
        }));
    }
    while next.load(Ordering::Relaxed) < n / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    replicas[first].take(); // SIGKILL (Server's drop)
    let killed = Instant::now();
    let takeover = {
        let survivors = survivors.clone();
        tokio::spawn(async move {
            loop {
                if leader_of(&survivors).await.is_some() {
                    return killed.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    let new_leader = takeover.await.unwrap();
    // Every claim bound: one volume each, one backing directory each.
    let mut conn = Conn::open(&survivors[0]).await;
    let all_bound = loop {
        let (_, body) = conn
            .get("/api/v1/namespaces/fail/persistentvolumeclaims")
            .await;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let items = v["items"].as_array().unwrap();
        let bound = items
            .iter()
            .filter(|c| c["status"]["phase"] == "Bound")
            .count();
        if items.len() == n && bound == n {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(300),
            "claims did not all bind"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (_, body) = conn.get("/api/v1/persistentvolumes").await;
    let pvs: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let volumes: std::collections::BTreeSet<String> = pvs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let records: std::collections::BTreeSet<String> =
        std::fs::read_dir(ganesha.export_dir().join(".stowage/volumes"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
    let duplicates = volumes.len().saturating_sub(n);
    let leaks = records.difference(&volumes).count();
    let lost = n - volumes.len().min(n);
    println!(
        "failover (3 replicas, {n} NFS provisions, leader killed after {}): new leader after {:.2} s, all bound {:.2} s after the kill; duplicates {duplicates}, leaked directories {leaks}, lost claims {lost}",
        n / 3,
        new_leader.as_secs_f64(),
        all_bound.as_secs_f64(),
    );
    assert_eq!((duplicates, leaks, lost), (0, 0, 0));
}
