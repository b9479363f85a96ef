//! The store at scale: loads `--sets` claims, the volumes they bind to and one event each into a
//! release `stowage serve` (SQLite, durable), then prints, next to the targets of issue 18:
//! - the JSON size of every object, and the server's RSS against it, serving and after a restart;
//! - the WAL's size once the load is over;
//! - the restart time to ready;
//! - list latencies (one namespace, and 500-item pages of everything).
//!
//! Run: `cargo bench --bench store_scale -- --sets 33334` (100,000 objects) or
//! `--sets 333334` (a million); `--keep true` keeps the data directory for a closer look.

mod support;

use std::time::{Duration, Instant};

use support::*;

const NAMESPACES: usize = 100;

fn volume(i: usize) -> (String, serde_json::Value) {
    let ns = format!("team-{}", i % NAMESPACES);
    (
        "/api/v1/persistentvolumes".into(),
        serde_json::json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": format!("pv-{i:07}"), "labels": {"tier": "bench", "team": ns}},
            "spec": {
                "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                "hostPath": {"path": format!("/srv/volumes/pv-{i:07}")},
                "claimRef": {"namespace": ns, "name": format!("data-{i:07}")}
            }
        }),
    )
}

fn claim(i: usize) -> (String, serde_json::Value) {
    let ns = format!("team-{}", i % NAMESPACES);
    (
        format!("/api/v1/namespaces/{ns}/persistentvolumeclaims"),
        serde_json::json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": format!("data-{i:07}"), "labels": {"app": format!("app-{}", i % 1000)}},
            "spec": {
                "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}},
                "storageClassName": "", "volumeName": format!("pv-{i:07}")
            }
        }),
    )
}

fn event(i: usize) -> (String, serde_json::Value) {
    let ns = format!("team-{}", i % NAMESPACES);
    (
        format!("/api/v1/namespaces/{ns}/events"),
        serde_json::json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": format!("data-{i:07}.load")},
            "involvedObject": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns, "name": format!("data-{i:07}")},
            "reason": "Loaded", "message": "created by the store scale benchmark", "type": "Normal",
            "source": {"component": "store-scale-bench"}
        }),
    )
}

/// Every object of a kind, page by page: (count, JSON bytes of the items, how many match `needle`).
async fn survey(conn: &mut Conn, path: &str, needle: &str) -> (usize, u64, usize) {
    let (mut count, mut bytes, mut matching) = (0, 0, 0);
    let mut cont = String::new();
    loop {
        let url = format!("{path}?limit=5000&continue={cont}");
        let (status, body) = conn.get(&url).await;
        assert_eq!(status, 200, "list {path}");
        let list: serde_json::Value = serde_json::from_slice(&body).expect("a list");
        for item in list["items"].as_array().expect("items") {
            let json = serde_json::to_vec(item).unwrap();
            count += 1;
            bytes += json.len() as u64;
            if !needle.is_empty() && String::from_utf8_lossy(&json).contains(needle) {
                matching += 1;
            }
        }
        match list["metadata"]["continue"].as_str() {
            Some(c) if !c.is_empty() => cont = c.to_string(),
            _ => break,
        }
    }
    (count, bytes, matching)
}

fn wal_bytes(server: &Server) -> u64 {
    std::fs::metadata(server.data_dir.path().join("stowage.db-wal")).map_or(0, |m| m.len())
}

async fn wait_ready(addr: &str) {
    let mut conn = Conn::open(addr).await;
    while conn.get("/readyz").await.0 != 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn list_latencies(addr: &str, sets: usize) -> (Duration, Duration, Duration, Duration) {
    let mut conn = Conn::open(addr).await;
    let mut one_namespace = Vec::new();
    for i in 0..100 {
        let t = Instant::now();
        let (status, _) = conn
            .get(&format!(
                "/api/v1/namespaces/team-{}/persistentvolumeclaims",
                i % NAMESPACES
            ))
            .await;
        assert_eq!(status, 200);
        one_namespace.push(t.elapsed());
    }
    let mut pages = Vec::new();
    let mut cont = String::new();
    for _ in 0..100.min(sets / 500 + 1) {
        let t = Instant::now();
        let (status, body) = conn
            .get(&format!(
                "/api/v1/persistentvolumeclaims?limit=500&continue={cont}"
            ))
            .await;
        pages.push(t.elapsed());
        assert_eq!(status, 200);
        let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
        cont = list["metadata"]["continue"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if cont.is_empty() {
            break;
        }
    }
    one_namespace.sort();
    pages.sort();
    (
        percentile(&one_namespace, 0.5),
        percentile(&one_namespace, 0.99),
        percentile(&pages, 0.5),
        percentile(&pages, 0.99),
    )
}

#[tokio::main]
async fn main() {
    let sets: usize = arg("sets", 33_334);
    let clients: usize = arg("clients", 64);
    let server = Server::start(&[]);
    println!(
        "store scale: {sets} claims, {sets} volumes, {sets} events ({} objects), {clients} clients",
        3 * sets
    );

    let started = Instant::now();
    run_concurrently(&server.addr, clients, sets, volume).await;
    run_concurrently(&server.addr, clients, sets, claim).await;
    run_concurrently(&server.addr, clients, sets, event).await;
    let loaded = started.elapsed();
    println!(
        "loaded {} objects in {:.1} s ({:.0}/s)",
        3 * sets,
        loaded.as_secs_f64(),
        (3 * sets) as f64 / loaded.as_secs_f64()
    );

    // The binder binds every pair; wait until it has.
    let mut conn = Conn::open(&server.addr).await;
    let bind_started = Instant::now();
    loop {
        let (_, _, bound) = survey(
            &mut conn,
            "/api/v1/persistentvolumeclaims",
            "\"phase\":\"Bound\"",
        )
        .await;
        if bound >= sets {
            break;
        }
        assert!(
            bind_started.elapsed() < Duration::from_secs(1800),
            "only {bound} of {sets} claims bound"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    println!(
        "every claim bound {:.1} s after the load",
        bind_started.elapsed().as_secs_f64()
    );
    let mut json = 0;
    for (path, what) in [
        ("/api/v1/persistentvolumeclaims", "claims"),
        ("/api/v1/persistentvolumes", "volumes"),
        ("/api/v1/events", "events"),
    ] {
        let (count, bytes, _) = survey(&mut conn, path, "").await;
        println!("  {what:8} {count:>8}  {} of JSON", mib(bytes));
        json += bytes;
    }
    drop(conn);
    let rss_serving = rss_bytes(server.pid());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let wal_after_load = wal_bytes(&server);
    let (ns50, ns99, page50, page99) = list_latencies(&server.addr, sets).await;

    let dir = server.stop();
    let restart_started = Instant::now();
    let server = Server::start_in(dir, &[]);
    let listening = restart_started.elapsed();
    wait_ready(&server.addr).await;
    let ready = restart_started.elapsed();
    // Controllers take their first full look after start-up; measure once that has settled.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss_restarted = rss_bytes(server.pid());
    let (rns50, rns99, rpage50, rpage99) = list_latencies(&server.addr, sets).await;
    if arg("keep", false) {
        let dir = server.stop().keep();
        println!("data directory kept at {}", dir.display());
    }

    let objects = 3 * sets;
    let per_100k = |d: Duration| d.as_secs_f64() * 100_000.0 / objects as f64;
    println!("results ({objects} objects):");
    println!("  JSON of every object          {}", mib(json));
    println!(
        "  RSS serving                   {}  ({:.2}x the JSON)",
        mib(rss_serving),
        rss_serving as f64 / json as f64
    );
    println!(
        "  RSS after a restart           {}  ({:.2}x the JSON; target <= 2.5x)",
        mib(rss_restarted),
        rss_restarted as f64 / json as f64
    );
    println!(
        "  WAL 10 s after the load       {}  (target <= 64 MiB)",
        mib(wal_after_load)
    );
    println!(
        "  restart to listening          {:.2} s, to ready {:.2} s  ({:.2} s per 100,000 objects; target <= 1 s)",
        listening.as_secs_f64(),
        ready.as_secs_f64(),
        per_100k(ready)
    );
    println!(
        "  list one namespace ({} claims)  p50 {}  p99 {}  (after restart p50 {}  p99 {})",
        sets / NAMESPACES,
        ms(ns50),
        ms(ns99),
        ms(rns50),
        ms(rns99)
    );
    println!(
        "  list a 500-claim page         p50 {}  p99 {}  (after restart p50 {}  p99 {})",
        ms(page50),
        ms(page99),
        ms(rpage50),
        ms(rpage99)
    );
}
