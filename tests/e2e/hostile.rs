//! A hostile tenant against a real server: requests that used to crash it, starve it, grow it
//! without bound, or reach another tenant. Each test ends by checking that the server is still
//! alive, answers `/healthz` within a second, and kept its memory under a bound.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

const MIB: u64 = 1 << 20;

/// A tenant of `team-a`, and the server, with request-rate limits off (the tests send many).
async fn tenant_server(extra: &[&str]) -> (Server, String) {
    let mut args = vec!["--rate-limit", "0"];
    args.extend_from_slice(extra);
    let s = Server::start_with(&args).await;
    let t = token(&s, "namespace:team-a", None).await;
    (s, t)
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {}})
}

async fn send_raw(
    who: &As<'_>,
    method: Method,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let resp = who
        .client
        .request(method, who.s.url(path))
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .expect("the server answers");
    let code = resp.status();
    let bytes = resp.bytes().await.unwrap_or_default();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn json_patch(who: &As<'_>, path: &str, ops: Value) -> (StatusCode, Value) {
    send_raw(
        who,
        Method::PATCH,
        path,
        "application/json-patch+json",
        serde_json::to_vec(&ops).unwrap(),
    )
    .await
}

#[tokio::test]
async fn json_patch_copy_bombs_are_refused_and_the_server_lives() {
    let (mut s, t) = tenant_server(&[]).await;
    let a = As::new(&s, &t);
    let pods = pods("team-a");
    assert_eq!(a.create(&pods, &pod("p")).await, StatusCode::CREATED);
    let p = format!("{pods}/p");

    // Copying a value into its own child nests it a level deeper each time: this used to
    // overflow the stack and abort the process, dry run or not.
    let mut ops = vec![json!({"op": "add", "path": "/x", "value": {}})];
    ops.extend((0..850).map(|_| json!({"op": "copy", "from": "/x", "path": "/x/x"})));
    for path in [format!("{p}?dryRun=All"), p.clone()] {
        let (code, v) = json_patch(&a, &path, json!(ops)).await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert!(v["message"].as_str().unwrap().contains("deeper"), "{v}");
    }

    // Copying into a sibling doubles the document each time: 1 KB became gigabytes.
    let mut ops = vec![json!({"op": "add", "path": "/y", "value": {"a": "z".repeat(1000)}})];
    ops.extend((0..30).map(|i| json!({"op": "copy", "from": "/y", "path": format!("/y/c{i}")})));
    let (code, v) = json_patch(&a, &p, json!(ops)).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{v}");

    // More operations than Kubernetes allows.
    let ops: Vec<Value> = (0..10_001)
        .map(|_| json!({"op": "test", "path": "/kind", "value": "Pod"}))
        .collect();
    let (code, _) = json_patch(&a, &p, json!(ops)).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);

    // Ordinary patches still work.
    let (code, v) = json_patch(
        &a,
        &p,
        json!([{"op": "add", "path": "/metadata/labels", "value": {"ok": "yes"}}]),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    s.assert_alive_within(400 * MIB).await;
}

/// A "billion laughs" document: ten levels of nine aliases each.
fn yaml_bomb(prefix: &str) -> String {
    let mut doc = String::from(prefix);
    doc.push_str(
        "  a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for i in 1..10 {
        let p = i - 1;
        doc.push_str(&format!(
            "  a{i}: &a{i} [*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p}]\n"
        ));
    }
    doc
}

#[tokio::test]
async fn yaml_alias_bombs_are_refused_in_bodies_and_apply_patches() {
    let (mut s, t) = tenant_server(&[]).await;
    let a = As::new(&s, &t);
    let pods = pods("team-a");
    let bomb = yaml_bomb("apiVersion: v1\nkind: Pod\nmetadata:\n  name: bomb\nspec:\n  x:\n");
    assert!(bomb.len() < 2048);
    let started = Instant::now();
    let (code, v) = send_raw(
        &a,
        Method::POST,
        &pods,
        "application/yaml",
        bomb.clone().into_bytes(),
    )
    .await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    let (code, v) = send_raw(
        &a,
        Method::PATCH,
        &format!("{pods}/bomb?fieldManager=m"),
        "application/apply-patch+yaml",
        bomb.into_bytes(),
    )
    .await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // YAML with an ordinary alias is fine.
    let fine = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: fine\n  labels: &l {app: x}\n  annotations: *l\nspec: {}\n";
    let (code, v) = send_raw(&a, Method::POST, &pods, "application/yaml", fine.into()).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    assert_eq!(v["metadata"]["annotations"]["app"], "x");
    s.assert_alive_within(400 * MIB).await;
}

#[tokio::test]
async fn huge_strategic_merges_do_not_stall_other_requests() {
    let (mut s, t) = tenant_server(&[]).await;
    let a = As::new(&s, &t);
    let pods = pods("team-a");
    assert_eq!(a.create(&pods, &pod("p")).await, StatusCode::CREATED);
    let finalizers = |from: usize| -> Vec<String> {
        (from..from + 40_000)
            .map(|i| format!("example.com/f-{i}"))
            .collect()
    };
    // `/healthz` is probed all along; with quadratic merging on the request threads it was
    // held for seconds.
    let probe = {
        let client = s.client.clone();
        let url = s.url("/healthz");
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            let until = Instant::now() + Duration::from_secs(4);
            while Instant::now() < until {
                let started = Instant::now();
                let ok = client
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                assert!(ok);
                worst = worst.max(started.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            worst
        })
    };
    let body = json!({"metadata": {"finalizers": finalizers(0)}});
    let (code, v) = send_raw(
        &a,
        Method::PATCH,
        &format!("{pods}/p"),
        "application/strategic-merge-patch+json",
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{}", v["message"]);
    assert_eq!(
        v["metadata"]["finalizers"].as_array().unwrap().len(),
        40_000
    );
    // Twice as many would make the object larger than what the store keeps.
    let body = json!({"metadata": {"finalizers": finalizers(40_000)}});
    let (code, v) = send_raw(
        &a,
        Method::PATCH,
        &format!("{pods}/p"),
        "application/strategic-merge-patch+json",
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{}", v["message"]);
    let worst = probe.await.unwrap();
    // A merge that held the runtime (or went quadratic on 40,000 finalizers) stalls the probe
    // for many seconds. The budget leaves room for what a debug build on two cores shared with
    // the suite's other test thread costs a 20 ms probe loop: 750 ms was exceeded once (1.3 s)
    // in a full run with nothing blocked.
    assert!(
        worst < Duration::from_millis(1500),
        "/healthz took {worst:?}"
    );
    s.assert_alive_within(500 * MIB).await;
}

/// A pod of about `bytes` bytes (annotations are capped at 256 KiB; container args are not).
fn big_pod(name: &str, bytes: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": "c", "image": "x", "args": ["b".repeat(bytes)]}]}})
}

fn wal_bytes(s: &Server) -> u64 {
    std::fs::metadata(s.data_dir.join("stowage.db-wal")).map_or(0, |m| m.len())
}

#[tokio::test]
async fn objects_are_bounded_once_stored_and_small_patches_grow_neither_memory_nor_the_wal() {
    let (mut s, t) = tenant_server(&["--watch-history-mib", "32"]).await;
    let a = As::new(&s, &t);
    let pods = pods("team-a");
    let (code, v) = a
        .send(Method::POST, &pods, Some(&big_pod("big", 2_500_000)))
        .await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["message"].as_str().unwrap().contains("1572864"), "{v}");
    assert_eq!(
        a.send(Method::POST, &pods, Some(&big_pod("p", 1_400_000)))
            .await
            .0,
        StatusCode::CREATED
    );
    // A patch may not take it past the limit either.
    let (code, _) = send_raw(
        &a,
        Method::PATCH,
        &format!("{pods}/p"),
        "application/merge-patch+json",
        serde_json::to_vec(&json!({"metadata": {"annotations": {"more": "m".repeat(200_000)}}}))
            .unwrap(),
    )
    .await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);

    // Each small patch stores a new 1.4 MB version: history and WAL must stay bounded.
    let mut max_wal = 0;
    for i in 0..300 {
        let (code, _) = send_raw(
            &a,
            Method::PATCH,
            &format!("{pods}/p"),
            "application/merge-patch+json",
            serde_json::to_vec(&json!({"metadata": {"labels": {"n": i.to_string()}}})).unwrap(),
        )
        .await;
        assert_eq!(code, StatusCode::OK);
        max_wal = max_wal.max(wal_bytes(&s));
    }
    assert!(max_wal < 256 * MIB, "the WAL reached {} MiB", max_wal >> 20);
    s.assert_alive_within(450 * MIB).await;
    let wal = wal_bytes(&s);
    assert!(
        wal <= 64 * MIB,
        "the WAL is {} MiB after the load",
        wal >> 20
    );
}

#[tokio::test]
async fn a_watcher_that_never_reads_cannot_make_the_server_hold_its_output() {
    let (mut s, t) = tenant_server(&["--watch-history-mib", "32"]).await;
    let a = As::new(&s, &t);
    let pods = pods("team-a");
    // Opened, never read.
    let stalled = a
        .client
        .get(s.url(&format!("{pods}?watch=1")))
        .send()
        .await
        .unwrap();
    assert_eq!(stalled.status(), StatusCode::OK);
    for i in 0..150 {
        let (code, _) = a
            .send(
                Method::POST,
                &pods,
                Some(&big_pod(&format!("p{i}"), 1_000_000)),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED);
    }
    // 150 MB were written; the watcher may hold at most its buffer of it.
    s.assert_alive_within(450 * MIB).await;
    drop(stalled);
}

#[tokio::test]
async fn watches_end_when_their_token_is_revoked_or_expires() {
    let s = Server::start_with(&["--rate-limit", "0"]).await;
    let (code, created) = s
        .post(
            TOKENS,
            &json!({"spec": {"name": "w", "role": "namespace:team-a"}}),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let id = created["metadata"]["name"].as_str().unwrap().to_string();
    let a = As::new(&s, created["status"]["token"].as_str().unwrap());
    let watch_until_end = |who: &As<'_>| {
        let req = who.client.get(
            who.s
                .url(&format!("{}?watch=1&timeoutSeconds=600", pvcs("team-a"))),
        );
        async move {
            let mut resp = req.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let started = Instant::now();
            while let Ok(Some(_)) = resp.chunk().await {}
            started.elapsed()
        }
    };
    let watching = tokio::spawn(watch_until_end(&a));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, _) = s.delete(&format!("{TOKENS}/{id}")).await;
    assert_eq!(code, StatusCode::OK);
    let lasted = tokio::time::timeout(Duration::from_secs(5), watching)
        .await
        .expect("the watch ends once its token is revoked")
        .unwrap();
    assert!(lasted < Duration::from_secs(3), "{lasted:?}");

    let short = token(&s, "namespace:team-a", Some(2)).await;
    let b = As::new(&s, &short);
    let lasted = tokio::time::timeout(Duration::from_secs(8), watch_until_end(&b))
        .await
        .expect("the watch ends when its token expires");
    assert!(lasted < Duration::from_secs(4), "{lasted:?}");
}

/// Reads from a connection until it is closed; how long that took (or `None` past `limit`).
async fn closed_within(conn: &mut tokio::net::TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), conn.read(&mut buf))
            .await
        {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn slow_idle_and_numerous_connections_are_closed() {
    let mut s = Server::start_with(&[
        "--plaintext",
        "--header-read-timeout",
        "1s",
        "--idle-timeout",
        "2s",
        "--max-connections-per-ip",
        "16",
    ])
    .await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let connect = || tokio::net::TcpStream::connect(addr.clone());

    // Headers that never end.
    let mut slow = connect().await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let took = closed_within(&mut slow, Duration::from_secs(10)).await;
    assert!(took.is_some_and(|t| t < Duration::from_secs(3)), "{took:?}");

    // A connection that never says anything at all.
    let mut silent = connect().await.unwrap();
    let took = closed_within(&mut silent, Duration::from_secs(10)).await;
    assert!(took.is_some_and(|t| t < Duration::from_secs(3)), "{took:?}");

    // An HTTP/2 connection that opens and then asks for nothing.
    let mut idle = connect().await.unwrap();
    idle.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let took = closed_within(&mut idle, Duration::from_secs(15)).await;
    assert!(took.is_some_and(|t| t < Duration::from_secs(8)), "{took:?}");

    // Connections beyond the per-address cap are closed on arrival.
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(connect().await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = connect().await.unwrap();
    let took = closed_within(&mut extra, Duration::from_secs(5)).await;
    assert!(
        took.is_some_and(|t| t < Duration::from_millis(500)),
        "{took:?}"
    );
    // The held ones time out (no headers) and the server serves again.
    for mut c in held {
        assert!(
            closed_within(&mut c, Duration::from_secs(5))
                .await
                .is_some()
        );
    }
    s.assert_alive_within(300 * MIB).await;
}

#[tokio::test]
async fn stalled_tls_handshakes_are_closed() {
    let mut s = Server::start_with(&["--tls-handshake-timeout", "1s"]).await;
    let addr = s.base.trim_start_matches("https://").to_string();
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let took = closed_within(&mut c, Duration::from_secs(10)).await;
    assert!(took.is_some_and(|t| t < Duration::from_secs(3)), "{took:?}");
    s.assert_alive_within(300 * MIB).await;
}

#[tokio::test]
async fn a_flood_of_silent_tls_connections_does_not_lock_other_clients_out() {
    let mut s = Server::start_with(&[
        "--tls-handshake-timeout",
        "5s",
        "--max-tls-handshakes",
        "16",
    ])
    .await;
    let addr = s.base.trim_start_matches("https://").to_string();
    // From 127.0.0.1: more silent connections than there are handshake slots.
    let mut silent = Vec::new();
    for _ in 0..40 {
        silent.push(tokio::net::TcpStream::connect(addr.clone()).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Another client address still gets through at once.
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .add_root_certificate(reqwest::Certificate::from_pem(&ca_of(&s.data_dir).unwrap()).unwrap())
        .build()
        .unwrap();
    let started = Instant::now();
    let resp = other
        .get(s.url("/healthz"))
        .send()
        .await
        .expect("a client from another address is served");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
    s.assert_alive_within(300 * MIB).await;
}

#[tokio::test]
async fn a_node_cannot_lift_its_taints_or_move_itself() {
    let mut s = Server::start().await;
    let node_token = token(&s, "node:n1", None).await;
    let n = As::new(&s, &node_token);
    // Registration may not declare itself out of service, or set its own attach limit.
    let mut tainted = json!({"metadata": {"name": "n1"},
        "spec": {"taints": [{"key": "node.kubernetes.io/out-of-service", "effect": "NoExecute"}]}});
    assert_eq!(n.create(NODES, &tainted).await, StatusCode::FORBIDDEN);
    tainted = json!({"metadata": {"name": "n1", "annotations": {"stowage.dev/max-volume-attachments": "500"}}});
    assert_eq!(n.create(NODES, &tainted).await, StatusCode::FORBIDDEN);
    // It registers with its topology; that is allowed once.
    let node = json!({"metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "a",
        "kubernetes.io/hostname": "n1"}}, "spec": {"providerID": "aws:///a/i-1"}});
    assert_eq!(n.create(NODES, &node).await, StatusCode::CREATED);
    // An admin takes it out of service.
    let (code, _) = s
        .patch(
            &format!("{NODES}/n1"),
            "application/merge-patch+json",
            &json!({"spec": {"taints": [{"key": "node.kubernetes.io/out-of-service", "effect": "NoExecute"}]}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let patch = |body: Value| {
        let n = &n;
        async move {
            send_raw(
                n,
                Method::PATCH,
                &format!("{NODES}/n1"),
                "application/merge-patch+json",
                serde_json::to_vec(&body).unwrap(),
            )
            .await
        }
    };
    for (body, what) in [
        (json!({"spec": {"taints": null}}), "taints"),
        (
            json!({"metadata": {"labels": {"topology.kubernetes.io/zone": "b"}}}),
            "topology",
        ),
        (
            json!({"metadata": {"labels": {"topology.kubernetes.io/zone": null}}}),
            "topology",
        ),
        (
            json!({"spec": {"providerID": "aws:///b/i-2"}}),
            "providerID",
        ),
        (
            json!({"metadata": {"annotations": {"stowage.dev/max-volume-attachments": "99"}}}),
            "attach limits",
        ),
    ] {
        let (code, v) = patch(body).await;
        // providerID changes are also invalid for anyone (422) once set, as in Kubernetes.
        assert!(
            matches!(
                code,
                StatusCode::FORBIDDEN | StatusCode::UNPROCESSABLE_ENTITY
            ),
            "{what}: {v}"
        );
        assert!(v["message"].as_str().unwrap().contains(what), "{what}: {v}");
    }
    // Its own labels of no consequence, and its status, are its own.
    let (code, v) = patch(json!({"metadata": {"labels": {"example.com/disk": "ssd"}}})).await;
    assert_eq!(code, StatusCode::OK, "{v}");
    let (code, v) = send_raw(
        &n,
        Method::PATCH,
        &format!("{NODES}/n1/status"),
        "application/merge-patch+json",
        serde_json::to_vec(&json!({"status": {"volumesInUse": ["kubernetes.io/csi/x^y"]}}))
            .unwrap(),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    let (_, stored) = s.get(&format!("{NODES}/n1")).await;
    assert_eq!(
        stored["spec"]["taints"][0]["key"],
        "node.kubernetes.io/out-of-service"
    );
    assert_eq!(
        stored["metadata"]["labels"]["topology.kubernetes.io/zone"],
        "a"
    );
    s.assert_alive_within(300 * MIB).await;
}

#[tokio::test]
async fn tenants_see_and_file_events_only_about_their_own_objects() {
    let mut s = Server::start().await;
    // The node lifecycle controller files an event about a Node in "default".
    s.post(NODES, &json!({"metadata": {"name": "n-secret-name"}}))
        .await;
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "n-secret-name"},
        "spec": {"holderIdentity": "n-secret-name", "leaseDurationSeconds": 1,
                 "renewTime": "2020-01-01T00:00:00.000000Z"}});
    s.post(&leases("stowage-node-lease"), &lease).await;
    s.post(&pvcs("default"), &pvc("mine", "1Gi")).await;
    s.eventually(Duration::from_secs(20), "an event about a node", || async {
        let (_, v) = s.get("/api/v1/namespaces/default/events").await;
        v["items"]
            .as_array()?
            .iter()
            .any(|e| e["involvedObject"]["kind"] == "Node")
            .then_some(())
    })
    .await;
    let t = token(&s, "namespace:default", None).await;
    let a = As::new(&s, &t);
    let (code, v) = a
        .send(Method::GET, "/api/v1/namespaces/default/events", None)
        .await;
    assert_eq!(code, StatusCode::OK);
    for e in v["items"].as_array().unwrap() {
        assert_eq!(e["involvedObject"]["namespace"], "default", "{e}");
    }
    let (code, v) = a.send(Method::GET, "/api/v1/events", None).await;
    assert_eq!(code, StatusCode::OK);
    assert!(!v.to_string().contains("n-secret-name"), "{v}");

    // Forged events about cluster-scoped objects, or other namespaces', are refused.
    for involved in [
        json!({"kind": "PersistentVolume", "name": "pv-1"}),
        json!({"kind": "PersistentVolume", "name": "pv-1", "namespace": "default"}),
        json!({"kind": "Node", "name": "n-secret-name"}),
        json!({"kind": "PersistentVolumeClaim", "name": "x", "namespace": "team-b"}),
    ] {
        let e = json!({"metadata": {"name": "forged"}, "involvedObject": involved,
                       "reason": "Hacked", "message": "x", "type": "Warning"});
        let code = a.create(&events("default"), &e).await;
        assert!(
            matches!(
                code,
                StatusCode::FORBIDDEN | StatusCode::UNPROCESSABLE_ENTITY
            ),
            "{involved}: {code}"
        );
    }
    // Its own events may say what they like; the CLI does not let escape sequences through.
    let e = json!({"metadata": {"name": "mine-ev"},
        "involvedObject": {"kind": "PersistentVolumeClaim", "name": "mine", "namespace": "default"},
        "reason": "Note\u{1b}[2J", "message": "\u{1b}]0;owned\u{7}\u{1b}[31mred\rforged line", "type": "Normal"});
    assert_eq!(a.create(&events("default"), &e).await, StatusCode::CREATED);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stowage"))
        .arg("--kubeconfig")
        .arg(s.data_dir.join("kubeconfig"))
        .args(["describe", "pvc", "mine", "-n", "default"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("red"), "{text}");
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "control characters reached the terminal: {text:?}"
    );
    s.assert_alive_within(300 * MIB).await;
}

#[tokio::test]
async fn quantities_are_exact_and_overflow_is_refused() {
    let (mut s, t) = tenant_server(&[]).await;
    let a = As::new(&s, &t);
    let claims = pvcs("team-a");
    let (code, v) = a
        .send(
            Method::POST,
            &claims,
            Some(&pvc("long", "3000000000.000000000000000000000000000000")),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    assert_eq!(v["spec"]["resources"]["requests"]["storage"], "3G");
    let (code, v) = a
        .send(
            Method::POST,
            &claims,
            Some(&pvc("tiny", "0.000000000001Gi")),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    for (name, q) in [
        ("huge", "9Ei"),
        ("digits", "99999999999999999999999999999999999999999"),
        ("exp", "1e40"),
        ("negative", "-1Gi"),
    ] {
        let (code, v) = a.send(Method::POST, &claims, Some(&pvc(name, q))).await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{q}: {v}");
    }
    // Token lifetimes near the integer limits are refused, not wrapped into the past.
    let (code, v) = s
        .post(
            TOKENS,
            &json!({"spec": {"name": "x", "role": "viewer", "ttlSeconds": i64::MAX}}),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{v}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stowage"))
        .arg("--kubeconfig")
        .arg(s.data_dir.join("kubeconfig"))
        .args([
            "token",
            "create",
            "--role",
            "viewer",
            "--name",
            "x",
            "--ttl",
            "99999999999999999999h",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    s.assert_alive_within(300 * MIB).await;
}

#[tokio::test]
async fn resource_quotas_hold_and_only_admins_write_them() {
    let (mut s, t) = tenant_server(&[]).await;
    let a = As::new(&s, &t);
    let quotas = "/api/v1/namespaces/team-a/resourcequotas";
    let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "storage"},
        "spec": {"hard": {"requests.storage": "3Gi", "persistentvolumeclaims": "5",
                          "gold.storageclass.storage.k8s.io/persistentvolumeclaims": "1",
                          "count/pods": "2"}}});
    assert_eq!(a.create(quotas, &quota).await, StatusCode::FORBIDDEN);
    let (code, v) = s.post(quotas, &quota).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let (code, v) = s
        .post(
            quotas,
            &json!({"metadata": {"name": "cpu"}, "spec": {"hard": {"cpu": "2"}}}),
        )
        .await;
    assert_eq!(
        code,
        StatusCode::UNPROCESSABLE_ENTITY,
        "compute quotas are refused, not ignored: {v}"
    );
    // The tenant reads it, and cannot change it.
    assert_eq!(a.get(&format!("{quotas}/storage")).await, StatusCode::OK);
    let (code, _) = send_raw(
        &a,
        Method::PATCH,
        &format!("{quotas}/storage/status"),
        "application/merge-patch+json",
        serde_json::to_vec(&json!({"status": {"used": {"requests.storage": "0"}}})).unwrap(),
    )
    .await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_eq!(
        a.get("/api/v1/namespaces/team-b/resourcequotas").await,
        StatusCode::FORBIDDEN
    );

    let claims = pvcs("team-a");
    for i in 0..3 {
        assert_eq!(
            a.create(&claims, &pvc(&format!("c{i}"), "1Gi")).await,
            StatusCode::CREATED
        );
    }
    let (code, v) = a.send(Method::POST, &claims, Some(&pvc("c3", "1Gi"))).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("exceeded quota: storage, requested: requests.storage=1Gi, used: requests.storage=3Gi, limited: requests.storage=3Gi"),
        "{v}"
    );
    let mut gold = pvc("g1", "1Mi");
    gold["spec"]["storageClassName"] = json!("gold");
    let (code, v) = a.send(Method::POST, &claims, Some(&gold)).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "over requests.storage: {v}");
    // Pods are counted too.
    for i in 0..2 {
        assert_eq!(
            a.create(&pods("team-a"), &pod(&format!("p{i}"))).await,
            StatusCode::CREATED
        );
    }
    assert_eq!(
        a.create(&pods("team-a"), &pod("p2")).await,
        StatusCode::FORBIDDEN
    );

    let (_, q) = a
        .send(Method::GET, &format!("{quotas}/storage"), None)
        .await;
    assert_eq!(q["status"]["used"]["requests.storage"], "3Gi", "{q}");
    assert_eq!(q["status"]["used"]["persistentvolumeclaims"], "3", "{q}");
    assert_eq!(q["status"]["hard"]["requests.storage"], "3Gi", "{q}");
    // A deleted claim's storage is free again once the claim is gone.
    assert_eq!(a.delete(&format!("{claims}/c0")).await, StatusCode::OK);
    s.wait_gone(&format!("{claims}/c0")).await;
    assert_eq!(
        a.create(&claims, &pvc("c4", "1Gi")).await,
        StatusCode::CREATED
    );
    s.assert_alive_within(300 * MIB).await;
}
