//! Discovery, OpenAPI, tables, health and metrics: what tools read before they act.

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::*;

#[tokio::test]
async fn discovery_lists_every_kind_with_short_names_and_scope() {
    let s = Server::start().await;
    let (_, api) = s.get("/api").await;
    assert_eq!(api["versions"][0], "v1");
    let (_, core) = s.get("/api/v1").await;
    let find = |list: &Value, name: &str| -> Value {
        list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing from {list}"))
    };
    for (name, short, namespaced) in [
        ("persistentvolumes", "pv", false),
        ("persistentvolumeclaims", "pvc", true),
        ("nodes", "no", false),
        ("pods", "po", true),
        ("events", "ev", true),
    ] {
        let r = find(&core, name);
        assert_eq!(r["namespaced"], namespaced, "{name}");
        assert!(
            r["shortNames"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s == short),
            "{name}"
        );
        assert!(r["verbs"].as_array().unwrap().iter().any(|v| v == "watch"));
    }
    assert_eq!(
        find(&core, "persistentvolumeclaims/status")["verbs"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let (_, groups) = s.get("/apis").await;
    let group_names: Vec<&str> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        group_names,
        vec![
            "coordination.k8s.io",
            "snapshot.storage.k8s.io",
            "storage.k8s.io"
        ]
    );
    let (_, storage) = s.get("/apis/storage.k8s.io/v1").await;
    assert_eq!(find(&storage, "storageclasses")["shortNames"][0], "sc");
    assert_eq!(find(&storage, "volumeattachments")["namespaced"], false);
    let (_, coordination) = s.get("/apis/coordination.k8s.io/v1").await;
    assert_eq!(find(&coordination, "leases")["namespaced"], true);
    let (code, _) = s.get("/apis/apps/v1").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn aggregated_discovery_is_served_when_asked_for() {
    let s = Server::start().await;
    let accept =
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    for path in ["/api", "/apis"] {
        let resp = s
            .client
            .get(s.url(path))
            .header("Accept", accept)
            .send()
            .await
            .unwrap();
        let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert!(
            ct.contains("as=APIGroupDiscoveryList") && ct.contains("v=v2"),
            "{ct}"
        );
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["kind"], "APIGroupDiscoveryList");
        assert!(!v["items"].as_array().unwrap().is_empty());
    }
}

#[tokio::test]
async fn openapi_v3_documents_every_kind_for_kubectl() {
    let s = Server::start().await;
    let (_, root) = s.get("/openapi/v3").await;
    for gv in [
        "api/v1",
        "apis/storage.k8s.io/v1",
        "apis/coordination.k8s.io/v1",
        "apis/snapshot.storage.k8s.io/v1",
    ] {
        let url = root["paths"][gv]["serverRelativeURL"]
            .as_str()
            .unwrap_or_else(|| panic!("{gv} missing"));
        let (code, doc) = s.get(url).await;
        assert_eq!(code, StatusCode::OK);
        assert!(doc["paths"].as_object().is_some_and(|p| !p.is_empty()));
        // Every PATCH names fieldValidation, so kubectl lets the server validate.
        for (_, ops) in doc["paths"].as_object().unwrap() {
            if let Some(patch) = ops.get("patch") {
                assert!(
                    patch["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == "fieldValidation")
                );
                assert!(patch["x-kubernetes-group-version-kind"].is_object());
            }
        }
    }
    let (_, core) = s
        .get(
            root["paths"]["api/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap(),
        )
        .await;
    let pvc = &core["components"]["schemas"]["io.k8s.api.core.v1.PersistentVolumeClaim"];
    assert_eq!(
        pvc["x-kubernetes-group-version-kind"][0]["kind"],
        "PersistentVolumeClaim"
    );
}

#[tokio::test]
async fn tables_have_the_columns_kubectl_prints() {
    let s = Server::start().await;
    s.post(&pvcs("t"), &pvc("c", "1Gi")).await;
    let resp = s
        .client
        .get(s.url(&pvcs("t")))
        .header(
            "Accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .send()
        .await
        .unwrap();
    let t: Value = resp.json().await.unwrap();
    assert_eq!(t["kind"], "Table");
    let columns: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Name",
            "Status",
            "Volume",
            "Capacity",
            "Access Modes",
            "StorageClass",
            "VolumeAttributesClass",
            "Age",
            "VolumeMode"
        ]
    );
    let row = &t["rows"][0];
    assert_eq!(row["cells"][0], "c");
    assert_eq!(row["cells"][1], "Pending");
    assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(row["object"]["metadata"]["namespace"], "t");
}

#[tokio::test]
async fn health_version_and_metrics_answer() {
    let s = Server::start().await;
    for path in ["/healthz", "/readyz", "/livez"] {
        let (code, _) = s.get(path).await;
        assert_eq!(code, StatusCode::OK, "{path}");
    }
    let (_, v) = s.get("/version").await;
    assert_eq!(v["major"], "1");
    s.post(&pvcs("m"), &pvc("c", "1Gi")).await;
    s.get(&format!("{}/missing", pvcs("m"))).await;
    // Counted by whichever replica answered: the sum over replicas is the service's count.
    let created = s
        .counter(r#"stowage_apiserver_requests_total{verb="create",resource="persistentvolumeclaims",code="201"}"#)
        .await;
    assert_eq!(created, 1);
    let missing = s
        .counter(r#"stowage_apiserver_requests_total{verb="get",resource="persistentvolumeclaims",code="404"}"#)
        .await;
    assert_eq!(missing, 1);
    for text in s.metrics_of_each().await {
        assert!(text.contains("stowage_apiserver_request_duration_seconds_bucket"));
    }
}

/// Transparent huge pages are off in the server: with them, memory the allocator takes back and
/// reuses is zeroed again 2 MiB at a time inside requests (a tenth of the CPU, twice the p99).
#[tokio::test]
async fn the_server_runs_without_transparent_huge_pages() {
    let s = Server::start().await;
    let pid = s.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("THP_enabled:"))
        .expect("Linux reports THP_enabled in /proc/PID/status");
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
}

#[tokio::test]
async fn yaml_is_accepted_and_served() {
    let s = Server::start().await;
    let yaml = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: y\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: 2Gi\n";
    let (code, v) = s
        .raw(
            reqwest::Method::POST,
            &pvcs("yaml"),
            Some("application/yaml"),
            yaml.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let text = s
        .client
        .get(s.url(&format!("{}/y", pvcs("yaml"))))
        .header("Accept", "application/yaml")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("storage: 2Gi"), "{text}");
}
