//! Dynamic local provisioning benchmark: N claims against the default class `local` of a real
//! release server; reports how long until every claim is Bound with its directory present.
//!
//! Run: `cargo bench --bench provisioning -- --n 10000`

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

#[tokio::main]
async fn main() {
    let n: usize = arg("n", 10_000);
    let clients: usize = arg("clients", 64);
    // The local provider refuses to over-commit its root; give it room for every claim.
    let config = server_config("providers:\n  local:\n    capacity: 100Ti\n");
    let server = Server::start(&[
        "--watch-history",
        "1000000",
        "--config",
        config.path().to_str().unwrap(),
    ]);
    let addr = server.addr.clone();
    println!("dynamic local provisioning benchmark: {n} claims of class local, {clients} clients");
    let start_rv = current_rv(&addr).await;
    let bound = EventCounter::start(
        &addr,
        &format!("/api/v1/persistentvolumeclaims?watch=1&resourceVersion={start_rv}&fieldSelector=status.phase%3DBound"),
    )
    .await;
    let started = Instant::now();
    let creates = run_concurrently(&addr, clients, n, |i| {
        (
            format!("/api/v1/namespaces/team-{}/persistentvolumeclaims", i % 16),
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": format!("data-{i}")},
                   "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
        )
    })
    .await;
    let done = bound
        .wait_for(n, Duration::from_secs(600))
        .await
        .unwrap_or_else(|| panic!("only {} of {n} claims bound", bound.count()));
    let total = done.duration_since(started);
    let dirs = std::fs::read_dir(server.data_dir.path().join("volumes"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("pvc-"))
        })
        .count();
    println!(
        "{n} claims created in {:.2} s; all Bound {:.2} s after the first create ({:.0} provisions/s); {dirs} volume directories",
        creates.as_secs_f64(),
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64()
    );
    assert_eq!(dirs, n, "every bound claim has its directory");
}
