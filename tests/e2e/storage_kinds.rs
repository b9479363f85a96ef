//! Kubernetes' newer storage kinds over HTTP, on every store (also three PostgreSQL replicas):
//! CSIDrivers and CSINodes kept by the server, VolumeAttributesClasses applied to and modified
//! on live volumes, and who may read them.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

const CSIDRIVERS: &str = "/apis/storage.k8s.io/v1/csidrivers";
const CSINODES: &str = "/apis/storage.k8s.io/v1/csinodes";
const VACS: &str = "/apis/storage.k8s.io/v1/volumeattributesclasses";
const MEMORY: &str = "memory.stowage.dev";

async fn server() -> (Server, tempfile::TempDir) {
    let (dir, config) = config_file("providers:\n  memory:\n    enabled: true\n");
    let s = Server::start_with(&["--config", config.as_str()]).await;
    (s, dir)
}

fn attributes_class(name: &str, iops: &str) -> serde_json::Value {
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "VolumeAttributesClass",
        "metadata": {"name": name},
        "driverName": MEMORY,
        "parameters": {"iops": iops},
    })
}

#[tokio::test]
async fn the_server_keeps_a_csidriver_per_provider_and_a_csinode_per_node() {
    let (s, _dir) = server().await;
    let driver = s
        .wait_for(
            &format!("{CSIDRIVERS}/{MEMORY}"),
            "the memory CSIDriver",
            |_| true,
        )
        .await;
    assert_eq!(driver["spec"]["attachRequired"], true);
    assert_eq!(driver["spec"]["fsGroupPolicy"], "None");
    // An edit is stored, then put back.
    let (code, v) = s
        .patch(
            &format!("{CSIDRIVERS}/{MEMORY}"),
            "application/merge-patch+json",
            &json!({"spec": {"storageCapacity": true}}),
        )
        .await;
    assert_eq!(
        (code, &v["spec"]["storageCapacity"]),
        (StatusCode::OK, &json!(true)),
        "{v}"
    );
    s.wait_for(
        &format!("{CSIDRIVERS}/{MEMORY}"),
        "storageCapacity put back",
        |d| d["spec"]["storageCapacity"] == false,
    )
    .await;
    if on_sqlite() {
        // The local provider (on by default with SQLite) attaches nothing.
        let local = s
            .wait_for(
                &format!("{CSIDRIVERS}/local.stowage.dev"),
                "the local CSIDriver",
                |_| true,
            )
            .await;
        assert_eq!(local["spec"]["attachRequired"], false);
    }

    let (code, v) = s
        .post(
            NODES,
            &json!({"metadata": {"name": "n1", "annotations": {"stowage.dev/max-volume-attachments": "3"}}}),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let node = s
        .wait_for(&format!("{CSINODES}/n1"), "n1's CSINode", |_| true)
        .await;
    let entry = node["spec"]["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == MEMORY)
        .cloned()
        .expect("the memory provider on n1");
    assert_eq!(entry["nodeID"], "n1");
    assert_eq!(entry["allocatable"]["count"], 3);

    // A deleted CSINode comes back while its Node is there.
    let (code, _) = s.delete(&format!("{CSINODES}/n1")).await;
    assert_eq!(code, StatusCode::OK);
    s.wait_for(&format!("{CSINODES}/n1"), "n1's CSINode again", |_| true)
        .await;
    let (code, _) = s.delete(&format!("{NODES}/n1")).await;
    assert_eq!(code, StatusCode::OK);
    s.wait_gone(&format!("{CSINODES}/n1")).await;

    // A tenant sees what storage it may ask for, not the nodes.
    let tenant = token(&s, "namespace:team-a", None).await;
    let tenant = As::new(&s, &tenant);
    assert_eq!(tenant.get(CSIDRIVERS).await, StatusCode::OK);
    assert_eq!(tenant.get(VACS).await, StatusCode::OK);
    assert_eq!(tenant.get(CSINODES).await, StatusCode::FORBIDDEN);
    assert_eq!(
        tenant.create(VACS, &attributes_class("mine", "100")).await,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn a_claims_attributes_class_follows_it_to_its_volume_and_a_class_in_use_stays() {
    let (s, _dir) = server().await;
    s.post(SC, &storage_class("mem", MEMORY)).await;
    for (name, iops) in [("gold", "4000"), ("silver", "1000"), ("absurd", "1")] {
        let (code, v) = s.post(VACS, &attributes_class(name, iops)).await;
        assert_eq!(code, StatusCode::CREATED, "{v}");
    }
    let (code, v) = s
        .patch(
            &format!("{VACS}/gold"),
            "application/merge-patch+json",
            &json!({"parameters": {"iops": "5000"}}),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    let mut claim = claim_in_class("data", "1Gi", "mem");
    claim["spec"]["volumeAttributesClassName"] = json!("gold");
    let (code, v) = s.post(&pvcs("default"), &claim).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let path = format!("{}/data", pvcs("default"));
    let bound = s
        .wait_for(&path, "bound with gold", |c| {
            c["status"]["currentVolumeAttributesClassName"] == "gold"
        })
        .await;
    let volume = bound["spec"]["volumeName"].as_str().unwrap().to_string();
    let (_, pv) = s.get(&format!("{PV}/{volume}")).await;
    assert_eq!(pv["spec"]["volumeAttributesClassName"], "gold");

    let retarget = |class: &'static str| {
        let s = &s;
        let path = path.clone();
        async move {
            let (code, v) = s
                .patch(
                    &path,
                    "application/merge-patch+json",
                    &json!({"spec": {"volumeAttributesClassName": class}}),
                )
                .await;
            assert_eq!(code, StatusCode::OK, "{v}");
        }
    };
    retarget("silver").await;
    s.wait_for(&path, "silver", |c| {
        c["status"]["currentVolumeAttributesClassName"] == "silver"
            && c["status"].get("modifyVolumeStatus").is_none()
    })
    .await;
    retarget("absurd").await;
    s.wait_for(&path, "absurd infeasible", |c| {
        c["status"]["modifyVolumeStatus"]
            == json!({"targetVolumeAttributesClassName": "absurd", "status": "Infeasible"})
            && c["status"]["currentVolumeAttributesClassName"] == "silver"
    })
    .await;
    s.wait_for_event("default", "data", "VolumeModifyFailed")
        .await;

    // silver is the volume's: its delete waits for the claim and volume to go.
    let (code, _) = s.delete(&format!("{VACS}/silver")).await;
    assert_eq!(code, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, v) = s.get(&format!("{VACS}/silver")).await;
    assert_eq!(code, StatusCode::OK);
    assert!(v["metadata"]["deletionTimestamp"].is_string(), "{v}");
    // gold is no longer named by anything: it goes at once.
    let (code, _) = s.delete(&format!("{VACS}/gold")).await;
    assert_eq!(code, StatusCode::OK);
    s.wait_gone(&format!("{VACS}/gold")).await;
    let (code, _) = s.delete(&path).await;
    assert_eq!(code, StatusCode::OK);
    s.wait_gone(&format!("{VACS}/silver")).await;
}
