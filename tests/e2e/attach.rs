//! Attach/detach: volumes follow their pods to nodes, safely.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

/// A server with the in-memory provider (network-disk-like volumes that can move between
/// nodes) behind the class `mem`, and the local provider on node-a. Replicas refuse node-local
/// storage, so there the local provider is left out, and the three tests of local volumes are
/// run on one SQLite server only (`scripts/test.sh` lists them).
async fn server(extra: &[&str]) -> (Server, tempfile::TempDir) {
    let local = if on_sqlite() {
        "  local:\n    node: node-a\n    capacity: 100Gi\n"
    } else {
        ""
    };
    let (dir, config) = config_file(&format!(
        "providers:\n{local}  memory:\n    enabled: true\n    attachDelay: 20ms\n"
    ));
    let mut args = vec!["--config", config.as_str()];
    args.extend_from_slice(extra);
    let s = Server::start_with(&args).await;
    s.post(SC, &storage_class("mem", "memory.stowage.dev"))
        .await;
    (s, dir)
}

async fn attachments(s: &Server) -> Vec<Value> {
    let (_, list) = s.get(VA).await;
    list["items"].as_array().cloned().unwrap_or_default()
}

async fn attachment_on(s: &Server, volume: &str, node: &str) -> Option<Value> {
    attachments(s).await.into_iter().find(|v| {
        v["spec"]["source"]["persistentVolumeName"] == volume && v["spec"]["nodeName"] == node
    })
}

async fn wait_attached(s: &Server, volume: &str, node: &str) -> Value {
    s.eventually(
        Duration::from_secs(20),
        &format!("{volume} attached to {node}"),
        || async {
            attachment_on(s, volume, node)
                .await
                .filter(|v| v["status"]["attached"] == true)
        },
    )
    .await
}

async fn wait_detached(s: &Server, volume: &str, node: &str) {
    s.eventually(
        Duration::from_secs(20),
        &format!("{volume} detached from {node}"),
        || async { attachment_on(s, volume, node).await.is_none().then_some(()) },
    )
    .await
}

/// Creates a claim in `class` and waits until it is bound; returns its volume's name.
async fn bound_claim(s: &Server, ns: &str, name: &str, class: &str) -> String {
    s.post(&pvcs(ns), &claim_in_class(name, "1Gi", class)).await;
    let c = s
        .wait_for_phase(&format!("{}/{name}", pvcs(ns)), "Bound")
        .await;
    c["spec"]["volumeName"].as_str().unwrap().to_string()
}

async fn node(s: &Server, name: &str, extra: Value) {
    let mut n = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            n[k] = v;
        }
    }
    let (code, v) = s.post(NODES, &n).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
}

fn unique(driver: &str, handle: &str) -> String {
    format!("kubernetes.io/csi/{driver}^{handle}")
}

async fn set_in_use(s: &Server, node: &str, volumes: Vec<String>) {
    let (code, v) = s
        .patch(
            &format!("{NODES}/{node}/status"),
            "application/merge-patch+json",
            &json!({"status": {"volumesInUse": volumes}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn attachments_follow_pods_and_tell_how_to_mount_local_volumes() {
    let (s, _cfg) = server(&[]).await;
    node(&s, "node-a", json!({})).await;
    let volume = bound_claim(&s, "app", "data", "local").await;
    s.post(&pods("app"), &pod_using("web", "data", Some("node-a")))
        .await;
    let va = wait_attached(&s, &volume, "node-a").await;
    assert_eq!(va["spec"]["attacher"], "local.stowage.dev");
    assert!(va["metadata"]["name"].as_str().unwrap().starts_with("csi-"));
    let meta = &va["status"]["attachmentMetadata"];
    assert_eq!(meta["type"], "local");
    let path = meta["path"].as_str().unwrap();
    assert!(std::path::Path::new(path).is_dir(), "{path}");
    assert!(
        va["metadata"]["finalizers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "external-attacher/stowage")
    );
    let n = s
        .wait_for(&format!("{NODES}/node-a"), "volumesAttached", |n| {
            !n["status"]["volumesAttached"].is_null()
        })
        .await;
    assert_eq!(
        n["status"]["volumesAttached"][0]["name"],
        unique("local.stowage.dev", &volume)
    );
    assert_eq!(n["status"]["volumesAttached"][0]["devicePath"], path);

    // A second pod on the same node shares the attachment.
    s.post(&pods("app"), &pod_using("worker", "data", Some("node-a")))
        .await;
    s.delete(&format!("{}/web", pods("app"))).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        attachment_on(&s, &volume, "node-a").await.is_some(),
        "still needed by worker"
    );
    // The last pod gone, the volume is detached and the node's status says so.
    s.delete(&format!("{}/worker", pods("app"))).await;
    wait_detached(&s, &volume, "node-a").await;
    s.wait_for(
        &format!("{NODES}/node-a"),
        "volumesAttached to clear",
        |n| n["status"]["volumesAttached"].is_null(),
    )
    .await;
}

#[tokio::test]
async fn a_terminated_pod_releases_its_attachment() {
    let (s, _cfg) = server(&[]).await;
    let volume = bound_claim(&s, "t", "data", "mem").await;
    s.post(&pods("t"), &pod_using("job", "data", Some("n1")))
        .await;
    wait_attached(&s, &volume, "n1").await;
    s.patch(
        &format!("{}/job/status", pods("t")),
        "application/merge-patch+json",
        &json!({"status": {"phase": "Succeeded"}}),
    )
    .await;
    wait_detached(&s, &volume, "n1").await;
}

#[tokio::test]
async fn a_single_node_volume_is_never_attached_to_two_nodes() {
    let (s, _cfg) = server(&[]).await;
    let volume = bound_claim(&s, "mx", "data", "mem").await;
    s.post(&pods("mx"), &pod_using("first", "data", Some("n1")))
        .await;
    wait_attached(&s, &volume, "n1").await;
    s.post(&pods("mx"), &pod_using("second", "data", Some("n2")))
        .await;
    let msg = s.wait_for_event("mx", "second", "MultiAttachRefused").await;
    assert!(msg.contains(&volume) && msg.contains("first"), "{msg}");
    assert!(attachment_on(&s, &volume, "n2").await.is_none());
    assert!(
        !s.event_reasons("mx", "second")
            .await
            .iter()
            .any(|(r, _)| r == "FailedAttachVolume")
    );
    // Once the first pod is gone (and n1 no longer uses it), the volume moves.
    s.delete(&format!("{}/first", pods("mx"))).await;
    wait_attached(&s, &volume, "n2").await;
    wait_detached(&s, &volume, "n1").await;
}

#[tokio::test]
async fn read_write_many_volumes_attach_to_several_nodes() {
    let (s, _cfg) = server(&[]).await;
    let mut c = claim_in_class("shared", "1Gi", "mem");
    c["spec"]["accessModes"] = json!(["ReadWriteMany"]);
    s.post(&pvcs("rwx"), &c).await;
    let c = s
        .wait_for_phase(&format!("{}/shared", pvcs("rwx")), "Bound")
        .await;
    let volume = c["spec"]["volumeName"].as_str().unwrap().to_string();
    for (pod, n) in [("a", "n1"), ("b", "n2"), ("c", "n3")] {
        s.post(&pods("rwx"), &pod_using(pod, "shared", Some(n)))
            .await;
    }
    for n in ["n1", "n2", "n3"] {
        wait_attached(&s, &volume, n).await;
    }
}

#[tokio::test]
async fn a_local_volume_is_refused_on_another_node() {
    let (s, _cfg) = server(&[]).await;
    let volume = bound_claim(&s, "wn", "data", "local").await;
    s.post(&pods("wn"), &pod_using("lost", "data", Some("node-b")))
        .await;
    let msg = s
        .wait_for_event("wn", "lost", "VolumeNodeAffinityConflict")
        .await;
    assert!(msg.contains("node-b"), "{msg}");
    assert!(attachment_on(&s, &volume, "node-b").await.is_none());
}

#[tokio::test]
async fn per_node_attachment_limits_are_honoured() {
    let (s, _cfg) = server(&[]).await;
    node(&s, "small", json!({"metadata": {"name": "small", "annotations": {"stowage.dev/max-volume-attachments": "2"}}})).await;
    let mut volumes = Vec::new();
    for i in 0..3 {
        volumes.push(bound_claim(&s, "lim", &format!("c{i}"), "mem").await);
    }
    for (i, volume) in volumes.iter().take(2).enumerate() {
        s.post(
            &pods("lim"),
            &pod_using(&format!("p{i}"), &format!("c{i}"), Some("small")),
        )
        .await;
        wait_attached(&s, volume, "small").await;
    }
    s.post(&pods("lim"), &pod_using("p2", "c2", Some("small")))
        .await;
    let msg = s.wait_for_event("lim", "p2", "AttachLimitReached").await;
    assert!(msg.contains("small"), "{msg}");
    assert!(
        attachment_on(&s, &volumes[2], "small").await.is_none(),
        "no attachment, no provider call loop"
    );
    s.delete(&format!("{}/p0", pods("lim"))).await;
    wait_attached(&s, &volumes[2], "small").await;
}

#[tokio::test]
async fn a_volume_in_use_on_a_healthy_node_is_not_detached() {
    let (s, _cfg) = server(&[]).await;
    node(&s, "busy", json!({})).await;
    let volume = bound_claim(&s, "iu", "data", "mem").await;
    s.post(&pods("iu"), &pod_using("app", "data", Some("busy")))
        .await;
    wait_attached(&s, &volume, "busy").await;
    set_in_use(
        &s,
        "busy",
        vec![unique("memory.stowage.dev", &format!("mem-{volume}"))],
    )
    .await;
    s.delete(&format!("{}/app", pods("iu"))).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        attachment_on(&s, &volume, "busy").await.is_some(),
        "still mounted: not detached"
    );
    set_in_use(&s, "busy", vec![]).await;
    wait_detached(&s, &volume, "busy").await;
}

#[tokio::test]
async fn an_out_of_service_node_loses_its_volumes_at_once_and_they_attach_elsewhere() {
    let (s, _cfg) = server(&[]).await;
    node(&s, "failed", json!({})).await;
    let volume = bound_claim(&s, "oos", "data", "mem").await;
    s.post(&pods("oos"), &pod_using("app", "data", Some("failed")))
        .await;
    wait_attached(&s, &volume, "failed").await;
    set_in_use(
        &s,
        "failed",
        vec![unique("memory.stowage.dev", &format!("mem-{volume}"))],
    )
    .await;
    // The orchestrator declares the node gone and reschedules the pod.
    s.patch(
        &format!("{NODES}/failed"),
        "application/merge-patch+json",
        &json!({"spec": {"taints": [{"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"}]}}),
    )
    .await;
    s.delete(&format!("{}/app", pods("oos"))).await;
    let started = std::time::Instant::now();
    s.post(&pods("oos"), &pod_using("app-2", "data", Some("healthy")))
        .await;
    wait_attached(&s, &volume, "healthy").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "moved in {:?}",
        started.elapsed()
    );
    wait_detached(&s, &volume, "failed").await;
}

#[tokio::test]
async fn an_expired_lease_marks_the_node_not_ready_and_volumes_are_force_detached_after_the_timeout()
 {
    let (s, _cfg) = server(&["--max-wait-for-unmount", "2s"]).await;
    node(&s, "flaky", json!({})).await;
    let now = jiff::Timestamp::now();
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "flaky"},
        "spec": {"holderIdentity": "flaky", "leaseDurationSeconds": 1, "renewTime": now.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()}});
    let (code, v) = s.post(&leases("stowage-node-lease"), &lease).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    s.wait_for(&format!("{NODES}/flaky"), "Ready=True", |n| {
        n["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    })
    .await;
    let volume = bound_claim(&s, "ls", "data", "mem").await;
    s.post(&pods("ls"), &pod_using("app", "data", Some("flaky")))
        .await;
    wait_attached(&s, &volume, "flaky").await;
    set_in_use(
        &s,
        "flaky",
        vec![unique("memory.stowage.dev", &format!("mem-{volume}"))],
    )
    .await;
    // The lease is not renewed: NotReady, with an event.
    s.wait_for(&format!("{NODES}/flaky"), "Ready=Unknown", |n| {
        n["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "Unknown")
        })
    })
    .await;
    let not_ready_seen = std::time::Instant::now();
    s.wait_for_event("default", "flaky", "NodeNotReady").await;
    s.delete(&format!("{}/app", pods("ls"))).await;
    // In use on a node that only just became unhealthy: not detached yet.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        not_ready_seen.elapsed() > Duration::from_millis(1500)
            || attachment_on(&s, &volume, "flaky").await.is_some(),
        "detached before max-wait-for-unmount"
    );
    wait_detached(&s, &volume, "flaky").await;
    // `not_ready_seen` is when this test noticed NotReady, which under load on two cores can
    // be most of a second after the server decided it; an early detach comes within ~300 ms.
    assert!(
        not_ready_seen.elapsed() >= Duration::from_millis(1000),
        "force-detached {:?} after NotReady, before the 2 s timeout",
        not_ready_seen.elapsed()
    );
}

// Local volumes: they survive the restart (the in-memory provider's would not).
#[tokio::test]
async fn a_restart_in_the_middle_of_attaches_converges_without_duplicates() {
    let (mut s, _cfg) = server(&[]).await;
    let n = 200;
    for i in 0..n {
        s.post(
            &pvcs("rs"),
            &claim_in_class(&format!("c{i}"), "100Mi", "local"),
        )
        .await;
    }
    let mut tasks = Vec::new();
    for i in 0..n {
        let client = s.client.clone();
        let url = s.url(&pods("rs"));
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .json(&pod_using(
                    &format!("p{i}"),
                    &format!("c{i}"),
                    Some("node-a"),
                ))
                .send()
                .await
                .map(|r| r.status())
        }));
    }
    s.eventually(Duration::from_secs(30), "some attachments", || async {
        (attachments(&s).await.len() >= 20).then_some(())
    })
    .await;
    s.kill();
    let mut created = 0;
    for t in tasks {
        if let Ok(StatusCode::CREATED) = t.await.unwrap() {
            created += 1;
        }
    }
    s.restart().await;
    for i in 0..n {
        // Pods whose create the crash cut off are created again (409 if it had landed).
        s.post(
            &pods("rs"),
            &pod_using(&format!("p{i}"), &format!("c{i}"), Some("node-a")),
        )
        .await;
    }
    let all = s
        .eventually(
            Duration::from_secs(60),
            "every pod's volume attached",
            || async {
                let vas = attachments(&s).await;
                (vas.len() == n && vas.iter().all(|v| v["status"]["attached"] == true))
                    .then_some(vas)
            },
        )
        .await;
    let mut volumes: Vec<String> = all
        .iter()
        .map(|v| {
            v["spec"]["source"]["persistentVolumeName"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    volumes.sort();
    volumes.dedup();
    assert_eq!(
        volumes.len(),
        n,
        "one attachment per pod, no duplicates ({created} pods landed before the crash)"
    );
}
