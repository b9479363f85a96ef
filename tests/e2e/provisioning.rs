//! Dynamic provisioning through StorageClasses, with the local provider on real directories.

use std::collections::HashSet;
use std::path::PathBuf;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

/// A server whose local provider serves node `node-a` with `capacity`, under its data dir.
async fn local_server(capacity: &str) -> (Server, tempfile::TempDir) {
    let (dir, config) = config_file(&format!(
        "providers:\n  local:\n    node: node-a\n    capacity: {capacity}\n"
    ));
    let s = Server::start_with(&["--config", &config]).await;
    (s, dir)
}

fn volume_dir(s: &Server, pv: &Value) -> PathBuf {
    let path = pv["spec"]["csi"]["volumeAttributes"]["path"]
        .as_str()
        .expect("path attribute");
    assert!(
        PathBuf::from(path).starts_with(s.data_dir.join("volumes").canonicalize().unwrap()),
        "{path}"
    );
    PathBuf::from(path)
}

fn local_class(name: &str, extra: Value) -> Value {
    let mut sc = storage_class(name, "local.stowage.dev");
    if let Value::Object(m) = extra {
        for (k, v) in m {
            sc[k] = v;
        }
    }
    sc
}

#[tokio::test]
async fn a_claim_of_the_default_class_gets_a_directory_and_a_bound_volume() {
    let (s, _cfg) = local_server("10Gi").await;
    let (_, sc) = s.get(&format!("{SC}/local")).await;
    assert_eq!(
        sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"],
        "true"
    );
    let claim = json!({"metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}}});
    s.post(&pvcs("dyn"), &claim).await;
    let c = s
        .wait_for_phase(&format!("{}/data", pvcs("dyn")), "Bound")
        .await;
    assert_eq!(c["spec"]["storageClassName"], "local");
    let pv_name = c["spec"]["volumeName"].as_str().unwrap().to_string();
    assert_eq!(
        pv_name,
        format!("pvc-{}", c["metadata"]["uid"].as_str().unwrap())
    );
    let (_, pv) = s.get(&format!("{PV}/{pv_name}")).await;
    assert_eq!(pv["status"]["phase"], "Bound");
    assert_eq!(pv["spec"]["csi"]["driver"], "local.stowage.dev");
    assert_eq!(pv["spec"]["capacity"]["storage"], "2Gi");
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    assert_eq!(
        pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"],
        "local.stowage.dev"
    );
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0],
        json!({"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-a"]})
    );
    assert!(volume_dir(&s, &pv).is_dir());
    let msg = s
        .wait_for_event("dyn", "data", "ProvisioningSucceeded")
        .await;
    assert!(msg.contains(&pv_name));

    // Delete: the claim goes, then the volume object and its directory.
    s.delete(&format!("{}/data", pvcs("dyn"))).await;
    s.wait_gone(&format!("{PV}/{pv_name}")).await;
    assert!(!volume_dir(&s, &pv).exists());
}

#[tokio::test]
async fn retain_keeps_the_directory_and_archive_renames_it() {
    let (s, _cfg) = local_server("10Gi").await;
    s.post(SC, &local_class("keep", json!({"reclaimPolicy": "Retain"})))
        .await;
    s.post(
        SC,
        &local_class("archive", json!({"parameters": {"onDelete": "archive"}})),
    )
    .await;
    s.post(&pvcs("r"), &claim_in_class("kept", "1Gi", "keep"))
        .await;
    s.post(&pvcs("r"), &claim_in_class("archived", "1Gi", "archive"))
        .await;
    let kept = s
        .wait_for_phase(&format!("{}/kept", pvcs("r")), "Bound")
        .await;
    let archived = s
        .wait_for_phase(&format!("{}/archived", pvcs("r")), "Bound")
        .await;
    let (_, kept_pv) = s
        .get(&format!(
            "{PV}/{}",
            kept["spec"]["volumeName"].as_str().unwrap()
        ))
        .await;
    let (_, archived_pv) = s
        .get(&format!(
            "{PV}/{}",
            archived["spec"]["volumeName"].as_str().unwrap()
        ))
        .await;
    std::fs::write(volume_dir(&s, &kept_pv).join("file"), b"keep me").unwrap();
    std::fs::write(volume_dir(&s, &archived_pv).join("file"), b"archive me").unwrap();
    s.delete(&format!("{}/kept", pvcs("r"))).await;
    s.delete(&format!("{}/archived", pvcs("r"))).await;
    s.wait_for_phase(
        &format!("{PV}/{}", kept_pv["metadata"]["name"].as_str().unwrap()),
        "Released",
    )
    .await;
    assert_eq!(
        std::fs::read(volume_dir(&s, &kept_pv).join("file")).unwrap(),
        b"keep me"
    );
    s.wait_gone(&format!(
        "{PV}/{}",
        archived_pv["metadata"]["name"].as_str().unwrap()
    ))
    .await;
    let archive = volume_dir(&s, &archived_pv).parent().unwrap().join(format!(
        "archived-{}",
        archived_pv["metadata"]["name"].as_str().unwrap()
    ));
    assert_eq!(std::fs::read(archive.join("file")).unwrap(), b"archive me");
}

#[tokio::test]
async fn wait_for_first_consumer_provisions_on_the_pods_node() {
    let (s, _cfg) = local_server("10Gi").await;
    s.post(
        SC,
        &local_class("wffc", json!({"volumeBindingMode": "WaitForFirstConsumer"})),
    )
    .await;
    s.post(&pvcs("w"), &claim_in_class("later", "1Gi", "wffc"))
        .await;
    s.wait_for_event("w", "later", "WaitForFirstConsumer").await;
    let (_, c) = s.get(&format!("{}/later", pvcs("w"))).await;
    assert_eq!(c["status"]["phase"], "Pending");
    // A pod with no node yet changes nothing.
    s.post(&pods("w"), &pod_using("unscheduled", "later", None))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (_, c) = s.get(&format!("{}/later", pvcs("w"))).await;
    assert_eq!(c["status"]["phase"], "Pending");
    s.post(&pods("w"), &pod_using("scheduled", "later", Some("node-a")))
        .await;
    let c = s
        .wait_for_phase(&format!("{}/later", pvcs("w")), "Bound")
        .await;
    assert_eq!(
        c["metadata"]["annotations"]["volume.kubernetes.io/selected-node"],
        "node-a"
    );

    // A consumer on a node the local provider does not serve: a clear failure event.
    s.post(&pvcs("w"), &claim_in_class("elsewhere", "1Gi", "wffc"))
        .await;
    s.post(&pods("w"), &pod_using("far", "elsewhere", Some("node-z")))
        .await;
    let msg = s
        .wait_for_event("w", "elsewhere", "ProvisioningFailed")
        .await;
    assert!(msg.contains("node-a") && msg.contains("serves"), "{msg}");
}

#[tokio::test]
async fn over_commit_is_refused_with_an_event_until_space_frees_up() {
    let (s, _cfg) = local_server("10Gi").await;
    s.post(&pvcs("oc"), &claim_in_class("big", "8Gi", "local"))
        .await;
    s.wait_for_phase(&format!("{}/big", pvcs("oc")), "Bound")
        .await;
    s.post(&pvcs("oc"), &claim_in_class("more", "4Gi", "local"))
        .await;
    let msg = s.wait_for_event("oc", "more", "ProvisioningFailed").await;
    assert!(msg.contains("not enough space"), "{msg}");
    let (_, c) = s.get(&format!("{}/more", pvcs("oc"))).await;
    assert_eq!(c["status"]["phase"], "Pending");
    s.delete(&format!("{}/big", pvcs("oc"))).await;
    s.wait_for_phase(&format!("{}/more", pvcs("oc")), "Bound")
        .await;
}

#[tokio::test]
async fn unknown_provisioners_and_bad_parameters_are_explained() {
    let (s, _cfg) = local_server("10Gi").await;
    s.post(SC, &storage_class("elsewhere", "example.com/not-here"))
        .await;
    s.post(&pvcs("u"), &claim_in_class("orphan", "1Gi", "elsewhere"))
        .await;
    let msg = s
        .wait_for_event("u", "orphan", "ExternalProvisioning")
        .await;
    assert!(msg.contains("example.com/not-here"), "{msg}");
    let (_, c) = s.get(&format!("{}/orphan", pvcs("u"))).await;
    assert_eq!(c["status"]["phase"], "Pending");
    assert_eq!(
        c["metadata"]["annotations"]["volume.kubernetes.io/storage-provisioner"],
        "example.com/not-here"
    );

    // The class is made, as in Kubernetes, but its author is warned at once.
    let (code, warnings) = s
        .post_warned(
            SC,
            &local_class("typo", json!({"parameters": {"onDelet": "archive"}})),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED);
    assert!(
        warnings.len() == 1
            && warnings[0].starts_with("299 - ")
            && warnings[0].contains("local.stowage.dev will refuse")
            && warnings[0].contains("unknown parameter \\\"onDelet\\\""),
        "{warnings:?}"
    );
    let (_, warnings) = s
        .post_warned(
            SC,
            &local_class("fine", json!({"parameters": {"onDelete": "archive"}})),
        )
        .await;
    assert!(warnings.is_empty(), "{warnings:?}");
    s.post(&pvcs("u"), &claim_in_class("typo", "1Gi", "typo"))
        .await;
    let msg = s.wait_for_event("u", "typo", "ProvisioningFailed").await;
    assert!(msg.contains("onDelet"), "{msg}");

    s.post(
        &pvcs("u"),
        &claim_in_class("no-class", "1Gi", "missing-class"),
    )
    .await;
    let msg = s
        .wait_for_event("u", "no-class", "ProvisioningFailed")
        .await;
    assert!(
        msg.contains("missing-class") && msg.contains("not found"),
        "{msg}"
    );
}

#[tokio::test]
async fn class_parameters_reach_the_provider() {
    let (s, _cfg) = local_server("10Gi").await;
    s.post(
        SC,
        &local_class(
            "private",
            json!({"parameters": {"mountPermissions": "0700"}, "mountOptions": ["noatime"]}),
        ),
    )
    .await;
    s.post(&pvcs("p"), &claim_in_class("c", "1Gi", "private"))
        .await;
    let c = s.wait_for_phase(&format!("{}/c", pvcs("p")), "Bound").await;
    let (_, pv) = s
        .get(&format!(
            "{PV}/{}",
            c["spec"]["volumeName"].as_str().unwrap()
        ))
        .await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(volume_dir(&s, &pv))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o700);
    assert_eq!(pv["spec"]["mountOptions"], json!(["noatime"]));
}

#[tokio::test]
async fn orphaned_directories_are_cleaned_up() {
    let (mut s, _cfg) = local_server("10Gi").await;
    s.post(&pvcs("o"), &claim_in_class("real", "1Gi", "local"))
        .await;
    s.wait_for_phase(&format!("{}/real", pvcs("o")), "Bound")
        .await;
    s.kill();
    // As if a create had finished in the provider just before a crash, for a claim that was
    // then deleted: a directory and a ledger record that no object refers to.
    let volumes = s.data_dir.join("volumes");
    let orphan = "pvc-00000000-0000-4000-8000-000000000000";
    std::fs::create_dir(volumes.join(orphan)).unwrap();
    use std::io::Write as _;
    let mut ledger = std::fs::OpenOptions::new()
        .append(true)
        .open(volumes.join(".stowage/ledger.jsonl"))
        .unwrap();
    writeln!(
        ledger,
        r#"{{"op":"put","record":{{"name":"{orphan}","capacity_bytes":1073741824,"parameters":{{}}}}}}"#
    )
    .unwrap();
    s.restart().await;
    s.eventually(
        std::time::Duration::from_secs(20),
        "the orphan to be deleted",
        || async { (!volumes.join(orphan).exists()).then_some(()) },
    )
    .await;
    let (_, c) = s.get(&format!("{}/real", pvcs("o"))).await;
    let real = volumes
        .canonicalize()
        .unwrap()
        .join(c["spec"]["volumeName"].as_str().unwrap());
    assert!(real.is_dir(), "volumes with objects are kept");
}

#[tokio::test]
async fn a_crash_in_the_middle_of_a_thousand_provisions_loses_nothing_and_leaks_nothing() {
    let (mut s, _cfg) = local_server("100Ti").await;
    let total = 1000;
    let mut tasks = Vec::new();
    for i in 0..total {
        let client = s.client.clone();
        let url = s.url(&pvcs("crash"));
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .json(&claim_in_class(&format!("c{i}"), "1Gi", "local"))
                .send()
                .await
                .map(|r| r.status())
        }));
    }
    // Kill -9 once some, not all, claims are bound.
    s.eventually(
        std::time::Duration::from_secs(60),
        "some claims to bind",
        || async {
            let (_, list) = s
                .get(&format!(
                    "{}?fieldSelector=status.phase%3DBound",
                    pvcs("crash")
                ))
                .await;
            (list["items"].as_array().map_or(0, Vec::len) >= 100).then_some(())
        },
    )
    .await;
    s.kill();
    let mut acked = HashSet::new();
    for (i, t) in tasks.into_iter().enumerate() {
        if let Ok(StatusCode::CREATED) = t.await.unwrap() {
            acked.insert(format!("c{i}"));
        }
    }
    s.restart().await;
    // Claims whose create was refused by the crash are created now.
    for i in 0..total {
        let name = format!("c{i}");
        if !acked.contains(&name) {
            let (code, _) = s
                .post(&pvcs("crash"), &claim_in_class(&name, "1Gi", "local"))
                .await;
            assert!(
                code == StatusCode::CREATED || code == StatusCode::CONFLICT,
                "{code}"
            );
        }
    }
    let claims = s
        .eventually(
            std::time::Duration::from_secs(120),
            "every claim to bind",
            || async {
                let (_, list) = s.get(&pvcs("crash")).await;
                let items = list["items"].as_array().cloned().unwrap_or_default();
                (items.len() == total && items.iter().all(|c| c["status"]["phase"] == "Bound"))
                    .then_some(items)
            },
        )
        .await;
    let (_, pvs) = s.get(PV).await;
    let pvs = pvs["items"].as_array().unwrap().clone();
    assert_eq!(pvs.len(), total, "one volume per claim");
    // No double binding: claim → volume and volume → claim agree, one to one.
    let mut used = HashSet::new();
    for c in &claims {
        let v = c["spec"]["volumeName"].as_str().unwrap();
        assert!(used.insert(v.to_string()), "volume {v} bound twice");
        let pv = pvs
            .iter()
            .find(|p| p["metadata"]["name"] == v)
            .expect("volume exists");
        assert_eq!(pv["spec"]["claimRef"]["uid"], c["metadata"]["uid"]);
    }
    // No orphan directories: exactly one per volume.
    let dirs: HashSet<String> = std::fs::read_dir(s.data_dir.join("volumes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pvc-"))
        .collect();
    assert_eq!(dirs, used, "directories and volumes match one to one");
}
