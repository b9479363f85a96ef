//! The NFS provider end to end: a real `stowage serve` provisioning on a real NFS server
//! (nfs-ganesha on loopback), checked in the export's backing directory.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use stowage_provider_nfs::testing::Ganesha;

use crate::support::*;

macro_rules! ganesha {
    ($dir:expr) => {
        match Ganesha::start_for_test($dir) {
            Some(g) => g,
            None => return,
        }
    };
}

fn nfs_class(name: &str, g: &Ganesha, extra: Value) -> Value {
    let mut sc = storage_class(name, "nfs.stowage.dev");
    sc["parameters"] = json!({"server": g.server(), "share": g.share()});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            match k.as_str() {
                "allowVolumeExpansion" | "reclaimPolicy" | "mountOptions" => sc[k] = v,
                _ => sc["parameters"][k] = v,
            }
        }
    }
    sc
}

async fn create_class(s: &Server, sc: &Value) {
    let (code, v) = s.post(SC, sc).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
}

/// Creates a claim and waits until it is bound; returns its volume.
async fn bound(s: &Server, ns: &str, claim: Value) -> Value {
    let name = claim["metadata"]["name"].as_str().unwrap().to_string();
    let (code, v) = s.post(&pvcs(ns), &claim).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let c = s
        .wait_for_phase(&format!("{}/{name}", pvcs(ns)), "Bound")
        .await;
    let (_, pv) = s
        .get(&format!(
            "{PV}/{}",
            c["spec"]["volumeName"].as_str().unwrap()
        ))
        .await;
    pv
}

#[tokio::test]
async fn nfs_claims_become_directories_and_follow_on_delete() {
    let dir = tempfile::tempdir().unwrap();
    let g = ganesha!(dir.path());
    let s = Server::start().await;
    create_class(
        &s,
        &nfs_class(
            "nfs",
            &g,
            json!({"subDir": "${pvc.metadata.namespace}/${pvc.metadata.name}", "mountOptions": ["hard"]}),
        ),
    )
    .await;
    create_class(
        &s,
        &nfs_class("nfs-keep", &g, json!({"onDelete": "retain"})),
    )
    .await;
    create_class(
        &s,
        &nfs_class("nfs-archive", &g, json!({"onDelete": "archive"})),
    )
    .await;

    let mut claim = claim_in_class("web", "1Gi", "nfs");
    claim["spec"]["accessModes"] = json!(["ReadWriteMany"]);
    let pv = bound(&s, "shop", claim).await;
    assert_eq!(pv["spec"]["csi"]["driver"], "nfs.stowage.dev");
    assert_eq!(pv["spec"]["csi"]["volumeAttributes"]["subDir"], "shop/web");
    assert_eq!(pv["spec"]["accessModes"], json!(["ReadWriteMany"]));
    let volume_dir = g.export_dir().join("shop/web");
    assert!(volume_dir.is_dir());

    // A pod on any node gets the mount information; no attach happens on the server.
    s.post(
        NODES,
        &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}),
    )
    .await;
    s.post(&pods("shop"), &pod_using("web-0", "web", Some("n1")))
        .await;
    let va = s
        .eventually(Duration::from_secs(20), "the attachment", || async {
            let (_, list) = s.get(VA).await;
            list["items"]
                .as_array()
                .and_then(|l| l.iter().find(|v| v["status"]["attached"] == true).cloned())
        })
        .await;
    let meta = &va["status"]["attachmentMetadata"];
    assert_eq!(meta["type"], "nfs");
    assert_eq!(meta["source"], format!("127.0.0.1:{}/shop/web", g.share()));
    assert_eq!(
        meta["mountOptions"],
        format!("nfsvers=4.1,port={},hard", g.port())
    );
    std::fs::write(volume_dir.join("index.html"), "hello").unwrap();

    // Deleting the claim (reclaim Delete, onDelete delete) removes the directory.
    s.delete(&format!("{}/web-0", pods("shop"))).await;
    s.delete(&format!("{}/web", pvcs("shop"))).await;
    s.wait_gone(&format!(
        "{PV}/{}",
        pv["metadata"]["name"].as_str().unwrap()
    ))
    .await;
    assert!(!volume_dir.exists());
    assert!(g.export_dir().join("shop").is_dir(), "parents stay");

    let kept = bound(&s, "shop", claim_in_class("db", "1Gi", "nfs-keep")).await;
    let archived = bound(&s, "shop", claim_in_class("logs", "1Gi", "nfs-archive")).await;
    let kept_dir = kept["metadata"]["name"].as_str().unwrap().to_string();
    let archived_dir = archived["metadata"]["name"].as_str().unwrap().to_string();
    for (claim, volume) in [("db", &kept_dir), ("logs", &archived_dir)] {
        std::fs::write(g.export_dir().join(volume).join("data"), claim).unwrap();
        s.delete(&format!("{}/{claim}", pvcs("shop"))).await;
        s.wait_gone(&format!("{PV}/{volume}")).await;
    }
    assert!(
        g.export_dir().join(&kept_dir).join("data").exists(),
        "retained"
    );
    assert!(!g.export_dir().join(&archived_dir).exists());
    assert_eq!(
        std::fs::read_to_string(
            g.export_dir()
                .join(format!("archived-{archived_dir}"))
                .join("data")
        )
        .unwrap(),
        "logs",
        "archived"
    );

    // The NFS requests are counted for the operator.
    let mkdirs = s
        .counter(
            r#"stowage_provider_backend_requests_total{provider="nfs.stowage.dev",request="MKDIR",outcome="ok"}"#,
        )
        .await;
    // At least one per volume made: web, db and logs.
    assert!(mkdirs >= 3, "{mkdirs} MKDIRs counted");
}

#[tokio::test]
async fn nfs_paths_that_would_escape_the_share_fail_the_claim_with_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let g = ganesha!(dir.path());
    let s = Server::start().await;
    create_class(
        &s,
        &nfs_class(
            "by-annotation",
            &g,
            json!({"subDir": "${pvc.metadata.annotations['nfs.stowage.dev/path']}"}),
        ),
    )
    .await;
    let mut claim = claim_in_class("sneaky", "1Gi", "by-annotation");
    claim["metadata"]["annotations"] = json!({"nfs.stowage.dev/path": "../../etc"});
    s.post(&pvcs("evil"), &claim).await;
    let message = s
        .wait_for_event("evil", "sneaky", "ProvisioningFailed")
        .await;
    assert!(
        message.contains("would not be a plain path inside the share"),
        "{message}"
    );
    let (_, c) = s.get(&format!("{}/sneaky", pvcs("evil"))).await;
    assert_eq!(c["status"]["phase"], "Pending");
    assert!(!dir.path().join("etc").exists());

    // A class whose own template escapes is refused for every claim.
    create_class(
        &s,
        &nfs_class("escaping", &g, json!({"subDir": "../${pv.metadata.name}"})),
    )
    .await;
    s.post(&pvcs("evil"), &claim_in_class("any", "1Gi", "escaping"))
        .await;
    let message = s.wait_for_event("evil", "any", "ProvisioningFailed").await;
    assert!(message.contains("must stay inside the share"), "{message}");

    // A proper annotation is honoured.
    let mut fine = claim_in_class("fine", "1Gi", "by-annotation");
    fine["metadata"]["annotations"] = json!({"nfs.stowage.dev/path": "projects/fine"});
    bound(&s, "evil", fine).await;
    assert!(g.export_dir().join("projects/fine").is_dir());
}

#[tokio::test]
async fn an_nfs_outage_delays_a_claim_with_an_event_and_it_binds_when_the_server_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = ganesha!(dir.path());
    let s = Server::start().await;
    create_class(&s, &nfs_class("nfs", &g, json!({}))).await;
    bound(&s, "o", claim_in_class("before", "1Gi", "nfs")).await;

    g.kill();
    s.post(&pvcs("o"), &claim_in_class("during", "1Gi", "nfs"))
        .await;
    let message = s.wait_for_event("o", "during", "ProvisioningFailed").await;
    assert!(message.contains(&g.server()), "{message}");
    g.start_again().unwrap();
    let c = s
        .wait_for_phase(&format!("{}/during", pvcs("o")), "Bound")
        .await;
    let volume = c["spec"]["volumeName"].as_str().unwrap();
    assert!(g.export_dir().join(volume).is_dir());
}

#[tokio::test]
async fn nfs_capacity_is_enforced_per_share_and_claims_grow() {
    let dir = tempfile::tempdir().unwrap();
    let g = ganesha!(dir.path());
    let s = Server::start().await;
    create_class(
        &s,
        &nfs_class(
            "small",
            &g,
            json!({"capacity": "3Gi", "allowVolumeExpansion": true}),
        ),
    )
    .await;
    let pv = bound(&s, "cap", claim_in_class("a", "1Gi", "small")).await;
    s.post(&pvcs("cap"), &claim_in_class("too-big", "3Gi", "small"))
        .await;
    let message = s
        .wait_for_event("cap", "too-big", "ProvisioningFailed")
        .await;
    assert!(message.contains("bytes free"), "{message}");

    let (code, v) = s
        .patch(
            &format!("{}/a", pvcs("cap")),
            "application/merge-patch+json",
            &json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    let pv_path = format!("{PV}/{}", pv["metadata"]["name"].as_str().unwrap());
    s.wait_for(&pv_path, "the volume to grow", |v| {
        v["spec"]["capacity"]["storage"] == "2Gi"
    })
    .await;
    s.wait_for(&format!("{}/a", pvcs("cap")), "the claim to grow", |c| {
        c["status"]["capacity"]["storage"] == "2Gi"
    })
    .await;
    // 2 GiB of 3 are used now: a 2 GiB claim does not fit either.
    s.delete(&format!("{}/too-big", pvcs("cap"))).await;
    s.post(&pvcs("cap"), &claim_in_class("b", "2Gi", "small"))
        .await;
    let message = s.wait_for_event("cap", "b", "ProvisioningFailed").await;
    assert!(
        message.contains("1073741824 of 3221225472 bytes free"),
        "{message}"
    );
    // The same room, published for schedulers: one CSIStorageCapacity for the class's share,
    // reachable from every node.
    let capacity = s
        .eventually(Duration::from_secs(10), "the class's capacity", || async {
            let (_, list) = s
                .get("/apis/storage.k8s.io/v1/namespaces/stowage-system/csistoragecapacities")
                .await;
            list["items"]
                .as_array()?
                .iter()
                .find(|c| c["storageClassName"] == "small" && c["capacity"] == "1Gi")
                .cloned()
        })
        .await;
    assert_eq!(capacity["nodeTopology"], json!({}), "{capacity}");
}

#[tokio::test]
async fn a_tenant_cannot_take_a_directory_around_another_tenants_volume() {
    let dir = tempfile::tempdir().unwrap();
    let g = ganesha!(dir.path());
    let mut s = Server::start_with(&["--rate-limit", "0"]).await;
    // Two classes on one share: one directory per claim, and one a claim annotation names.
    create_class(
        &s,
        &nfs_class(
            "per-claim",
            &g,
            json!({"subDir": "${pvc.metadata.namespace}/${pvc.metadata.name}"}),
        ),
    )
    .await;
    create_class(
        &s,
        &nfs_class(
            "by-annotation",
            &g,
            json!({"subDir": "${pvc.metadata.annotations['example.com/dir']}"}),
        ),
    )
    .await;
    let victim = token(&s, "namespace:team-a", None).await;
    let attacker = token(&s, "namespace:team-b", None).await;
    let (a, b) = (As::new(&s, &victim), As::new(&s, &attacker));
    assert_eq!(
        a.create(&pvcs("team-a"), &claim_in_class("data", "1Gi", "per-claim"))
            .await,
        StatusCode::CREATED
    );
    s.wait_for_phase(&format!("{}/data", pvcs("team-a")), "Bound")
        .await;
    let data = g.export_dir().join("team-a/data");
    std::fs::write(data.join("secret"), "team-a's").unwrap();

    // The parent of team-a's directory, and a directory inside it.
    for (name, path) in [("parent", "team-a"), ("inside", "team-a/data/x")] {
        let mut claim = claim_in_class(name, "1Gi", "by-annotation");
        claim["metadata"]["annotations"] = json!({"example.com/dir": path});
        assert_eq!(b.create(&pvcs("team-b"), &claim).await, StatusCode::CREATED);
        let message = s.wait_for_event("team-b", name, "ProvisioningFailed").await;
        assert!(message.contains("overlap"), "{message}");
        let (_, c) = b
            .send(
                reqwest::Method::GET,
                &format!("{}/{name}", pvcs("team-b")),
                None,
            )
            .await;
        assert_eq!(c["status"]["phase"], "Pending", "{c}");
        // Deleting the refused claim touches nothing of team-a's.
        assert_eq!(
            b.delete(&format!("{}/{name}", pvcs("team-b"))).await,
            StatusCode::OK
        );
        s.wait_gone(&format!("{}/{name}", pvcs("team-b"))).await;
    }
    assert!(!data.join("x").exists());
    assert_eq!(
        std::fs::read_to_string(data.join("secret")).unwrap(),
        "team-a's"
    );
    s.assert_alive_within(400 << 20).await;
}

#[tokio::test]
async fn nfs_snapshots_restores_and_clones_carry_the_files_on_the_share() {
    let dir = tempfile::tempdir().unwrap();
    let g = ganesha!(dir.path());
    let s = Server::start().await;
    create_class(&s, &nfs_class("nfs", &g, json!({}))).await;
    let snapshots = "/apis/snapshot.storage.k8s.io/v1/namespaces/docs/volumesnapshots";
    let pv = bound(&s, "docs", claim_in_class("wiki", "1Gi", "nfs")).await;
    let volume = pv["metadata"]["name"].as_str().unwrap();
    let origin = g.export_dir().join(volume);
    std::fs::create_dir_all(origin.join("pages")).unwrap();
    std::fs::write(origin.join("pages/home.md"), "# v1").unwrap();
    std::fs::write(origin.join("big.bin"), vec![7u8; 3 << 20]).unwrap();

    let (code, v) = s
        .post(
            snapshots,
            &json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                    "metadata": {"name": "v1"},
                    "spec": {"source": {"persistentVolumeClaimName": "wiki"}}}),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let ready = s
        .wait_for(&format!("{snapshots}/v1"), "snapshot ready", |v| {
            v["status"]["readyToUse"] == true
        })
        .await;
    let (_, content) = s
        .get(&format!(
            "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents/{}",
            ready["status"]["boundVolumeSnapshotContentName"]
                .as_str()
                .unwrap()
        ))
        .await;
    let handle = content["status"]["snapshotHandle"].as_str().unwrap();
    assert!(
        handle.contains(&g.share()),
        "the id names the share: {handle}"
    );
    std::fs::write(origin.join("pages/home.md"), "# v2").unwrap();

    let mut restored = claim_in_class("wiki-v1", "2Gi", "nfs");
    restored["spec"]["dataSource"] =
        json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "v1"});
    let restored = bound(&s, "docs", restored).await;
    let mut clone = claim_in_class("wiki-copy", "1Gi", "nfs");
    clone["spec"]["dataSource"] = json!({"kind": "PersistentVolumeClaim", "name": "wiki"});
    let clone = bound(&s, "docs", clone).await;
    let read = |pv: &Value, file: &str| {
        std::fs::read(
            g.export_dir()
                .join(pv["metadata"]["name"].as_str().unwrap())
                .join(file),
        )
        .unwrap()
    };
    assert_eq!(read(&restored, "pages/home.md"), b"# v1");
    assert_eq!(read(&clone, "pages/home.md"), b"# v2");
    assert_eq!(read(&restored, "big.bin"), vec![7u8; 3 << 20]);
    assert_eq!(restored["spec"]["capacity"]["storage"], "2Gi");

    // Deleting the snapshot deletes its copy on the share.
    s.delete(&format!("{snapshots}/v1")).await;
    s.wait_gone(&format!("{snapshots}/v1")).await;
    let left: Vec<_> = std::fs::read_dir(g.export_dir().join(".stowage/snapshots"))
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}
