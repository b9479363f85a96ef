//! Authentication, authorization and transport security against a real server.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

fn lease(name: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name},
           "spec": {"holderIdentity": name, "leaseDurationSeconds": 40}})
}

async fn seed(s: &Server) {
    s.post(SC, &storage_class("gold", "example.com/x")).await;
    s.post(PV, &host_path_pv("pv-1", "1Gi")).await;
    for ns in ["a", "b"] {
        s.post(&pvcs(ns), &pvc(&format!("claim-{ns}"), "1Gi")).await;
    }
    for n in ["n1", "n2"] {
        s.post(NODES, &json!({"metadata": {"name": n}})).await;
        s.post(&leases("stowage-node-lease"), &lease(n)).await;
        s.post(VA, &json!({"metadata": {"name": format!("va-{n}")},
            "spec": {"attacher": "example.com/x", "nodeName": n, "source": {"persistentVolumeName": "pv-1"}}})).await;
    }
    s.post(&pods("a"), &pod_using("on-n1", "claim-a", Some("n1")))
        .await;
    s.post(&pods("b"), &pod_using("on-n2", "claim-b", Some("n2")))
        .await;
}

#[tokio::test]
async fn requests_without_a_valid_token_are_unauthorized_but_health_is_public() {
    let s = Server::start().await;
    let anonymous = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca_of(&s.data_dir).unwrap()).unwrap())
        .build()
        .unwrap();
    for path in [
        "/api/v1/persistentvolumes",
        "/api",
        "/openapi/v3",
        TOKENS,
        "/metrics",
    ] {
        let resp = anonymous.get(s.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["reason"], "Unauthorized");
    }
    for bad in [
        "Bearer nonsense",
        "Bearer stw_abc_def",
        "Basic YWRtaW46YWRtaW4=",
        "Bearer ",
    ] {
        let resp = anonymous
            .get(s.url(PV))
            .header("Authorization", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{bad}");
    }
    for path in ["/healthz", "/readyz", "/livez", "/version"] {
        assert_eq!(
            anonymous.get(s.url(path)).send().await.unwrap().status(),
            StatusCode::OK,
            "{path}"
        );
    }
}

#[tokio::test]
async fn the_role_matrix_is_enforced() {
    let s = Server::start_with(&["--no-default-class"]).await;
    seed(&s).await;
    let viewer = As::new(&s, &token(&s, "viewer", None).await);
    let team = As::new(&s, &token(&s, "namespace:a", None).await);
    let node = As::new(&s, &token(&s, "node:n1", None).await);

    // Viewer: reads everything, writes nothing.
    for path in [
        SC,
        PV,
        VA,
        NODES,
        "/api/v1/persistentvolumeclaims",
        "/api/v1/pods",
        "/api/v1/events",
    ] {
        assert_eq!(viewer.get(path).await, StatusCode::OK, "viewer get {path}");
    }
    assert_eq!(
        viewer.create(&pvcs("a"), &pvc("x", "1Gi")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        viewer.delete(&format!("{SC}/gold")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(viewer.get(TOKENS).await, StatusCode::FORBIDDEN);

    // Namespace token: its namespace only.
    assert_eq!(
        team.create(&pvcs("a"), &pvc("mine", "1Gi")).await,
        StatusCode::CREATED
    );
    assert_eq!(
        team.get(&format!("{}/claim-a", pvcs("a"))).await,
        StatusCode::OK
    );
    assert_eq!(
        team.create(&pods("a"), &pod_using("p", "mine", None)).await,
        StatusCode::CREATED
    );
    assert_eq!(
        team.create(&pvcs("b"), &pvc("theirs", "1Gi")).await,
        StatusCode::FORBIDDEN
    );
    // An object in another namespace and one that does not exist look the same.
    let (code, existing) = team
        .send(Method::GET, &format!("{}/claim-b", pvcs("b")), None)
        .await;
    let (code2, missing) = team
        .send(Method::GET, &format!("{}/no-such", pvcs("b")), None)
        .await;
    assert_eq!(
        (code, code2),
        (StatusCode::FORBIDDEN, StatusCode::FORBIDDEN)
    );
    assert!(
        !existing.to_string().contains("not found") && !missing.to_string().contains("not found")
    );
    assert_eq!(
        team.list_names("/api/v1/persistentvolumeclaims").await,
        vec!["claim-a", "mine"]
    );
    assert_eq!(team.list_names("/api/v1/pods").await, vec!["on-n1", "p"]);
    // Snapshots of its own claims, but never their status: a forged binding would restore
    // another tenant's data. Contents name every namespace's snapshots: admins only; classes
    // are readable, as storage classes are.
    let snapshots = "/apis/snapshot.storage.k8s.io/v1/namespaces/a/volumesnapshots";
    let snapshot = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                          "metadata": {"name": "s1"},
                          "spec": {"source": {"persistentVolumeClaimName": "mine"}}});
    assert_eq!(team.create(snapshots, &snapshot).await, StatusCode::CREATED);
    assert_eq!(
        team.create(
            "/apis/snapshot.storage.k8s.io/v1/namespaces/b/volumesnapshots",
            &snapshot
        )
        .await,
        StatusCode::FORBIDDEN
    );
    for status in [
        format!("{snapshots}/s1/status"),
        format!("{}/mine/status", pvcs("a")),
    ] {
        let resp = team
            .client
            .patch(s.url(&status))
            .header("Content-Type", "application/merge-patch+json")
            .body(
                json!({"status": {"boundVolumeSnapshotContentName": "snapcontent-of-someone-else"}})
                    .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{status}");
        assert_eq!(team.get(&status).await, StatusCode::OK, "{status}");
    }
    assert_eq!(team.get(SC).await, StatusCode::OK);
    assert_eq!(
        team.create(SC, &storage_class("x", "a.b/c")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        team.get("/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses")
            .await,
        StatusCode::OK
    );
    for path in [
        PV,
        VA,
        NODES,
        "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents",
        &leases("stowage-node-lease"),
        "/api/v1/namespaces/b/persistentvolumeclaims",
    ] {
        assert_eq!(
            team.get(path).await,
            StatusCode::FORBIDDEN,
            "namespace token get {path}"
        );
    }
    assert_eq!(team.list_names("/api/v1/namespaces").await, vec!["a"]);

    // Node token: its node, its lease, its attachments and pods.
    assert_eq!(node.get(&format!("{NODES}/n1")).await, StatusCode::OK);
    assert_eq!(
        node.get(&format!("{NODES}/n2")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        node.get(&format!("{NODES}/n9")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(node.list_names(NODES).await, vec!["n1"]);
    let (code, _) = node
        .send(Method::PATCH, &format!("{NODES}/n1/status"), None)
        .await;
    assert_eq!(
        code,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "allowed, then refused for its body"
    );
    let renew = json!({"spec": {"renewTime": "2030-01-01T00:00:00.000000Z"}});
    let resp = node
        .client
        .patch(s.url(&format!("{}/n1", leases("stowage-node-lease"))))
        .header("Content-Type", "application/merge-patch+json")
        .body(renew.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = node
        .client
        .patch(s.url(&format!("{}/n2", leases("stowage-node-lease"))))
        .header("Content-Type", "application/merge-patch+json")
        .body(renew.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        node.create(&leases("stowage-node-lease"), &lease("n1-extra"))
            .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(node.list_names(VA).await, vec!["va-n1"]);
    assert_eq!(
        node.get(&format!("{VA}/va-n2")).await,
        StatusCode::FORBIDDEN
    );
    let resp = node
        .client
        .patch(s.url(&format!("{VA}/va-n1/status")))
        .header("Content-Type", "application/merge-patch+json")
        .body(json!({"status": {"attached": true}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "a node may report its attachments' status"
    );
    let resp = node
        .client
        .patch(s.url(&format!("{VA}/va-n1")))
        .header("Content-Type", "application/merge-patch+json")
        .body(json!({"metadata": {"labels": {"x": "y"}}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::FORBIDDEN,
        "but not change the attachment itself"
    );
    assert_eq!(node.list_names("/api/v1/pods").await, vec!["on-n1"]);
    assert_eq!(
        node.create(&pvcs("a"), &pvc("n", "1Gi")).await,
        StatusCode::FORBIDDEN
    );
    // Volumes: only those pinned to the node (node-local provisioning); none here.
    assert!(node.list_names(PV).await.is_empty());
    assert_eq!(
        node.delete(&format!("{PV}/anything")).await,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn watches_never_show_objects_the_caller_cannot_see() {
    let s = Server::start_with(&["--no-default-class"]).await;
    let team = As::new(&s, &token(&s, "namespace:a", None).await);
    let resp = team
        .client
        .get(s.url("/api/v1/persistentvolumeclaims?watch=1&timeoutSeconds=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    s.post(&pvcs("b"), &pvc("secret-b", "1Gi")).await;
    s.post(&pvcs("a"), &pvc("visible-a", "1Gi")).await;
    s.post(&pvcs("c"), &pvc("secret-c", "1Gi")).await;
    let body = resp.text().await.unwrap();
    assert!(body.contains("visible-a"), "{body}");
    assert!(
        !body.contains("secret-b") && !body.contains("secret-c"),
        "{body}"
    );
}

#[tokio::test]
async fn token_management_revocation_and_expiry() {
    let s = Server::start().await;
    let t = token(&s, "viewer", None).await;
    let viewer = As::new(&s, &t);
    assert_eq!(viewer.get(PV).await, StatusCode::OK);
    let (_, list) = s.get(TOKENS).await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "admin and viewer");
    assert!(
        !list.to_string().contains(t.splitn(3, '_').nth(2).unwrap()),
        "secrets are never listed"
    );
    let id = t.split('_').nth(1).unwrap();
    let (code, _) = s.delete(&format!("{TOKENS}/{id}")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        viewer.get(PV).await,
        StatusCode::UNAUTHORIZED,
        "revocation is immediate"
    );
    let (code, _) = s.delete(&format!("{TOKENS}/nope")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    let short = As::new(&s, &token(&s, "viewer", Some(1)).await);
    assert_eq!(short.get(PV).await, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(short.get(PV).await, StatusCode::UNAUTHORIZED, "expired");

    for bad in [
        json!({"spec": {"role": "root"}}),
        json!({"spec": {"role": "viewer", "ttlSeconds": -5}}),
        json!({"spec": {}}),
    ] {
        let (code, _) = s.post(TOKENS, &bad).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{bad}");
    }
    // Only hashes are at rest.
    // The secret is everything after the id (it may itself contain '_').
    let secret = t.splitn(3, '_').nth(2).unwrap().as_bytes();
    for (i, bytes) in s.stored_bytes().await.iter().enumerate() {
        if let Some(at) = bytes.windows(secret.len()).position(|w| w == secret) {
            let around = &bytes[at.saturating_sub(300)..(at + 300).min(bytes.len())];
            panic!(
                "a token secret is stored in clear (file {i}, offset {at}): {:?}",
                String::from_utf8_lossy(around)
            );
        }
    }
}

#[tokio::test]
async fn rate_and_watch_limits_apply_per_token() {
    let s = Server::start_with(&["--rate-limit", "5", "--max-watches-per-token", "2"]).await;
    // Limits are per replica (as each Kubernetes API server limits its own requests), so the
    // requests that must meet a limit all go to one replica.
    let one = |path: &str| format!("{}{path}", s.base);
    let team = As::new(&s, &token(&s, "namespace:a", None).await);
    let mut limited = None;
    for _ in 0..30 {
        let resp = team.client.get(one(&pvcs("a"))).send().await.unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(resp);
            break;
        }
    }
    let resp = limited.expect("a burst over the rate gets 429");
    assert!(resp.headers().get("retry-after").is_some());
    // Another token is not affected; admins are not limited by default.
    let other = As::new(&s, &token(&s, "namespace:b", None).await);
    let status = other
        .client
        .get(one(&pvcs("b")))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK);
    for _ in 0..30 {
        let resp = s.client.get(one(&pvcs("a"))).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut watches = Vec::new();
    for _ in 0..2 {
        let w = other
            .client
            .get(one(&format!("{}?watch=1", pvcs("b"))))
            .send()
            .await
            .unwrap();
        assert_eq!(w.status(), StatusCode::OK);
        watches.push(w);
    }
    let third = other
        .client
        .get(one(&format!("{}?watch=1", pvcs("b"))))
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    drop(watches);
}

#[tokio::test]
async fn https_is_the_default_and_plaintext_is_refused_on_public_addresses() {
    let s = Server::start().await;
    assert!(s.base.starts_with("https://"), "{}", s.base);
    let kubeconfig = std::fs::read_to_string(s.data_dir.join("kubeconfig")).unwrap();
    assert!(kubeconfig.contains("certificate-authority-data") && kubeconfig.contains(&s.base));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.data_dir.join("kubeconfig"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_stowage"))
        .args([
            "serve",
            "--plaintext",
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
        ])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("refusing to serve plain HTTP"));

    // A certificate given by the admin is served as is.
    let tls = s.data_dir.join("tls");
    let other = Server::start_with(&[
        "--tls-cert",
        tls.join("server.crt").to_str().unwrap(),
        "--tls-key",
        tls.join("server.key").to_str().unwrap(),
    ])
    .await;
    let client = client_for(
        &other.token,
        Some(&std::fs::read(tls.join("ca.crt")).unwrap()),
    );
    let resp = client.get(other.url(SC)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn secrets_never_appear_in_responses_or_logs() {
    let s = Server::start().await;
    let t = token(&s, "namespace:a", None).await;
    let secret = t.splitn(3, '_').nth(2).unwrap().to_string();
    let team = As::new(&s, &t);
    let mut seen = String::new();
    for path in [
        TOKENS,
        "/api/v1/events",
        "/metrics",
        "/api/v1/namespaces/default/events",
    ] {
        let (_, v) = s.get(path).await;
        seen.push_str(&v.to_string());
    }
    let (_, v) = team.send(Method::GET, PV, None).await;
    seen.push_str(&v.to_string());
    let (_, v) = s
        .post(
            &pvcs("a"),
            &json!({"metadata": {"name": "x"}, "spec": {"bogus": t}}),
        )
        .await;
    seen.push_str(&v.to_string());
    assert!(
        !seen.contains(&secret),
        "a response contains a token secret"
    );
    assert!(
        !s.log().contains(&secret),
        "the server log contains a token secret"
    );
    assert!(
        !s.log().contains(&s.token),
        "the server log contains the admin token"
    );
}

#[tokio::test]
async fn http2_is_offered_over_tls_and_a_shutdown_does_not_wait_for_its_watches() {
    // curl speaks HTTP/2 over TLS (ALPN) as kubectl and browsers do; the e2e client is
    // HTTP/1.1. A page's watches share one HTTP/2 connection instead of six HTTP/1.1 ones.
    let mut s = Server::start().await;
    let ca = s.data_dir.join("tls").join("ca.crt");
    let curl = |args: &[&str]| {
        std::process::Command::new("curl")
            .args(["-s", "--http2", "--cacert", ca.to_str().unwrap()])
            .args(["-H", &format!("Authorization: Bearer {}", s.token)])
            .args(args)
            .output()
            .expect("curl, to speak HTTP/2 (scripts/test.sh installs it)")
    };
    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_version} %{http_code}",
        &s.url("/api/v1/persistentvolumeclaims"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200");
    // An open HTTP/2 watch: a graceful shutdown says GOAWAY and does not wait for the drain.
    let mut watch = std::process::Command::new("curl")
        .args(["-s", "--http2", "--cacert", ca.to_str().unwrap()])
        .args(["-H", &format!("Authorization: Bearer {}", s.token)])
        .arg(s.url("/api/v1/persistentvolumeclaims?watch=1"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    assert!(s.terminate(), "the server stopped cleanly");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?} with an HTTP/2 watch open",
        started.elapsed()
    );
    let _ = watch.kill();
    let _ = watch.wait();
}
