//! API benchmark: N concurrent clients creating PVCs against a real release `stowage serve`
//! (SQLite, WAL, synchronous=FULL: every acknowledged create is durable), then reads with that
//! many objects present.
//!
//! Run: `cargo bench --bench api -- --clients 64 --creates 50000`
//! Prints creates/s with p50/p99/max latency, then GETs/s and full-list latency.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::*;

fn pvc(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "labels": {"bench": "api"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, "storageClassName": ""}
    })
}

#[tokio::main]
async fn main() {
    let clients: usize = arg("clients", 64);
    let creates: usize = arg("creates", 50_000);
    let read_seconds: u64 = arg("read-seconds", 5);
    let server = Server::start(&[]);
    println!(
        "stowage API benchmark: {clients} clients, {creates} PVC creates (durable: WAL + synchronous=FULL)"
    );

    // Phase 1: concurrent creates.
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let next = next.clone();
        let addr = server.addr.clone();
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
                let (status, _) = conn.post_json(&ns, &body).await;
                latencies.push(t.elapsed());
                assert_eq!(status, 201, "create failed");
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
    println!(
        "creates: {:.0}/s  ({} in {:.2} s)  p50 {}  p99 {}  max {}",
        creates as f64 / elapsed.as_secs_f64(),
        creates,
        elapsed.as_secs_f64(),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap()),
    );

    // Phase 2: GETs of random existing objects.
    let deadline = Instant::now() + Duration::from_secs(read_seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let addr = server.addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&addr).await;
            let mut latencies = Vec::new();
            let mut i = c * 7919;
            while Instant::now() < deadline {
                i = (i + 104_729) % creates;
                let path = format!(
                    "/api/v1/namespaces/bench-{}/persistentvolumeclaims/claim-{i}",
                    i % 16
                );
                let t = Instant::now();
                let (status, _) = conn.get(&path).await;
                latencies.push(t.elapsed());
                assert_eq!(status, 200);
            }
            latencies
        }));
    }
    let mut gets = Vec::new();
    for t in tasks {
        gets.extend(t.await.unwrap());
    }
    gets.sort();
    println!(
        "gets:    {:.0}/s  p50 {}  p99 {}",
        gets.len() as f64 / read_seconds as f64,
        ms(percentile(&gets, 0.50)),
        ms(percentile(&gets, 0.99)),
    );

    // Phase 3: lists of 10,000 objects (one namespace slice and the whole set).
    let mut conn = Conn::open(&server.addr).await;
    for (label, path, expect) in [
        (
            "list 10k (limit=10000)",
            "/api/v1/persistentvolumeclaims?limit=10000".to_string(),
            10_000.min(creates),
        ),
        (
            "list 1 namespace",
            "/api/v1/namespaces/bench-0/persistentvolumeclaims".to_string(),
            creates.div_ceil(16),
        ),
        (
            "list all",
            "/api/v1/persistentvolumeclaims".to_string(),
            creates,
        ),
        (
            "list by label, all",
            "/api/v1/persistentvolumeclaims?labelSelector=bench%3Dapi".to_string(),
            creates,
        ),
    ] {
        let mut times = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let (status, body) = conn.get(&path).await;
            times.push(t.elapsed());
            assert_eq!(status, 200);
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["items"].as_array().unwrap().len(), expect, "{label}");
        }
        times.sort();
        println!(
            "{label:<24} {expect:>6} items: p50 {}  p99 {}",
            ms(percentile(&times, 0.50)),
            ms(percentile(&times, 0.99))
        );
    }
}
