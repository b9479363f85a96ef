//! VolumeSnapshots: a bound claim's volume is snapshotted through its provider, a new claim is
//! restored from a ready snapshot, and deleting a snapshot deletes the provider's copy. Driven
//! through a real server with the in-memory provider (snapshots, restore and their failures are
//! real there); the EBS end-to-end tests do the same against EC2.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

fn snapshots(ns: &str) -> String {
    format!("/apis/snapshot.storage.k8s.io/v1/namespaces/{ns}/volumesnapshots")
}

fn snapshot_of(name: &str, claim: &str) -> Value {
    json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
           "metadata": {"name": name},
           "spec": {"source": {"persistentVolumeClaimName": claim}}})
}

fn restored_claim(name: &str, size: &str, snapshot: &str) -> Value {
    let mut c = claim_in_class(name, size, "mem");
    c["spec"]["dataSource"] =
        json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": snapshot});
    c
}

async fn server() -> (Server, tempfile::TempDir) {
    let (dir, config) = config_file("providers:\n  memory:\n    enabled: true\n");
    let s = Server::start_with(&["--config", config.as_str()]).await;
    let (code, v) = s
        .post(SC, &storage_class("mem", "memory.stowage.dev"))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    (s, dir)
}

/// The server's count of a provider operation with outcome ok.
async fn provider_calls(s: &Server, operation: &str) -> u64 {
    let (_, text) = s.get("/metrics").await;
    let text = text.as_str().unwrap_or_default().to_string();
    let prefix = format!(
        "stowage_provider_operations_total{{provider=\"memory.stowage.dev\",operation=\"{operation}\",outcome=\"ok\"}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

async fn bound_claim(s: &Server, ns: &str, name: &str) -> Value {
    let (code, v) = s.post(&pvcs(ns), &claim_in_class(name, "1Gi", "mem")).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    s.wait_for_phase(&format!("{}/{name}", pvcs(ns)), "Bound")
        .await
}

#[tokio::test]
async fn a_snapshot_becomes_ready_and_a_new_claim_starts_from_it() {
    let (s, _cfg) = server().await;
    bound_claim(&s, "snap", "data").await;
    let (code, created) = s
        .post(&snapshots("snap"), &snapshot_of("nightly", "data"))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    assert_eq!(created["apiVersion"], "snapshot.storage.k8s.io/v1");
    assert_eq!(
        created["metadata"]["finalizers"],
        json!(["snapshot.storage.kubernetes.io/volumesnapshot-bound-protection"])
    );
    let path = format!("{}/nightly", snapshots("snap"));
    let ready = s
        .wait_for(&path, "snapshot ready", |v| {
            v["status"]["readyToUse"] == true
        })
        .await;
    assert_eq!(ready["status"]["restoreSize"], "1Gi");
    assert_eq!(ready["status"]["driver"], "memory.stowage.dev");
    let handle = ready["status"]["snapshotHandle"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(handle.starts_with("snap-snapshot-"), "{handle}");
    assert!(ready["status"]["creationTime"].is_string(), "{ready}");
    // Events are recorded after the status is written (the recorder batches them): wait.
    s.wait_for_event("snap", "nightly", "SnapshotCreated").await;
    s.wait_for_event("snap", "nightly", "SnapshotReady").await;

    // Restored into a claim at least as large: provisioned (never statically bound).
    s.post(PV, &host_path_pv("empty-static", "5Gi")).await;
    let (code, v) = s
        .post(&pvcs("snap"), &restored_claim("copy", "2Gi", "nightly"))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let copy = s
        .wait_for_phase(&format!("{}/copy", pvcs("snap")), "Bound")
        .await;
    assert_ne!(copy["spec"]["volumeName"], "empty-static");
    assert_eq!(copy["status"]["capacity"]["storage"], "2Gi");

    // Smaller than the snapshot: refused with a reason, the claim stays pending.
    s.post(&pvcs("snap"), &restored_claim("small", "512Mi", "nightly"))
        .await;
    let why = s
        .wait_for_event("snap", "small", "ProvisioningFailed")
        .await;
    assert!(why.contains("less than"), "{why}");
    let (_, small) = s.get(&format!("{}/small", pvcs("snap"))).await;
    assert_eq!(small["status"]["phase"], "Pending");

    // The table lists it for kubectl and the CLI.
    let table: Value = s
        .client
        .get(s.url(&snapshots("snap")))
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(table["kind"], "Table", "{table}");
    assert_eq!(table["rows"][0]["cells"][1], true, "{table}");
    assert_eq!(table["rows"][0]["cells"][2], "data", "{table}");
}

#[tokio::test]
async fn claims_wait_for_their_snapshot_and_snapshots_for_their_claim() {
    let (s, _cfg) = server().await;
    // A claim restored from a snapshot that does not exist yet waits, with an event.
    s.post(&pvcs("wait"), &restored_claim("early", "1Gi", "later"))
        .await;
    let why = s
        .wait_for_event("wait", "early", "WaitingForDataSource")
        .await;
    assert!(why.contains("\"later\" not found"), "{why}");
    // A snapshot of a claim that does not exist yet waits too, saying why.
    s.post(&snapshots("wait"), &snapshot_of("later", "source"))
        .await;
    let pending = s
        .wait_for(
            &format!("{}/later", snapshots("wait")),
            "snapshot error",
            |v| v["status"]["error"]["message"].is_string(),
        )
        .await;
    assert!(
        pending["status"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"source\" not found"),
        "{pending}"
    );
    // The claim appears and binds: the snapshot is cut, and the waiting claim is restored,
    // each triggered by the other's change rather than a periodic resync.
    let started = std::time::Instant::now();
    bound_claim(&s, "wait", "source").await;
    s.wait_for_phase(&format!("{}/early", pvcs("wait")), "Bound")
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "restore took {:?}",
        started.elapsed()
    );
    let (_, snap) = s.get(&format!("{}/later", snapshots("wait"))).await;
    assert!(snap["status"].get("error").is_none(), "{snap}");
}

#[tokio::test]
async fn deleting_a_snapshot_deletes_the_providers_copy_first() {
    let (s, _cfg) = server().await;
    bound_claim(&s, "del", "data").await;
    s.post(&snapshots("del"), &snapshot_of("once", "data"))
        .await;
    let path = format!("{}/once", snapshots("del"));
    s.wait_for(&path, "snapshot ready", |v| {
        v["status"]["readyToUse"] == true
    })
    .await;
    assert_eq!(provider_calls(&s, "delete_snapshot").await, 0);
    let (code, _) = s.delete(&path).await;
    assert_eq!(code, StatusCode::OK);
    s.wait_gone(&path).await;
    assert_eq!(provider_calls(&s, "delete_snapshot").await, 1);
    // Gone from the provider too: a claim cannot be restored from it any more.
    s.post(&pvcs("del"), &restored_claim("late", "1Gi", "once"))
        .await;
    s.wait_for_event("del", "late", "WaitingForDataSource")
        .await;
}

#[tokio::test]
async fn unsupported_snapshot_shapes_and_sources_are_refused_clearly() {
    let (s, _cfg) = server().await;
    let mut with_class = snapshot_of("classy", "data");
    with_class["spec"]["volumeSnapshotClassName"] = json!("csi-snapclass");
    let (code, v) = s.post(&snapshots("bad"), &with_class).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("spec.volumeSnapshotClassName"),
        "{v}"
    );
    let (code, v) = s
        .post(
            &snapshots("bad"),
            &json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                    "metadata": {"name": "nothing"}, "spec": {"source": {}}}),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    // The source of a snapshot is immutable.
    bound_claim(&s, "bad", "data").await;
    s.post(&snapshots("bad"), &snapshot_of("fixed", "data"))
        .await;
    let (code, v) = s
        .patch(
            &format!("{}/fixed", snapshots("bad")),
            "application/merge-patch+json",
            &json!({"spec": {"source": {"persistentVolumeClaimName": "other"}}}),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    // Cloning from a claim is not a data source Stowage restores from: said, not ignored.
    let mut clone = claim_in_class("clone", "1Gi", "mem");
    clone["spec"]["dataSource"] = json!({"kind": "PersistentVolumeClaim", "name": "data"});
    s.post(&pvcs("bad"), &clone).await;
    let why = s.wait_for_event("bad", "clone", "ProvisioningFailed").await;
    assert!(why.contains("not supported"), "{why}");

    // A provider without snapshots: the snapshot says so and never becomes ready.
    let (dir, config) = config_file("providers:\n  local:\n    node: n1\n    capacity: 10Gi\n");
    drop(s);
    let s = Server::start_with(&["--config", config.as_str()]).await;
    let _keep = dir;
    s.post(SC, &storage_class("loc", "local.stowage.dev")).await;
    s.post(&pvcs("bad"), &claim_in_class("here", "1Gi", "loc"))
        .await;
    s.wait_for_phase(&format!("{}/here", pvcs("bad")), "Bound")
        .await;
    s.post(&snapshots("bad"), &snapshot_of("nope", "here"))
        .await;
    let why = s
        .wait_for_event("bad", "nope", "SnapshotCreationFailed")
        .await;
    assert!(why.contains("cannot take snapshots"), "{why}");
}
