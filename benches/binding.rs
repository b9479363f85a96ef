//! Static binding benchmark: N volumes and N claims (varied sizes, several classes) created
//! through the API of a real release server; reports how long after the last create every
//! claim is Bound, beside a raw-store baseline (the same number of objects written in batches
//! straight through the store, no API, no controllers).
//!
//! Run: `cargo bench --bench binding -- --n 10000` (and `--n 100000`).

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use stowage::resources::{PersistentVolume, PersistentVolumeClaim, Typed};
use stowage::store::{Store, StoreOptions, WriteOp};
use support::*;

const CLASSES: [&str; 4] = ["", "gold", "silver", "bronze"];

/// Volume i: a class and a size; claim i fits its twin volume (so a full matching exists).
fn plan(n: usize) -> Vec<(usize, u64, u64)> {
    let mut rng = Rng::new(42);
    (0..n)
        .map(|_| {
            let class = rng.below(CLASSES.len() as u64) as usize;
            let volume_gib = 1 + rng.below(100);
            let claim_gib = 1 + rng.below(volume_gib);
            (class, volume_gib, claim_gib)
        })
        .collect()
}

fn volume(i: usize, class: &str, gib: u64) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": format!("vol-{i}")},
        "spec": {"capacity": {"storage": format!("{gib}Gi")}, "accessModes": ["ReadWriteOnce"],
                 "storageClassName": class, "hostPath": {"path": format!("/srv/{i}")}}})
}

fn claim(i: usize, class: &str, gib: u64) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": format!("claim-{i}")},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": format!("{gib}Gi")}},
                 "storageClassName": class}})
}

async fn raw_store_baseline(n: usize) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default())
        .await
        .unwrap();
    let p = plan(n);
    let mut objects = Vec::with_capacity(2 * n);
    for (i, (class, vg, cg)) in p.iter().enumerate() {
        let v: PersistentVolume = serde_json::from_value(volume(i, CLASSES[*class], *vg)).unwrap();
        let mut c: PersistentVolumeClaim =
            serde_json::from_value(claim(i, CLASSES[*class], *cg)).unwrap();
        c.metadata.namespace = Some(format!("ns-{}", i % 16));
        objects.push(v.into_any());
        objects.push(c.into_any());
    }
    let started = Instant::now();
    let mut batch = Vec::new();
    for o in objects {
        batch.push(WriteOp::create(o));
        if batch.len() == 1000 {
            store.write(std::mem::take(&mut batch)).await.unwrap();
        }
    }
    if !batch.is_empty() {
        store.write(batch).await.unwrap();
    }
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let n: usize = arg("n", 10_000);
    let clients: usize = arg("clients", 64);
    let server = Server::start(&["--no-default-class", "--watch-history", "1000000"]);
    let addr = server.addr.clone();
    println!(
        "static binding benchmark: {n} volumes + {n} claims, {} classes, {clients} clients",
        CLASSES.len()
    );

    let start_rv = current_rv(&addr).await;
    let bound = EventCounter::start(
        &addr,
        &format!("/api/v1/persistentvolumeclaims?watch=1&resourceVersion={start_rv}&fieldSelector=status.phase%3DBound"),
    )
    .await;
    let p = std::sync::Arc::new(plan(n));
    let pv_plan = p.clone();
    let volumes_took = run_concurrently(&addr, clients, n, move |i| {
        let (class, vg, _) = pv_plan[i];
        (
            "/api/v1/persistentvolumes".to_string(),
            volume(i, CLASSES[class], vg),
        )
    })
    .await;
    let claim_plan = p.clone();
    let claims_took = run_concurrently(&addr, clients, n, move |i| {
        let (class, _, cg) = claim_plan[i];
        (
            format!("/api/v1/namespaces/ns-{}/persistentvolumeclaims", i % 16),
            claim(i, CLASSES[class], cg),
        )
    })
    .await;
    let last_create = Instant::now();
    let at_last_create = bound.count();
    let done = bound
        .wait_for(n, Duration::from_secs(600))
        .await
        .unwrap_or_else(|| panic!("only {} of {n} claims bound", bound.count()));
    let after_last = done.duration_since(last_create);
    println!(
        "creates: {n} volumes in {:.2} s, {n} claims in {:.2} s ({:.0} creates/s)",
        volumes_took.as_secs_f64(),
        claims_took.as_secs_f64(),
        (2 * n) as f64 / (volumes_took + claims_took).as_secs_f64()
    );
    println!(
        "bound: {at_last_create} of {n} while claims were still being created; all {n} bound {:.3} s after the last create",
        after_last.as_secs_f64()
    );
    println!(
        "claims bound per second (from first claim create): {:.0}/s",
        n as f64 / (claims_took + after_last).as_secs_f64()
    );
    drop(server);
    let raw = raw_store_baseline(n).await;
    println!(
        "raw-store baseline: {} objects written in batches of 1000 in {:.3} s ({:.0} objects/s)",
        2 * n,
        raw.as_secs_f64(),
        (2 * n) as f64 / raw.as_secs_f64()
    );
}
