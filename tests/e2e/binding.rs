//! Static binding: claims meet existing volumes, with Kubernetes' phases, annotations and events.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

fn labelled_pv(name: &str, size: &str, labels: serde_json::Value) -> serde_json::Value {
    let mut v = host_path_pv(name, size);
    v["metadata"]["labels"] = labels;
    v
}

#[tokio::test]
async fn a_claim_binds_to_the_smallest_volume_that_fits() {
    let s = Server::start_with(&["--no-default-class"]).await;
    for (name, size) in [
        ("pv-10g", "10Gi"),
        ("pv-5g", "5Gi"),
        ("pv-1g", "1Gi"),
        ("pv-3g", "3Gi"),
    ] {
        s.post(PV, &host_path_pv(name, size)).await;
    }
    s.post(&pvcs("b"), &pvc("needs-2g", "2Gi")).await;
    let claim = s
        .wait_for_phase(&format!("{}/needs-2g", pvcs("b")), "Bound")
        .await;
    assert_eq!(claim["spec"]["volumeName"], "pv-3g");
    assert_eq!(claim["status"]["capacity"]["storage"], "3Gi");
    assert_eq!(claim["status"]["accessModes"], json!(["ReadWriteOnce"]));
    assert_eq!(
        claim["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"],
        "yes"
    );
    assert_eq!(
        claim["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"],
        "yes"
    );
    let (_, volume) = s.get(&format!("{PV}/pv-3g")).await;
    assert_eq!(volume["status"]["phase"], "Bound");
    assert_eq!(volume["spec"]["claimRef"]["name"], "needs-2g");
    assert_eq!(volume["spec"]["claimRef"]["uid"], claim["metadata"]["uid"]);
    // The others are Available.
    for name in ["pv-10g", "pv-5g", "pv-1g"] {
        s.wait_for_phase(&format!("{PV}/{name}"), "Available").await;
    }
}

#[tokio::test]
async fn class_access_modes_and_volume_mode_must_match() {
    let s = Server::start_with(&["--no-default-class"]).await;
    let mut gold = host_path_pv("gold-rwo", "5Gi");
    gold["spec"]["storageClassName"] = json!("gold");
    s.post(PV, &gold).await;
    let mut rwx = host_path_pv("plain-rwx", "5Gi");
    rwx["spec"]["accessModes"] = json!(["ReadWriteMany", "ReadWriteOnce"]);
    s.post(PV, &rwx).await;
    let mut block = host_path_pv("plain-block", "1Gi");
    block["spec"]["volumeMode"] = json!("Block");
    s.post(PV, &block).await;

    let mut wants_rwx = pvc("wants-rwx", "1Gi");
    wants_rwx["spec"]["accessModes"] = json!(["ReadWriteMany"]);
    s.post(&pvcs("m"), &wants_rwx).await;
    s.post(&pvcs("m"), &claim_in_class("wants-gold", "1Gi", "gold"))
        .await;
    let mut wants_block = pvc("wants-block", "1Gi");
    wants_block["spec"]["volumeMode"] = json!("Block");
    s.post(&pvcs("m"), &wants_block).await;

    let v = s
        .wait_for_phase(&format!("{}/wants-rwx", pvcs("m")), "Bound")
        .await;
    assert_eq!(v["spec"]["volumeName"], "plain-rwx");
    let v = s
        .wait_for_phase(&format!("{}/wants-gold", pvcs("m")), "Bound")
        .await;
    assert_eq!(v["spec"]["volumeName"], "gold-rwo");
    let v = s
        .wait_for_phase(&format!("{}/wants-block", pvcs("m")), "Bound")
        .await;
    assert_eq!(v["spec"]["volumeName"], "plain-block");
}

#[tokio::test]
async fn selectors_choose_among_volumes() {
    let s = Server::start_with(&["--no-default-class"]).await;
    s.post(
        PV,
        &labelled_pv("ssd-small", "1Gi", json!({"disk": "ssd", "zone": "a"})),
    )
    .await;
    s.post(
        PV,
        &labelled_pv("ssd-big", "9Gi", json!({"disk": "ssd", "zone": "b"})),
    )
    .await;
    s.post(PV, &labelled_pv("hdd", "2Gi", json!({"disk": "hdd"})))
        .await;
    let mut by_label = pvc("ssd-in-b", "1Gi");
    by_label["spec"]["selector"] = json!({"matchLabels": {"disk": "ssd"},
        "matchExpressions": [{"key": "zone", "operator": "In", "values": ["b", "c"]}]});
    s.post(&pvcs("sel"), &by_label).await;
    let v = s
        .wait_for_phase(&format!("{}/ssd-in-b", pvcs("sel")), "Bound")
        .await;
    assert_eq!(
        v["spec"]["volumeName"], "ssd-big",
        "the selector wins over a smaller fit"
    );
    let mut nothing = pvc("no-match", "1Gi");
    nothing["spec"]["selector"] = json!({"matchLabels": {"disk": "nvme"}});
    s.post(&pvcs("sel"), &nothing).await;
    s.wait_for_event("sel", "no-match", "FailedBinding").await;
    let (_, v) = s.get(&format!("{}/no-match", pvcs("sel"))).await;
    assert_eq!(v["status"]["phase"], "Pending");
}

#[tokio::test]
async fn pre_binding_by_volume_name_and_by_claim_ref_is_honoured() {
    let s = Server::start_with(&["--no-default-class"]).await;
    s.post(PV, &host_path_pv("small", "1Gi")).await;
    s.post(PV, &host_path_pv("chosen", "8Gi")).await;
    // The claim names a volume that is not the smallest fit.
    let mut named = pvc("names-volume", "1Gi");
    named["spec"]["volumeName"] = json!("chosen");
    s.post(&pvcs("pre"), &named).await;
    let v = s
        .wait_for_phase(&format!("{}/names-volume", pvcs("pre")), "Bound")
        .await;
    assert_eq!(v["spec"]["volumeName"], "chosen");
    assert!(v["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"].is_null());
    // A volume reserved for a claim by claimRef (created before the claim exists).
    let mut reserved = host_path_pv("reserved", "4Gi");
    reserved["spec"]["claimRef"] = json!({"namespace": "pre", "name": "later"});
    s.post(PV, &reserved).await;
    s.wait_for_phase(&format!("{PV}/reserved"), "Available")
        .await;
    s.post(&pvcs("pre"), &pvc("later", "1Gi")).await;
    let v = s
        .wait_for_phase(&format!("{}/later", pvcs("pre")), "Bound")
        .await;
    assert_eq!(
        v["spec"]["volumeName"], "reserved",
        "claimRef wins over the smaller 'small'"
    );
    // Another claim cannot take a reserved volume.
    let (_, small) = s.get(&format!("{PV}/small")).await;
    assert_eq!(small["status"]["phase"], "Available");
    // A claim naming a volume that does not fit gets VolumeMismatch.
    let mut too_big = pvc("too-big", "50Gi");
    too_big["spec"]["volumeName"] = json!("small");
    s.post(&pvcs("pre"), &too_big).await;
    let msg = s.wait_for_event("pre", "too-big", "VolumeMismatch").await;
    assert!(msg.contains("small"), "{msg}");
}

#[tokio::test]
async fn a_waiting_claim_binds_as_soon_as_a_volume_appears() {
    let s = Server::start_with(&["--no-default-class"]).await;
    s.post(&pvcs("w"), &pvc("early", "2Gi")).await;
    let msg = s.wait_for_event("w", "early", "FailedBinding").await;
    assert!(msg.contains("no persistent volumes available"), "{msg}");
    let started = std::time::Instant::now();
    s.post(PV, &host_path_pv("arrives", "2Gi")).await;
    s.wait_for_phase(&format!("{}/early", pvcs("w")), "Bound")
        .await;
    // Woken by the volume's arrival, not a periodic resync (60 s).
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn released_volumes_follow_their_reclaim_policy_and_can_be_made_available_again() {
    let s = Server::start_with(&["--no-default-class"]).await;
    s.post(PV, &host_path_pv("kept", "1Gi")).await;
    s.post(&pvcs("rel"), &pvc("c", "1Gi")).await;
    s.wait_for_phase(&format!("{}/c", pvcs("rel")), "Bound")
        .await;
    s.delete(&format!("{}/c", pvcs("rel"))).await;
    let v = s.wait_for_phase(&format!("{PV}/kept"), "Released").await;
    assert_eq!(
        v["spec"]["claimRef"]["name"], "c",
        "a Released volume remembers its claim"
    );
    // A new claim does not get a Released volume.
    s.post(&pvcs("rel"), &pvc("next", "1Gi")).await;
    s.wait_for_event("rel", "next", "FailedBinding").await;
    // The documented admin action: remove the claimRef.
    let (code, _) = s
        .patch(
            &format!("{PV}/kept"),
            "application/json-patch+json",
            &json!([{"op": "remove", "path": "/spec/claimRef"}]),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let v = s
        .wait_for_phase(&format!("{}/next", pvcs("rel")), "Bound")
        .await;
    assert_eq!(v["spec"]["volumeName"], "kept");
    s.wait_for_event("default", "kept", "VolumeMadeAvailable")
        .await;

    // A static volume with Delete and no provider that can delete it fails, visibly.
    let mut doomed = host_path_pv("doomed", "1Gi");
    doomed["spec"]["persistentVolumeReclaimPolicy"] = json!("Delete");
    s.post(PV, &doomed).await;
    s.post(&pvcs("rel"), &pvc("uses-doomed", "1Gi")).await;
    s.wait_for_phase(&format!("{}/uses-doomed", pvcs("rel")), "Bound")
        .await;
    s.delete(&format!("{}/uses-doomed", pvcs("rel"))).await;
    s.wait_for_phase(&format!("{PV}/doomed"), "Failed").await;
    s.wait_for_event("default", "doomed", "VolumeFailedDelete")
        .await;
}

#[tokio::test]
async fn a_bound_claim_whose_volume_disappears_is_lost() {
    let s = Server::start_with(&["--no-default-class"]).await;
    s.post(PV, &host_path_pv("fragile", "1Gi")).await;
    s.post(&pvcs("lost"), &pvc("c", "1Gi")).await;
    s.wait_for_phase(&format!("{}/c", pvcs("lost")), "Bound")
        .await;
    // Force the volume away (finalizers removed by hand, as an admin could).
    s.patch(
        &format!("{PV}/fragile"),
        "application/merge-patch+json",
        &json!({"metadata": {"finalizers": null}}),
    )
    .await;
    s.delete(&format!("{PV}/fragile")).await;
    s.wait_gone(&format!("{PV}/fragile")).await;
    s.wait_for_phase(&format!("{}/c", pvcs("lost")), "Lost")
        .await;
    s.wait_for_event("lost", "c", "ClaimLost").await;
}

#[tokio::test]
async fn claims_in_use_and_bound_volumes_are_protected_from_deletion() {
    let s = Server::start_with(&["--no-default-class"]).await;
    s.post(PV, &host_path_pv("pv", "1Gi")).await;
    s.post(&pvcs("prot"), &pvc("c", "1Gi")).await;
    s.wait_for_phase(&format!("{}/c", pvcs("prot")), "Bound")
        .await;
    s.post(&pods("prot"), &pod_using("app", "c", Some("n1")))
        .await;

    let (_, v) = s.delete(&format!("{PV}/pv")).await;
    assert!(v["metadata"]["deletionTimestamp"].is_string());
    let (_, v) = s.delete(&format!("{}/c", pvcs("prot"))).await;
    assert!(
        v["metadata"]["finalizers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "kubernetes.io/pvc-protection")
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (code, _) = s.get(&format!("{}/c", pvcs("prot"))).await;
    assert_eq!(code, StatusCode::OK, "a claim used by a running pod stays");
    let (code, _) = s.get(&format!("{PV}/pv")).await;
    assert_eq!(code, StatusCode::OK, "a bound volume stays");
    // The pod finishing frees the claim; the claim going frees the volume.
    s.patch(
        &format!("{}/app/status", pods("prot")),
        "application/merge-patch+json",
        &json!({"status": {"phase": "Succeeded"}}),
    )
    .await;
    s.wait_gone(&format!("{}/c", pvcs("prot"))).await;
    s.wait_gone(&format!("{PV}/pv")).await;
}
