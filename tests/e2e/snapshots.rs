//! Snapshots and clones through a real server: VolumeSnapshotClasses, VolumeSnapshots bound to
//! VolumeSnapshotContents (dynamic and pre-provisioned), Velero's retain-and-import path,
//! restores, clones and their size rules. With the in-memory provider (its snapshots and
//! their failures are real there), and with the local provider, whose copies are checked file
//! by file. The NFS and EBS end-to-end tests do the same against nfs-ganesha and EC2.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

fn snapshots(ns: &str) -> String {
    format!("/apis/snapshot.storage.k8s.io/v1/namespaces/{ns}/volumesnapshots")
}

const CONTENTS: &str = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents";
const CLASSES: &str = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses";

fn snapshot_of(name: &str, claim: &str) -> Value {
    json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
           "metadata": {"name": name},
           "spec": {"source": {"persistentVolumeClaimName": claim}}})
}

fn snapshot_class(name: &str, driver: &str, policy: &str, default: bool) -> Value {
    let mut c = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
                       "metadata": {"name": name}, "driver": driver, "deletionPolicy": policy});
    if default {
        c["metadata"]["annotations"] =
            json!({"snapshot.storage.kubernetes.io/is-default-class": "true"});
    }
    c
}

fn restored_claim(name: &str, size: &str, class: &str, snapshot: &str) -> Value {
    let mut c = claim_in_class(name, size, class);
    c["spec"]["dataSource"] =
        json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": snapshot});
    c
}

fn cloned_claim(name: &str, size: &str, class: &str, source: &str) -> Value {
    let mut c = claim_in_class(name, size, class);
    c["spec"]["dataSource"] = json!({"kind": "PersistentVolumeClaim", "name": source});
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

/// How many times the service (any replica) called the memory provider's `operation`, with
/// outcome ok.
async fn provider_calls(s: &Server, operation: &str) -> u64 {
    s.counter(&format!(
        "stowage_provider_operations_total{{provider=\"memory.stowage.dev\",operation=\"{operation}\",outcome=\"ok\"}}"
    ))
    .await
}

async fn bound_claim(s: &Server, ns: &str, name: &str, class: &str) -> Value {
    let (code, v) = s.post(&pvcs(ns), &claim_in_class(name, "1Gi", class)).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    s.wait_for_phase(&format!("{}/{name}", pvcs(ns)), "Bound")
        .await
}

async fn ready_snapshot(s: &Server, ns: &str, name: &str) -> Value {
    s.wait_for(
        &format!("{}/{name}", snapshots(ns)),
        "snapshot ready",
        |v| v["status"]["readyToUse"] == true,
    )
    .await
}

async fn table(s: &Server, path: &str) -> Value {
    s.client
        .get(s.url(path))
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_snapshot_binds_a_content_becomes_ready_and_a_new_claim_starts_from_it() {
    let (s, _cfg) = server().await;
    let mut class = snapshot_class("mem-snaps", "memory.stowage.dev", "Delete", true);
    class["parameters"] = json!({"tag": "nightly"});
    let (code, v) = s.post(CLASSES, &class).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    bound_claim(&s, "snap", "data", "mem").await;
    let (code, created) = s
        .post(&snapshots("snap"), &snapshot_of("nightly", "data"))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["metadata"]["finalizers"],
        json!(["snapshot.storage.kubernetes.io/volumesnapshot-bound-protection"])
    );
    let ready = ready_snapshot(&s, "snap", "nightly").await;
    let uid = created["metadata"]["uid"].as_str().unwrap();
    // The default class was chosen and written down, as external-snapshotter does.
    assert_eq!(ready["spec"]["volumeSnapshotClassName"], "mem-snaps");
    assert_eq!(ready["status"]["restoreSize"], "1Gi");
    assert!(ready["status"]["creationTime"].is_string(), "{ready}");
    let content_name = format!("snapcontent-{uid}");
    assert_eq!(
        ready["status"]["boundVolumeSnapshotContentName"],
        content_name
    );

    let (code, content) = s.get(&format!("{CONTENTS}/{content_name}")).await;
    assert_eq!(code, StatusCode::OK, "{content}");
    assert_eq!(content["spec"]["driver"], "memory.stowage.dev");
    assert_eq!(content["spec"]["deletionPolicy"], "Delete");
    assert_eq!(content["spec"]["volumeSnapshotClassName"], "mem-snaps");
    assert_eq!(content["spec"]["volumeSnapshotRef"]["uid"], uid);
    assert_eq!(content["spec"]["volumeSnapshotRef"]["namespace"], "snap");
    assert!(
        content["spec"]["source"]["volumeHandle"].is_string(),
        "{content}"
    );
    assert_eq!(content["status"]["restoreSize"], 1u64 << 30);
    assert_eq!(content["status"]["readyToUse"], true);
    let handle = content["status"]["snapshotHandle"].as_str().unwrap();
    assert_eq!(handle, format!("snap-snapshot-{uid}"));
    assert!(content["status"]["creationTime"].is_i64(), "{content}");
    s.wait_for_event("snap", "nightly", "SnapshotCreated").await;
    s.wait_for_event("snap", "nightly", "SnapshotReady").await;

    // Restored into a claim at least as large: provisioned (never statically bound).
    s.post(PV, &host_path_pv("empty-static", "5Gi")).await;
    let (code, v) = s
        .post(
            &pvcs("snap"),
            &restored_claim("copy", "2Gi", "mem", "nightly"),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let copy = s
        .wait_for_phase(&format!("{}/copy", pvcs("snap")), "Bound")
        .await;
    assert_ne!(copy["spec"]["volumeName"], "empty-static");
    assert_eq!(copy["status"]["capacity"]["storage"], "2Gi");

    // Smaller than the snapshot: refused with a reason, the claim stays pending.
    s.post(
        &pvcs("snap"),
        &restored_claim("small", "512Mi", "mem", "nightly"),
    )
    .await;
    let why = s
        .wait_for_event("snap", "small", "ProvisioningFailed")
        .await;
    assert!(why.contains("less than"), "{why}");
    let (_, small) = s.get(&format!("{}/small", pvcs("snap"))).await;
    assert_eq!(small["status"]["phase"], "Pending");

    // The tables kubectl shows, with external-snapshotter's columns.
    let t = table(&s, &snapshots("snap")).await;
    assert_eq!(t["kind"], "Table", "{t}");
    let names: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "Name",
            "ReadyToUse",
            "SourcePVC",
            "SourceSnapshotContent",
            "RestoreSize",
            "SnapshotClass",
            "SnapshotContent",
            "CreationTime",
            "Age"
        ]
    );
    assert_eq!(t["rows"][0]["cells"][1], true, "{t}");
    assert_eq!(t["rows"][0]["cells"][2], "data", "{t}");
    assert_eq!(t["rows"][0]["cells"][6], content_name, "{t}");
    let t = table(&s, CONTENTS).await;
    assert_eq!(t["rows"][0]["cells"][3], "Delete", "{t}");
    assert_eq!(t["rows"][0]["cells"][6], "nightly", "{t}");
    let t = table(&s, CLASSES).await;
    assert_eq!(t["rows"][0]["cells"][0], "mem-snaps (default)", "{t}");
}

#[tokio::test]
async fn claims_wait_for_their_snapshot_and_snapshots_for_their_claim() {
    let (s, _cfg) = server().await;
    // A claim restored from a snapshot that does not exist yet waits, with an event.
    s.post(
        &pvcs("wait"),
        &restored_claim("early", "1Gi", "mem", "later"),
    )
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
    bound_claim(&s, "wait", "source", "mem").await;
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
async fn deleting_a_snapshot_deletes_its_content_and_the_providers_copy_first() {
    let (s, _cfg) = server().await;
    bound_claim(&s, "del", "data", "mem").await;
    s.post(&snapshots("del"), &snapshot_of("once", "data"))
        .await;
    let ready = ready_snapshot(&s, "del", "once").await;
    let content = format!(
        "{CONTENTS}/{}",
        ready["status"]["boundVolumeSnapshotContentName"]
            .as_str()
            .unwrap()
    );
    assert_eq!(provider_calls(&s, "delete_snapshot").await, 0);
    // A bound content is not deleted while its snapshot lives.
    s.delete(&content).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, _) = s.get(&content).await;
    assert_eq!(code, StatusCode::OK, "a bound content stays");
    assert_eq!(provider_calls(&s, "delete_snapshot").await, 0);

    let path = format!("{}/once", snapshots("del"));
    let (code, _) = s.delete(&path).await;
    assert_eq!(code, StatusCode::OK);
    s.wait_gone(&path).await;
    s.wait_gone(&content).await;
    assert_eq!(provider_calls(&s, "delete_snapshot").await, 1);
    // Gone from the provider too: a claim cannot be restored from it any more.
    s.post(&pvcs("del"), &restored_claim("late", "1Gi", "mem", "once"))
        .await;
    s.wait_for_event("del", "late", "WaitingForDataSource")
        .await;
}

/// Velero's CSI path: snapshot with a class, keep the provider's snapshot past the
/// VolumeSnapshot (Retain), then bring it back elsewhere as a pre-provisioned content and
/// restore a claim from it.
#[tokio::test]
async fn a_retained_snapshot_outlives_its_volumesnapshot_and_imports_again() {
    let (s, _cfg) = server().await;
    let mut class = snapshot_class("velero", "memory.stowage.dev", "Delete", false);
    class["metadata"]["labels"] = json!({"velero.io/csi-volumesnapshot-class": "true"});
    s.post(CLASSES, &class).await;
    bound_claim(&s, "app", "data", "mem").await;
    let mut backup = snapshot_of("velero-data-abc12", "data");
    backup["spec"]["volumeSnapshotClassName"] = json!("velero");
    s.post(&snapshots("app"), &backup).await;
    let ready = ready_snapshot(&s, "app", "velero-data-abc12").await;
    let content_name = ready["status"]["boundVolumeSnapshotContentName"]
        .as_str()
        .unwrap()
        .to_string();
    let content_path = format!("{CONTENTS}/{content_name}");
    let (_, content) = s.get(&content_path).await;
    let handle = content["status"]["snapshotHandle"]
        .as_str()
        .unwrap()
        .to_string();
    // Velero keeps the provider's snapshot: the content's policy becomes Retain.
    let (code, v) = s
        .patch(
            &content_path,
            "application/merge-patch+json",
            &json!({"spec": {"deletionPolicy": "Retain"}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    s.delete(&format!("{}/velero-data-abc12", snapshots("app")))
        .await;
    s.wait_gone(&format!("{}/velero-data-abc12", snapshots("app")))
        .await;
    let released = s
        .wait_for(&content_path, "content released", |v| {
            v["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty())
        })
        .await;
    assert_eq!(released["status"]["snapshotHandle"], handle);
    assert_eq!(provider_calls(&s, "delete_snapshot").await, 0);
    s.delete(&content_path).await;
    s.wait_gone(&content_path).await;
    assert_eq!(provider_calls(&s, "delete_snapshot").await, 0, "retained");

    // The restore: a content naming the snapshot by handle, and a VolumeSnapshot naming it.
    let imported = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
        "metadata": {"name": "velero-data-restore"},
        "spec": {"deletionPolicy": "Retain", "driver": "memory.stowage.dev",
                 "source": {"snapshotHandle": handle},
                 "volumeSnapshotRef": {"name": "restored", "namespace": "app-restore"}}});
    let (code, v) = s.post(CONTENTS, &imported).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let vs = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "restored"},
        "spec": {"source": {"volumeSnapshotContentName": "velero-data-restore"}}});
    // Another namespace cannot take the content.
    let (code, _) = s.post(&snapshots("other"), &vs).await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, _) = s.post(&snapshots("app-restore"), &vs).await;
    assert_eq!(code, StatusCode::CREATED);
    let ready = ready_snapshot(&s, "app-restore", "restored").await;
    assert_eq!(
        ready["status"]["boundVolumeSnapshotContentName"],
        "velero-data-restore"
    );
    assert_eq!(ready["status"]["restoreSize"], "1Gi");
    let stolen = s
        .wait_for(
            &format!("{}/restored", snapshots("other")),
            "refused",
            |v| v["status"]["error"]["message"].is_string(),
        )
        .await;
    assert!(
        stolen["status"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bound to another"),
        "{stolen}"
    );
    assert_ne!(stolen["status"]["readyToUse"], true);
    s.post(
        &pvcs("app-restore"),
        &restored_claim("data", "1Gi", "mem", "restored"),
    )
    .await;
    s.wait_for_phase(&format!("{}/data", pvcs("app-restore")), "Bound")
        .await;

    // A content naming a snapshot the provider does not have says so.
    let mut missing = imported.clone();
    missing["metadata"]["name"] = json!("nothing-there");
    missing["spec"]["source"]["snapshotHandle"] = json!("snap-missing");
    s.post(CONTENTS, &missing).await;
    let v = s
        .wait_for(&format!("{CONTENTS}/nothing-there"), "an error", |v| {
            v["status"]["error"]["message"].is_string()
        })
        .await;
    assert!(
        v["status"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not found"),
        "{v}"
    );
}

#[tokio::test]
async fn snapshot_shapes_classes_and_sources_are_checked() {
    let (s, _cfg) = server().await;
    let both = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "both"},
        "spec": {"source": {"persistentVolumeClaimName": "a", "volumeSnapshotContentName": "b"}}});
    let (code, v) = s.post(&snapshots("bad"), &both).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (code, v) = s
        .post(
            &snapshots("bad"),
            &json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                    "metadata": {"name": "nothing"}, "spec": {"source": {}}}),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (code, v) = s
        .post(
            CLASSES,
            &snapshot_class("x", "memory.stowage.dev", "Sometimes", false),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let content = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
        "metadata": {"name": "no-source"},
        "spec": {"deletionPolicy": "Delete", "driver": "memory.stowage.dev", "source": {},
                 "volumeSnapshotRef": {"name": "x"}}});
    let (code, v) = s.post(CONTENTS, &content).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("spec.source") && message.contains("spec.volumeSnapshotRef.namespace"),
        "{v}"
    );

    // A class of another driver is refused; a missing one is waited for.
    s.post(
        CLASSES,
        &snapshot_class("ebs", "ebs.stowage.dev", "Delete", false),
    )
    .await;
    bound_claim(&s, "bad", "data", "mem").await;
    let mut wrong = snapshot_of("wrong-driver", "data");
    wrong["spec"]["volumeSnapshotClassName"] = json!("ebs");
    s.post(&snapshots("bad"), &wrong).await;
    let why = s
        .wait_for_event("bad", "wrong-driver", "SnapshotCreationFailed")
        .await;
    assert!(why.contains("is for driver ebs.stowage.dev"), "{why}");
    let mut later = snapshot_of("later-class", "data");
    later["spec"]["volumeSnapshotClassName"] = json!("arrives-later");
    s.post(&snapshots("bad"), &later).await;
    s.wait_for_event("bad", "later-class", "SnapshotPending")
        .await;
    s.post(
        CLASSES,
        &snapshot_class("arrives-later", "memory.stowage.dev", "Delete", false),
    )
    .await;
    ready_snapshot(&s, "bad", "later-class").await;

    // The source of a snapshot is immutable.
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

    // A data source that is neither a snapshot nor a claim is refused, said, not ignored.
    let mut odd = claim_in_class("odd", "1Gi", "mem");
    odd["spec"]["dataSource"] = json!({"apiGroup": "example.com", "kind": "Backup", "name": "b"});
    s.post(&pvcs("bad"), &odd).await;
    let why = s.wait_for_event("bad", "odd", "ProvisioningFailed").await;
    assert!(why.contains("not supported"), "{why}");
}

#[tokio::test]
async fn clones_copy_a_bound_claim_and_protect_it_meanwhile() {
    let (s, _cfg) = server().await;
    let source = bound_claim(&s, "cl", "data", "mem").await;
    s.post(&pvcs("cl"), &cloned_claim("bigger", "3Gi", "mem", "data"))
        .await;
    let bigger = s
        .wait_for_phase(&format!("{}/bigger", pvcs("cl")), "Bound")
        .await;
    assert_eq!(bigger["status"]["capacity"]["storage"], "3Gi");
    assert_ne!(bigger["spec"]["volumeName"], source["spec"]["volumeName"]);
    // The source was protected while the clone was copied, and is released after.
    s.wait_for(&format!("{}/data", pvcs("cl")), "released", |v| {
        !v["metadata"]["finalizers"]
            .to_string()
            .contains("cloning-protection")
    })
    .await;

    s.post(
        &pvcs("cl"),
        &cloned_claim("smaller", "512Mi", "mem", "data"),
    )
    .await;
    let why = s
        .wait_for_event("cl", "smaller", "ProvisioningFailed")
        .await;
    assert!(why.contains("at least as large as its source"), "{why}");
    // A claim that does not exist yet is waited for.
    s.post(&pvcs("cl"), &cloned_claim("early", "1Gi", "mem", "not-yet"))
        .await;
    s.wait_for_event("cl", "early", "WaitingForDataSource")
        .await;
    bound_claim(&s, "cl", "not-yet", "mem").await;
    s.wait_for_phase(&format!("{}/early", pvcs("cl")), "Bound")
        .await;
}

/// The local provider end to end: snapshot, restore and clone carry the files, and a copy
/// reports its progress on the claim.
#[tokio::test]
async fn local_snapshots_restores_and_clones_carry_the_data() {
    let root = tempfile::tempdir().unwrap();
    let (_dir, config) = config_file(&format!(
        "providers:\n  local:\n    node: n1\n    capacity: 10Gi\n    root: {}\n",
        root.path().display()
    ));
    let s = Server::start_with(&["--config", config.as_str()]).await;
    s.post(SC, &storage_class("loc", "local.stowage.dev")).await;
    s.post(
        CLASSES,
        &snapshot_class("loc", "local.stowage.dev", "Delete", true),
    )
    .await;
    let data = bound_claim(&s, "web", "data", "loc").await;
    let (_, pv) = s
        .get(&format!(
            "{PV}/{}",
            data["spec"]["volumeName"].as_str().unwrap()
        ))
        .await;
    let dir = std::path::PathBuf::from(
        pv["spec"]["csi"]["volumeAttributes"]["path"]
            .as_str()
            .unwrap(),
    );
    std::fs::create_dir_all(dir.join("site")).unwrap();
    std::fs::write(dir.join("site/index.html"), b"<h1>v1</h1>").unwrap();

    s.post(&snapshots("web"), &snapshot_of("v1", "data")).await;
    ready_snapshot(&s, "web", "v1").await;
    std::fs::write(dir.join("site/index.html"), b"<h1>v2</h1>").unwrap();

    s.post(&pvcs("web"), &restored_claim("back", "2Gi", "loc", "v1"))
        .await;
    s.post(&pvcs("web"), &cloned_claim("twin", "1Gi", "loc", "data"))
        .await;
    let contents_of = |claim: Value| {
        let s = &s;
        async move {
            let (_, pv) = s
                .get(&format!(
                    "{PV}/{}",
                    claim["spec"]["volumeName"].as_str().unwrap()
                ))
                .await;
            let path = pv["spec"]["csi"]["volumeAttributes"]["path"]
                .as_str()
                .unwrap()
                .to_string();
            std::fs::read_to_string(std::path::Path::new(&path).join("site/index.html")).unwrap()
        }
    };
    let back = s
        .wait_for_phase(&format!("{}/back", pvcs("web")), "Bound")
        .await;
    assert_eq!(
        contents_of(back).await,
        "<h1>v1</h1>",
        "the restore has the snapshot's data"
    );
    let twin = s
        .wait_for_phase(&format!("{}/twin", pvcs("web")), "Bound")
        .await;
    assert_eq!(
        contents_of(twin).await,
        "<h1>v2</h1>",
        "the clone has the data as it is"
    );
    // Every copy reports its progress (its first answer is always "copying").
    let why = s.wait_for_event("web", "back", "Provisioning").await;
    assert!(why.contains("copied"), "{why}");

    // Deleting the snapshot removes its copy from the node's disk.
    s.delete(&format!("{}/v1", snapshots("web"))).await;
    s.wait_gone(&format!("{}/v1", snapshots("web"))).await;
    let left: Vec<_> = std::fs::read_dir(root.path().join(".stowage/snapshots"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
