//! Replicas on one PostgreSQL database, end to end: real `stowage serve` processes, NFS volumes
//! on nfs-ganesha, and a leader killed with SIGKILL in the middle of provisioning.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use stowage_provider_nfs::testing::Ganesha;

use crate::support::*;

/// Which replica leads, by asking each one's /readyz: (index, identity).
async fn leader(s: &Server) -> Option<(usize, String)> {
    for (i, base) in s.bases().iter().enumerate() {
        let Ok(resp) = s.client.get(format!("{base}/readyz")).send().await else {
            continue;
        };
        let text = resp.text().await.unwrap_or_default();
        if text.contains("(leader)") {
            let id = text
                .lines()
                .find_map(|l| l.strip_prefix("replica: "))
                .unwrap_or_default()
                .to_string();
            return Some((i, id));
        }
    }
    None
}

#[tokio::test]
async fn losing_the_leader_mid_provisioning_loses_nothing_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(g) = Ganesha::start_for_test(dir.path()) else {
        return;
    };
    let Some(mut s) = Server::start_replicas(3, &[]).await else {
        return;
    };
    // Exactly one replica leads, and every replica says which.
    let (first, first_id) = s
        .eventually(Duration::from_secs(10), "a leader", || async {
            leader(&s).await
        })
        .await;
    let mut class = storage_class("nfs", "nfs.stowage.dev");
    class["parameters"] = json!({"server": g.server(), "share": g.share()});
    let (code, v) = s.post(SC, &class).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");

    // Claims go to every replica in turn; after a third of them, the leader dies.
    const CLAIMS: usize = 60;
    let mut killed_at = None;
    for i in 0..CLAIMS {
        if i == CLAIMS / 3 {
            s.kill_replica(first);
            killed_at = Some(Instant::now());
        }
        let (code, v) = s
            .post(
                &pvcs("fail"),
                &claim_in_class(&format!("c{i}"), "1Mi", "nfs"),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "claim {i}: {v}");
    }
    let killed_at = killed_at.unwrap();
    let (_, next_id) = s
        .eventually(Duration::from_secs(10), "a new leader", || async {
            leader(&s).await.filter(|(_, id)| *id != first_id)
        })
        .await;
    let failover = killed_at.elapsed();
    assert_ne!(next_id, first_id);

    // Every claim binds, to its own volume, with one directory each on the share.
    let mut volumes = BTreeMap::new();
    for i in 0..CLAIMS {
        let c = s
            .wait_for_phase(&format!("{}/c{i}", pvcs("fail")), "Bound")
            .await;
        let v = c["spec"]["volumeName"].as_str().unwrap().to_string();
        assert!(volumes.insert(v, i).is_none(), "two claims on one volume");
    }
    let (_, pvs) = s.get(PV).await;
    let pv_names: BTreeSet<String> = pvs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(pv_names.len(), CLAIMS, "one volume object per claim");
    assert_eq!(
        pv_names,
        volumes.keys().cloned().collect::<BTreeSet<_>>(),
        "no stray volume objects"
    );
    let records: BTreeSet<String> = std::fs::read_dir(g.export_dir().join(".stowage/volumes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        records, pv_names,
        "one backing directory per volume, no leaks"
    );
    eprintln!("failover: the new leader was known {failover:?} after the kill");
    assert!(
        failover < Duration::from_secs(15),
        "the next leader took {failover:?}"
    );
}

#[tokio::test]
async fn every_replica_serves_the_same_objects_tokens_and_watches() {
    let Some(s) = Server::start_replicas(3, &[]).await else {
        return;
    };
    let bases = s.bases();
    assert_eq!(bases.len(), 3);
    // A token made on one replica works on the others at once.
    let t = token(&s, "viewer", None).await;
    let viewer = client_for(&t, ca_of(&s.data_dir).as_deref());
    for base in &bases {
        let resp = viewer.get(format!("{base}{PV}")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{base}");
    }
    // A write on one replica is read at once on every other (reads are consistent).
    for (i, base) in bases.iter().enumerate() {
        let name = format!("from-{i}");
        let resp = s
            .client
            .post(format!("{base}{}", pvcs("r")))
            .json(&pvc(&name, "1Gi"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        for other in &bases {
            let resp = s
                .client
                .get(format!("{other}{}/{name}", pvcs("r")))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{name} on {other}");
        }
    }
    // A watch resumes on another replica from a resourceVersion the first one served.
    let resp = s
        .client
        .get(format!("{}{}", bases[0], pvcs("r")))
        .send()
        .await
        .unwrap();
    let list: Value = resp.json().await.unwrap();
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    s.client
        .post(format!("{}{}", bases[1], pvcs("r")))
        .json(&pvc("later", "1Gi"))
        .send()
        .await
        .unwrap();
    let resp = s
        .client
        .get(format!(
            "{}{}?watch=1&resourceVersion={rv}&timeoutSeconds=2",
            bases[2],
            pvcs("r")
        ))
        .send()
        .await
        .unwrap();
    let body = resp.text().await.unwrap();
    let first: Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert_eq!(first["type"], "ADDED");
    assert_eq!(first["object"]["metadata"]["name"], "later");
    // Revoked on one replica, refused on the others.
    let id = t.split('_').nth(1).unwrap();
    let resp = s
        .client
        .delete(format!("{}{TOKENS}/{id}", bases[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    for base in &bases[1..] {
        let refused = s
            .eventually(
                Duration::from_secs(5),
                "revocation reaches every replica",
                || {
                    let viewer = viewer.clone();
                    let url = format!("{base}{PV}");
                    async move {
                        let code = viewer.get(url).send().await.ok()?.status();
                        (code == StatusCode::UNAUTHORIZED).then_some(code)
                    }
                },
            )
            .await;
        assert_eq!(refused, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn the_local_provider_is_refused_with_replicas() {
    let (_cfg_dir, cfg) = config_file("providers:\n  local: {}\n");
    if std::env::var("STOWAGE_TEST_POSTGRES").is_err() {
        stowage_provider::testing::missing("postgres", "set STOWAGE_TEST_POSTGRES");
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stowage"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            &cfg,
            "--store",
            &std::env::var("STOWAGE_TEST_POSTGRES").unwrap(),
        ])
        .arg("--data-dir")
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("providers.local") && err.contains("node agent"),
        "{err}"
    );
}

#[tokio::test]
async fn losing_a_follower_under_load_loses_no_acknowledged_write() {
    let Some(mut s) = Server::start_replicas(3, &[]).await else {
        return;
    };
    let (leading, leader_id) = s
        .eventually(Duration::from_secs(10), "a leader", || async {
            leader(&s).await
        })
        .await;
    let follower = (0..3).find(|i| *i != leading).unwrap();
    // Writes go to every replica in turn; a follower dies in the middle. Every write the
    // survivors acknowledged is kept, and leadership does not move.
    let mut acknowledged = Vec::new();
    for i in 0..90 {
        if i == 30 {
            s.kill_replica(follower);
        }
        let (code, v) = s.post(&pvcs("f"), &pvc(&format!("c{i}"), "1Gi")).await;
        assert_eq!(code, StatusCode::CREATED, "claim {i}: {v}");
        acknowledged.push(format!("c{i}"));
    }
    let (_, list) = s.get(&pvcs("f")).await;
    let stored: BTreeSet<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(stored, acknowledged.into_iter().collect::<BTreeSet<_>>());
    let (_, still) = leader(&s).await.expect("a leader");
    assert_eq!(still, leader_id, "losing a follower moved the leadership");
}
