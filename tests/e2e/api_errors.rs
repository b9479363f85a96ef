//! Bad input, the way a careless or hostile client sends it: always a 4xx `Status`, never a
//! 5xx, never a dropped connection.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

fn assert_status(code: StatusCode, body: &Value, expected: u16, reason: &str) {
    assert_eq!(code.as_u16(), expected, "{body}");
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["status"], "Failure");
    assert_eq!(body["code"], expected);
    assert_eq!(body["reason"], reason, "{body}");
}

#[tokio::test]
async fn malformed_bodies_are_bad_requests() {
    let s = Server::start().await;
    let path = pvcs("e");
    for body in [
        b"".to_vec(),
        b"{".to_vec(),
        b"[]".to_vec(),
        b"42".to_vec(),
        b"null".to_vec(),
        b"\xff\xfe".to_vec(),
        br#"{"metadata": "not an object"}"#.to_vec(),
        br#"{"metadata": {"name": 5}}"#.to_vec(),
        br#"{"spec": {"accessModes": "ReadWriteOnce"}}"#.to_vec(),
        br#"{"apiVersion": "v2", "kind": "PersistentVolumeClaim"}"#.to_vec(),
        br#"{"apiVersion": "v1", "kind": "Pod"}"#.to_vec(),
        br#"{"metadata": {"name": "x", "resourceVersion": "5"}}"#.to_vec(),
    ] {
        let (code, v) = s
            .raw(Method::POST, &path, Some("application/json"), body.clone())
            .await;
        assert_status(code, &v, 400, "BadRequest");
    }
    // A type error says where it is (the body is decoded again, tracking the path, to say so).
    let body = br#"{"metadata": {"name": "x"}, "spec": {"accessModes": "ReadWriteOnce"}}"#;
    let (code, v) = s
        .raw(Method::POST, &path, Some("application/json"), body.to_vec())
        .await;
    assert_status(code, &v, 400, "BadRequest");
    let message = v["message"].as_str().unwrap_or_default();
    assert!(message.contains("spec.accessModes"), "{message}");
}

#[tokio::test]
async fn invalid_fields_are_422_with_causes() {
    let s = Server::start().await;
    let cases: Vec<(String, Value, &str)> = vec![
        (pvcs("e"), pvc("UPPER", "1Gi"), "metadata.name"),
        (pvcs("e"), pvc("-x", "1Gi"), "metadata.name"),
        (
            pvcs("e"),
            pvc("ok", "ten gigs"),
            "spec.resources.requests[storage]",
        ),
        (
            pvcs("e"),
            pvc("ok", "0"),
            "spec.resources.requests[storage]",
        ),
        (
            pvcs("e"),
            pvc("ok", "-1Gi"),
            "spec.resources.requests[storage]",
        ),
        (
            pvcs("e"),
            json!({"metadata": {"name": "ok"}, "spec": {"resources": {"requests": {"storage": "1Gi"}}}}),
            "spec.accessModes",
        ),
        (
            pvcs("e"),
            json!({"metadata": {"name": "ok"}, "spec": {"accessModes": ["ReadWriteSometimes"], "resources": {"requests": {"storage": "1Gi"}}}}),
            "spec.accessModes[0]",
        ),
        (
            pvcs("e"),
            json!({"metadata": {"name": "ok"}, "spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Disk", "resources": {"requests": {"storage": "1Gi"}}}}),
            "spec.volumeMode",
        ),
        (
            pvcs("e"),
            json!({"metadata": {"name": "ok", "labels": {"bad key!": "v"}}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
            "metadata.labels",
        ),
        (
            pvcs("e"),
            json!({"metadata": {"name": "ok", "labels": {"k": "bad value!"}}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
            "metadata.labels[k]",
        ),
        (
            pvcs("e"),
            json!({"metadata": {"name": "ok"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, "selector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}}),
            "spec.selector.matchExpressions[0].operator",
        ),
        (
            pvcs("e"),
            json!({"metadata": {}, "spec": {}}),
            "metadata.name",
        ),
        (
            SC.to_string(),
            json!({"metadata": {"name": "s"}, "provisioner": "example.com/x", "reclaimPolicy": "Recycle"}),
            "reclaimPolicy",
        ),
        (
            SC.to_string(),
            json!({"metadata": {"name": "s"}, "provisioner": "example.com/x", "volumeBindingMode": "Later"}),
            "volumeBindingMode",
        ),
        (
            SC.to_string(),
            json!({"metadata": {"name": "s"}}),
            "provisioner",
        ),
        (
            PV.to_string(),
            json!({"metadata": {"name": "p"}, "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}}),
            "spec",
        ),
        (
            PV.to_string(),
            json!({"metadata": {"name": "p"}, "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/x"}, "persistentVolumeReclaimPolicy": "Shred"}}),
            "spec.persistentVolumeReclaimPolicy",
        ),
        (
            PV.to_string(),
            json!({"metadata": {"name": "p"}, "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "local": {"path": "/x"}}}),
            "spec.nodeAffinity",
        ),
        (
            VA.to_string(),
            json!({"metadata": {"name": "v"}, "spec": {"attacher": "a.b/c", "nodeName": "n", "source": {}}}),
            "spec.source",
        ),
        (
            NODES.to_string(),
            json!({"metadata": {"name": "n"}, "spec": {"taints": [{"key": "k", "effect": "Sometimes"}]}}),
            "spec.taints[0].effect",
        ),
        (
            pods("e"),
            json!({"metadata": {"name": "p"}, "spec": {"volumes": [{"name": "a", "persistentVolumeClaim": {"claimName": ""}}]}}),
            "spec.volumes[0].persistentVolumeClaim.claimName",
        ),
        (
            events("e"),
            json!({"metadata": {"name": "ev"}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "e"}, "type": "Loud"}),
            "type",
        ),
        (
            leases("e"),
            json!({"metadata": {"name": "l"}, "spec": {"leaseDurationSeconds": 0}}),
            "spec.leaseDurationSeconds",
        ),
    ];
    for (path, body, field) in cases {
        let (code, v) = s.post(&path, &body).await;
        assert_status(code, &v, 422, "Invalid");
        let causes = v["details"]["causes"]
            .as_array()
            .unwrap_or_else(|| panic!("no causes: {v}"));
        assert!(
            causes.iter().any(|c| c["field"] == field),
            "expected a cause on {field}, got {v}"
        );
    }
}

#[tokio::test]
async fn the_wrong_verb_path_or_media_type_gets_the_right_status() {
    let s = Server::start().await;
    let (code, v) = s.get("/api/v1/widgets").await;
    assert_status(code, &v, 404, "NotFound");
    let (code, v) = s.get("/nothing/here").await;
    assert_status(code, &v, 404, "NotFound");
    let (code, v) = s.get(&format!("{}/missing", pvcs("x"))).await;
    assert_status(code, &v, 404, "NotFound");
    assert_eq!(v["details"]["name"], "missing");
    let (code, v) = s
        .raw(
            Method::POST,
            &format!("{}/c", pvcs("x")),
            Some("application/json"),
            b"{}".to_vec(),
        )
        .await;
    assert_status(code, &v, 405, "MethodNotAllowed");
    let (code, v) = s
        .raw(
            Method::POST,
            "/api/v1/persistentvolumeclaims",
            Some("application/json"),
            b"{}".to_vec(),
        )
        .await;
    assert_status(code, &v, 405, "MethodNotAllowed");
    let (code, v) = s
        .raw(
            Method::POST,
            &pvcs("x"),
            Some("application/vnd.kubernetes.protobuf"),
            vec![1, 2],
        )
        .await;
    assert_status(code, &v, 415, "UnsupportedMediaType");
    let (code, v) = s
        .raw(
            Method::PATCH,
            &format!("{}/c", pvcs("x")),
            None,
            b"{}".to_vec(),
        )
        .await;
    assert_status(code, &v, 415, "UnsupportedMediaType");
    let resp = s
        .client
        .get(s.url(&pvcs("x")))
        .header("Accept", "application/vnd.kubernetes.protobuf")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_ACCEPTABLE);
    let (code, v) = s.raw(Method::PUT, "/api", None, vec![]).await;
    assert_status(code, &v, 405, "MethodNotAllowed");
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let s = Server::start().await;
    let mut body = pvc("big", "1Gi");
    body["metadata"]["annotations"] = json!({"x": "y".repeat(4 * 1024 * 1024)});
    let (code, v) = s.post(&pvcs("x"), &body).await;
    assert_status(code, &v, 413, "RequestEntityTooLarge");
    // Without a Content-Length (chunked), the limit still holds.
    let chunks =
        futures::stream::iter((0..64).map(|_| Ok::<_, std::io::Error>(vec![b' '; 64 * 1024])));
    let resp = s
        .client
        .post(s.url(&pvcs("x")))
        .header("Content-Type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // The server is unharmed.
    let (code, _) = s.post(&pvcs("x"), &pvc("small", "1Gi")).await;
    assert_eq!(code, StatusCode::CREATED);
}

#[tokio::test]
async fn malformed_query_parameters_are_bad_requests() {
    let s = Server::start().await;
    for q in [
        "labelSelector=a%20in%20(",
        "labelSelector=%3D%3D",
        "fieldSelector=spec.unknownField%3Dx",
        "limit=ten",
        "continue=garbage",
        "resourceVersion=abc",
        "watch=perhaps",
    ] {
        let (code, v) = s.get(&format!("{}?{q}", pvcs("q"))).await;
        assert_status(code, &v, 400, "BadRequest");
    }
}

#[tokio::test]
async fn mismatched_names_and_namespaces_are_refused() {
    let s = Server::start().await;
    s.post(&pvcs("m"), &pvc("c", "1Gi")).await;
    let (code, v) = s
        .put(&format!("{}/c", pvcs("m")), &pvc("other", "1Gi"))
        .await;
    assert_status(code, &v, 400, "BadRequest");
    let mut wrong_ns = pvc("d", "1Gi");
    wrong_ns["metadata"]["namespace"] = json!("elsewhere");
    let (code, v) = s.post(&pvcs("m"), &wrong_ns).await;
    assert_status(code, &v, 400, "BadRequest");
}

#[tokio::test]
async fn unknown_fields_warn_by_default_and_fail_when_strict() {
    let s = Server::start().await;
    let mut body = pvc("u", "1Gi");
    body["spec"]["colour"] = json!("blue");
    let resp = s
        .client
        .post(s.url(&pvcs("u")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let warning = resp
        .headers()
        .get("warning")
        .and_then(|w| w.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(warning.contains("spec.colour"), "{warning}");
    body["metadata"]["name"] = json!("v");
    let (code, v) = s
        .post(&format!("{}?fieldValidation=Strict", pvcs("u")), &body)
        .await;
    assert_status(code, &v, 400, "BadRequest");
    assert!(v["message"].as_str().unwrap().contains("spec.colour"));
}

#[tokio::test]
async fn random_json_never_causes_a_server_error() {
    // A deterministic pseudo-random walk over shapes clients get wrong.
    let s = Server::start().await;
    let values = [
        json!(null),
        json!(true),
        json!(-1),
        json!(1.5e300),
        json!("x"),
        json!(""),
        json!([]),
        json!({}),
        json!([null]),
        json!({"a": {"b": []}}),
        json!("9999999999999999999999Ei"),
        json!("0.000000001"),
        json!(u64::MAX),
        json!("../../etc"),
        json!("\u{0000}"),
    ];
    let fields = [
        "/metadata/name",
        "/metadata/labels",
        "/metadata/annotations",
        "/metadata/finalizers",
        "/metadata/generateName",
        "/metadata/ownerReferences",
        "/spec",
        "/spec/accessModes",
        "/spec/resources/requests/storage",
        "/spec/selector",
        "/spec/volumeName",
        "/status",
        "/spec/dataSource",
        "/metadata/namespace",
        "/metadata/creationTimestamp",
    ];
    let mut n = 0;
    for (i, field) in fields.iter().enumerate() {
        for (j, value) in values.iter().enumerate() {
            let mut body = pvc(&format!("r{i}-{j}"), "1Gi");
            if let Some(slot) = pointer_mut_create(&mut body, field) {
                *slot = value.clone();
            }
            let (code, v) = s.post(&pvcs("rnd"), &body).await;
            assert!(
                code.is_success() || code.is_client_error(),
                "{field}={value}: {code} {v}"
            );
            n += 1;
        }
    }
    assert!(n > 200);
    let (code, _) = s.get("/healthz").await;
    assert_eq!(code, StatusCode::OK);
}

fn pointer_mut_create<'a>(v: &'a mut Value, pointer: &str) -> Option<&'a mut Value> {
    let mut cur = v;
    for part in pointer.split('/').skip(1) {
        if !cur.is_object() {
            *cur = json!({});
        }
        cur = cur
            .as_object_mut()?
            .entry(part.to_string())
            .or_insert(Value::Null);
    }
    Some(cur)
}
