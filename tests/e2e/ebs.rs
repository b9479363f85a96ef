//! The EBS provider end to end: a real `stowage serve` against a real EC2 API (moto's server
//! mode on loopback), checked through EC2 itself.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use stowage_provider_ebs::testing::Moto;

use crate::support::*;

macro_rules! moto {
    () => {
        match Moto::start_for_test() {
            Some(m) => m,
            None => return,
        }
    };
}

/// Deliberately recognisable credentials: the secret test looks for them everywhere.
const KEY_ID: &str = "AKIASTOWAGETEST7KEY1";
const SECRET: &str = "stowage-test-secret-9f3c1e0b77a24d5c";

fn ebs_config(moto: &Moto) -> (tempfile::TempDir, String) {
    config_file(&format!(
        "providers:\n  ebs:\n    region: us-east-1\n    endpoint: {}\n    defaultZone: us-east-1a\n    accessKeyId: {KEY_ID}\n    secretAccessKey: {SECRET}\n",
        moto.endpoint()
    ))
}

fn ebs_class(name: &str, extra: Value) -> Value {
    let mut sc = storage_class(name, "ebs.stowage.dev");
    sc["parameters"] = json!({"type": "gp3", "tagSpecification_1": "team={{ .PVCNamespace }}"});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            sc[k] = v;
        }
    }
    sc
}

async fn node_with_instance(s: &Server, moto: &Moto, name: &str, zone: &str) -> String {
    let instance = moto.run_instance(zone).await;
    let (code, v) = s
        .post(
            NODES,
            &json!({"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
                    "spec": {"providerID": format!("aws:///{zone}/{instance}")}}),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    instance
}

/// EC2's view of a volume: (state, size, zone, type, tags, attached instances).
async fn ec2_volume(
    moto: &Moto,
    id: &str,
) -> Option<stowage_provider_ebs::testing::aws_sdk_ec2::types::Volume> {
    moto.client()
        .describe_volumes()
        .filters(
            stowage_provider_ebs::testing::aws_sdk_ec2::types::Filter::builder()
                .name("volume-id")
                .values(id)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .volumes()
        .first()
        .cloned()
}

fn tags(v: &stowage_provider_ebs::testing::aws_sdk_ec2::types::Volume) -> BTreeMap<String, String> {
    v.tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Waits until the claim `ns/name` is Bound; returns its volume object and EBS volume id.
async fn bound_volume(s: &Server, ns: &str, name: &str) -> (Value, String) {
    let claim = s
        .wait_for_phase(&format!("{}/{name}", pvcs(ns)), "Bound")
        .await;
    let (_, pv) = s
        .get(&format!(
            "{PV}/{}",
            claim["spec"]["volumeName"].as_str().unwrap()
        ))
        .await;
    let id = pv["spec"]["csi"]["volumeHandle"]
        .as_str()
        .unwrap()
        .to_string();
    (pv, id)
}

async fn attachment_of(s: &Server, volume: &str) -> Option<Value> {
    let (_, list) = s.get(VA).await;
    list["items"]
        .as_array()?
        .iter()
        .find(|v| v["spec"]["source"]["persistentVolumeName"] == volume)
        .cloned()
}

#[tokio::test]
async fn an_ebs_claim_goes_through_its_whole_life() {
    let moto = moto!();
    let (_cfg, config) = ebs_config(&moto);
    let s = Server::start_with(&["--config", &config]).await;
    s.post(SC, &ebs_class("ebs", json!({"allowVolumeExpansion": true})))
        .await;
    s.post(
        SC,
        &ebs_class("ebs-keep", json!({"reclaimPolicy": "Retain"})),
    )
    .await;
    let instance = node_with_instance(&s, &moto, "node-a", "us-east-1a").await;

    s.post(&pvcs("shop"), &claim_in_class("db", "5Gi", "ebs"))
        .await;
    let (pv, id) = bound_volume(&s, "shop", "db").await;
    let pv_name = pv["metadata"]["name"].as_str().unwrap().to_string();
    assert!(id.starts_with("vol-"), "{id}");
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0],
        json!({"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["us-east-1a"]})
    );
    let v = ec2_volume(&moto, &id)
        .await
        .expect("the volume exists in EC2");
    assert_eq!(v.size(), Some(5));
    assert_eq!(v.availability_zone(), Some("us-east-1a"));
    assert_eq!(v.volume_type().map(|t| t.as_str()), Some("gp3"));
    let t = tags(&v);
    assert_eq!(t["stowage.dev/volume-name"], pv_name);
    assert_eq!(t["team"], "shop");

    // A pod on the node: the volume is attached there, with a device path.
    s.post(&pods("shop"), &pod_using("db-0", "db", Some("node-a")))
        .await;
    let va = s
        .eventually(Duration::from_secs(30), "the attachment", || async {
            attachment_of(&s, &pv_name)
                .await
                .filter(|v| v["status"]["attached"] == true)
        })
        .await;
    let meta = &va["status"]["attachmentMetadata"];
    assert_eq!(meta["type"], "block");
    assert!(
        meta["devicePath"].as_str().unwrap().starts_with("/dev/xvd"),
        "{meta}"
    );
    let v = ec2_volume(&moto, &id).await.unwrap();
    assert_eq!(v.attachments()[0].instance_id(), Some(instance.as_str()));

    // The claim grows through ModifyVolume.
    s.patch(
        &format!("{}/db", pvcs("shop")),
        "application/merge-patch+json",
        &json!({"spec": {"resources": {"requests": {"storage": "8Gi"}}}}),
    )
    .await;
    s.wait_for(&format!("{PV}/{pv_name}"), "the volume to grow", |v| {
        v["spec"]["capacity"]["storage"] == "8Gi"
    })
    .await;
    assert_eq!(ec2_volume(&moto, &id).await.unwrap().size(), Some(8));

    // The pod goes: detached (in EC2 too); the claim goes: the volume is deleted.
    s.delete(&format!("{}/db-0", pods("shop"))).await;
    s.eventually(Duration::from_secs(30), "the detach", || async {
        attachment_of(&s, &pv_name).await.is_none().then_some(())
    })
    .await;
    assert!(
        ec2_volume(&moto, &id)
            .await
            .unwrap()
            .attachments()
            .is_empty()
    );
    s.delete(&format!("{}/db", pvcs("shop"))).await;
    s.wait_gone(&format!("{PV}/{pv_name}")).await;
    assert!(
        ec2_volume(&moto, &id)
            .await
            .is_none_or(|v| v.state().map(|s| s.as_str()) == Some("deleted")),
        "deleted in EC2"
    );

    // Retain keeps the EBS volume.
    s.post(&pvcs("shop"), &claim_in_class("keep", "1Gi", "ebs-keep"))
        .await;
    let (pv, kept_id) = bound_volume(&s, "shop", "keep").await;
    let kept = pv["metadata"]["name"].as_str().unwrap().to_string();
    s.delete(&format!("{}/keep", pvcs("shop"))).await;
    s.wait_for_phase(&format!("{PV}/{kept}"), "Released").await;
    assert!(ec2_volume(&moto, &kept_id).await.is_some());
}

#[tokio::test]
async fn a_volume_snapshot_is_an_ebs_snapshot_and_restores_into_a_new_volume() {
    let moto = moto!();
    let (_cfg, config) = ebs_config(&moto);
    let s = Server::start_with(&["--config", &config]).await;
    s.post(SC, &ebs_class("ebs", json!({}))).await;
    // The class's tags reach the EBS snapshot, as the EBS CSI driver's classes do.
    let (code, v) = s
        .post(
            "/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses",
            &json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
                    "metadata": {"name": "ebs-snaps"}, "driver": "ebs.stowage.dev",
                    "deletionPolicy": "Delete",
                    "parameters": {"tagSpecification_1": "team=shop"}}),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    s.post(&pvcs("shop"), &claim_in_class("db", "5Gi", "ebs"))
        .await;
    let (_, origin) = bound_volume(&s, "shop", "db").await;

    let snapshots = "/apis/snapshot.storage.k8s.io/v1/namespaces/shop/volumesnapshots";
    let (code, v) = s
        .post(
            snapshots,
            &json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                    "metadata": {"name": "before-upgrade"},
                    "spec": {"source": {"persistentVolumeClaimName": "db"},
                             "volumeSnapshotClassName": "ebs-snaps"}}),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let path = format!("{snapshots}/before-upgrade");
    let ready = s
        .wait_for(&path, "snapshot ready", |v| {
            v["status"]["readyToUse"] == true
        })
        .await;
    assert_eq!(ready["status"]["restoreSize"], "5Gi");
    let (_, content) = s
        .get(&format!(
            "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents/{}",
            ready["status"]["boundVolumeSnapshotContentName"]
                .as_str()
                .unwrap()
        ))
        .await;
    let snapshot_id = content["status"]["snapshotHandle"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(snapshot_id.starts_with("snap-"), "{snapshot_id}");
    assert_eq!(content["spec"]["source"]["volumeHandle"], origin);
    let described = moto
        .client()
        .describe_snapshots()
        .snapshot_ids(&snapshot_id)
        .send()
        .await
        .unwrap();
    let snapshot = &described.snapshots()[0];
    assert_eq!(snapshot.volume_id(), Some(origin.as_str()));
    assert!(
        snapshot
            .tags()
            .iter()
            .any(|t| t.key() == Some("team") && t.value() == Some("shop")),
        "{snapshot:?}"
    );

    let mut restored = claim_in_class("db-copy", "8Gi", "ebs");
    restored["spec"]["dataSource"] = json!({"apiGroup": "snapshot.storage.k8s.io",
                                            "kind": "VolumeSnapshot", "name": "before-upgrade"});
    s.post(&pvcs("shop"), &restored).await;
    let (_, copy_id) = bound_volume(&s, "shop", "db-copy").await;
    let v = ec2_volume(&moto, &copy_id).await.unwrap();
    assert_eq!(v.snapshot_id(), Some(snapshot_id.as_str()));
    assert_eq!(v.size(), Some(8));

    // Deleting the VolumeSnapshot deletes the EBS snapshot.
    s.delete(&path).await;
    s.wait_gone(&path).await;
    let left = moto
        .client()
        .describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .unwrap();
    assert!(
        left.snapshots()
            .iter()
            .all(|x| x.snapshot_id() != Some(snapshot_id.as_str())),
        "the EBS snapshot is left behind"
    );
}

#[tokio::test]
async fn a_claim_clones_another_through_a_temporary_ebs_snapshot() {
    let moto = moto!();
    let (_cfg, config) = ebs_config(&moto);
    let s = Server::start_with(&["--config", &config]).await;
    s.post(SC, &ebs_class("ebs", json!({}))).await;
    s.post(&pvcs("shop"), &claim_in_class("db", "5Gi", "ebs"))
        .await;
    let (_, origin) = bound_volume(&s, "shop", "db").await;
    let mut clone = claim_in_class("db-clone", "6Gi", "ebs");
    clone["spec"]["dataSource"] = json!({"kind": "PersistentVolumeClaim", "name": "db"});
    s.post(&pvcs("shop"), &clone).await;
    let (_, clone_id) = bound_volume(&s, "shop", "db-clone").await;
    assert_ne!(clone_id, origin);
    let v = ec2_volume(&moto, &clone_id).await.unwrap();
    assert_eq!(v.size(), Some(6));
    let through = v.snapshot_id().expect("made from a snapshot").to_string();
    // The temporary snapshot was of the source, and is gone.
    let left = moto
        .client()
        .describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .unwrap();
    assert!(
        left.snapshots()
            .iter()
            .all(|x| x.snapshot_id() != Some(through.as_str())),
        "the clone's snapshot is left behind"
    );
    // A smaller clone is refused, and nothing is made for it.
    let mut small = claim_in_class("db-small", "4Gi", "ebs");
    small["spec"]["dataSource"] = json!({"kind": "PersistentVolumeClaim", "name": "db"});
    s.post(&pvcs("shop"), &small).await;
    let why = s
        .wait_for_event("shop", "db-small", "ProvisioningFailed")
        .await;
    assert!(why.contains("at least as large"), "{why}");
}

#[tokio::test]
async fn wait_for_first_consumer_puts_the_volume_in_the_pods_zone() {
    let moto = moto!();
    let (_cfg, config) = ebs_config(&moto);
    let s = Server::start_with(&["--config", &config]).await;
    s.post(
        SC,
        &ebs_class(
            "ebs-wffc",
            json!({"volumeBindingMode": "WaitForFirstConsumer"}),
        ),
    )
    .await;
    node_with_instance(&s, &moto, "node-b", "us-east-1b").await;
    s.post(&pvcs("w"), &claim_in_class("late", "1Gi", "ebs-wffc"))
        .await;
    s.post(&pods("w"), &pod_using("late-0", "late", Some("node-b")))
        .await;
    let (pv, id) = bound_volume(&s, "w", "late").await;
    assert_eq!(
        ec2_volume(&moto, &id).await.unwrap().availability_zone(),
        Some("us-east-1b"),
        "the zone of the node the pod was scheduled to, not the default zone"
    );
    s.eventually(Duration::from_secs(30), "the attachment", || async {
        attachment_of(&s, pv["metadata"]["name"].as_str().unwrap())
            .await
            .filter(|v| v["status"]["attached"] == true)
    })
    .await;
}

#[tokio::test]
async fn invalid_ebs_parameters_fail_the_claim_without_calling_ec2() {
    let moto = moto!();
    let (_cfg, config) = ebs_config(&moto);
    let s = Server::start_with(&["--config", &config]).await;
    let mut bad = ebs_class("too-fast", json!({}));
    bad["parameters"] = json!({"type": "gp3", "iops": "100000"});
    s.post(SC, &bad).await;
    s.post(&pvcs("x"), &claim_in_class("fast", "10Gi", "too-fast"))
        .await;
    let message = s.wait_for_event("x", "fast", "ProvisioningFailed").await;
    assert!(message.contains("gp3 IOPS are 3000–80000"), "{message}");
    let (_, text) = s.get("/metrics").await;
    let text = text.as_str().unwrap_or_default().to_string();
    assert!(
        !text.contains(r#"request="CreateVolume""#),
        "no CreateVolume was sent:\n{text}"
    );
    assert!(
        moto.client()
            .describe_volumes()
            .send()
            .await
            .unwrap()
            .volumes()
            .is_empty()
    );
}

#[tokio::test]
async fn a_crash_in_the_middle_of_200_provisions_leaves_exactly_200_volumes() {
    let moto = moto!();
    let (_cfg, config) = ebs_config(&moto);
    let mut s = Server::start_with(&["--config", &config]).await;
    s.post(SC, &ebs_class("ebs", json!({}))).await;
    for i in 0..200 {
        let (code, v) = s
            .post(
                &pvcs("crash"),
                &claim_in_class(&format!("c{i}"), "1Gi", "ebs"),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "{v}");
    }
    // Kill it while provisioning is under way.
    s.eventually(Duration::from_secs(30), "some volumes", || async {
        let n = moto
            .client()
            .describe_volumes()
            .send()
            .await
            .unwrap()
            .volumes()
            .len();
        (n >= 20).then_some(())
    })
    .await;
    s.kill();
    // CreateVolume calls the dead process had sent may still be in moto's queue. AWS would
    // answer them with the volume their ClientToken already made; moto ignores ClientToken
    // (see TESTING.md) and would make a second volume after the restarted server has looked
    // the name up. Let moto finish what it was sent before restarting.
    let mut last = usize::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let n = moto
            .client()
            .describe_volumes()
            .send()
            .await
            .unwrap()
            .volumes()
            .len();
        if n == last {
            break;
        }
        last = n;
    }
    s.restart().await;
    s.eventually(Duration::from_secs(60), "all 200 claims bound", || async {
        let (_, list) = s.get(&pvcs("crash")).await;
        let bound = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["status"]["phase"] == "Bound")
            .count();
        (bound == 200).then_some(())
    })
    .await;
    let volumes = moto.client().describe_volumes().send().await.unwrap();
    let ours: Vec<String> = volumes
        .volumes()
        .iter()
        .filter(|v| tags(v).contains_key("stowage.dev/volume-name"))
        .map(|v| v.volume_id().unwrap().to_string())
        .collect();
    assert_eq!(ours.len(), 200, "exactly one EBS volume per claim");
    let (_, pvs) = s.get(PV).await;
    let mut handles: Vec<String> = pvs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["spec"]["csi"]["volumeHandle"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut ours = ours;
    handles.sort();
    ours.sort();
    assert_eq!(
        handles, ours,
        "every EBS volume belongs to a PersistentVolume: no orphans"
    );
}

#[tokio::test]
async fn aws_credentials_never_appear_in_responses_events_metrics_or_logs() {
    let moto = moto!();
    let (_cfg, config) = ebs_config(&moto);
    let s = Server::start_logged(&["--config", &config], "debug").await;
    s.post(SC, &ebs_class("ebs", json!({}))).await;
    let mut bad = ebs_class("bad", json!({}));
    bad["parameters"] = json!({"type": "io9"});
    s.post(SC, &bad).await;
    node_with_instance(&s, &moto, "node-a", "us-east-1a").await;
    s.post(
        NODES,
        &json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": "ghost", "labels": {"topology.kubernetes.io/zone": "us-east-1a"}},
                "spec": {"providerID": "aws:///us-east-1a/i-00000000deadbeef0"}}),
    )
    .await;
    // Successes and failures: provisioning, a bad class, an attach to a missing instance.
    s.post(&pvcs("sec"), &claim_in_class("ok", "1Gi", "ebs"))
        .await;
    s.post(&pvcs("sec"), &claim_in_class("bad", "1Gi", "bad"))
        .await;
    s.post(&pvcs("sec"), &claim_in_class("lost", "1Gi", "ebs"))
        .await;
    s.wait_for_phase(&format!("{}/ok", pvcs("sec")), "Bound")
        .await;
    s.wait_for_phase(&format!("{}/lost", pvcs("sec")), "Bound")
        .await;
    s.post(&pods("sec"), &pod_using("p1", "ok", Some("node-a")))
        .await;
    s.post(&pods("sec"), &pod_using("p2", "lost", Some("ghost")))
        .await;
    s.wait_for_event("sec", "bad", "ProvisioningFailed").await;
    s.eventually(Duration::from_secs(30), "attach outcomes", || async {
        let (_, list) = s.get(VA).await;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let done = items
            .iter()
            .filter(|v| v["status"]["attached"] == true || !v["status"]["attachError"].is_null());
        (done.count() == 2).then_some(())
    })
    .await;

    let mut seen = String::new();
    for path in [
        SC,
        PV,
        VA,
        NODES,
        "/api/v1/persistentvolumeclaims",
        "/api/v1/pods",
        "/api/v1/events",
        "/apis/coordination.k8s.io/v1/leases",
        "/apis/stowage.dev/v1/providers",
        "/metrics",
        "/openapi/v3",
        "/apis",
        "/api",
        "/version",
    ] {
        let (_, body) = s.get(path).await;
        seen.push_str(&body.to_string());
    }
    let log = s.log();
    assert!(
        log.contains("ebs") || log.contains("EBS"),
        "the log is being written"
    );
    for secret in [KEY_ID, SECRET] {
        assert!(
            !seen.contains(secret),
            "{secret} appears in an API response"
        );
        let leaks: Vec<String> = log
            .lines()
            .filter(|l| l.contains(secret))
            .map(|l| l.replace(secret, "<HERE>"))
            .collect();
        assert!(
            leaks.is_empty(),
            "{secret} appears in the server log:\n{}",
            leaks.join("\n")
        );
    }
}
