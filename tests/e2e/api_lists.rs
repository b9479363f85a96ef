//! Lists: selectors, all-namespace lists, pagination.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

async fn seed(s: &Server) {
    for (ns, name, app, tier, class) in [
        ("a", "c1", "db", "gold", "fast"),
        ("a", "c2", "web", "gold", "slow"),
        ("b", "c3", "db", "silver", "fast"),
        ("b", "c4", "cache", "bronze", ""),
    ] {
        let mut body = pvc(name, "1Gi");
        body["metadata"]["labels"] = json!({"app": app, "tier": tier});
        body["spec"]["storageClassName"] = json!(class);
        let (code, v) = s.post(&pvcs(ns), &body).await;
        assert_eq!(code, StatusCode::CREATED, "{v}");
    }
}

#[tokio::test]
async fn label_selectors_filter_lists() {
    let s = Server::start().await;
    seed(&s).await;
    for (selector, expected) in [
        ("app%3Ddb", vec!["c1", "c3"]),
        ("app%3D%3Ddb", vec!["c1", "c3"]),
        ("app!%3Ddb", vec!["c2", "c4"]),
        ("tier%20in%20(gold,bronze)", vec!["c1", "c2", "c4"]),
        ("tier%20notin%20(gold)", vec!["c3", "c4"]),
        ("app,!missing", vec!["c1", "c2", "c3", "c4"]),
        ("missing", vec![]),
        ("app%3Ddb,tier%3Dsilver", vec!["c3"]),
    ] {
        let (code, list) = s
            .get(&format!(
                "/api/v1/persistentvolumeclaims?labelSelector={selector}"
            ))
            .await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(names(&list), expected, "{selector}");
    }
}

#[tokio::test]
async fn field_selectors_filter_lists() {
    let s = Server::start().await;
    seed(&s).await;
    for (selector, expected) in [
        ("metadata.name%3Dc2", vec!["c2"]),
        ("metadata.namespace%3Db", vec!["c3", "c4"]),
        ("spec.storageClassName%3Dfast", vec!["c1", "c3"]),
        ("spec.storageClassName!%3Dfast", vec!["c2", "c4"]),
        ("status.phase%3DPending", vec!["c1", "c2", "c3", "c4"]),
        ("status.phase%3DBound", vec![]),
        ("spec.volumeName%3D", vec!["c1", "c2", "c3", "c4"]),
    ] {
        let (code, list) = s
            .get(&format!(
                "/api/v1/persistentvolumeclaims?fieldSelector={selector}"
            ))
            .await;
        assert_eq!(code, StatusCode::OK, "{list}");
        assert_eq!(names(&list), expected, "{selector}");
    }
    // Pods by node, as an orchestrator or node agent asks.
    for (name, node) in [("p1", "n1"), ("p2", "n2")] {
        s.post(
            &pods("a"),
            &json!({"metadata": {"name": name}, "spec": {"nodeName": node}}),
        )
        .await;
    }
    let (_, list) = s.get("/api/v1/pods?fieldSelector=spec.nodeName%3Dn2").await;
    assert_eq!(names(&list), vec!["p2"]);
}

#[tokio::test]
async fn namespaced_lists_see_only_their_namespace() {
    let s = Server::start().await;
    seed(&s).await;
    let (_, a) = s.get(&pvcs("a")).await;
    assert_eq!(names(&a), vec!["c1", "c2"]);
    let (_, none) = s.get(&pvcs("nobody")).await;
    assert!(names(&none).is_empty());
}

#[tokio::test]
async fn pagination_walks_every_item_once() {
    let s = Server::start().await;
    for i in 0..25 {
        s.post(
            &pvcs(if i % 2 == 0 { "even" } else { "odd" }),
            &pvc(&format!("c{i:02}"), "1Gi"),
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    let mut list_rv = None;
    loop {
        let mut url = "/api/v1/persistentvolumeclaims?limit=4".to_string();
        if let Some(t) = &token {
            url.push_str(&format!("&continue={t}"));
        }
        let (code, page) = s.get(&url).await;
        assert_eq!(code, StatusCode::OK, "{page}");
        assert!(names(&page).len() <= 4);
        let rv = page["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            list_rv.get_or_insert(rv.clone()),
            &rv,
            "pages report the first page's version"
        );
        seen.extend(names(&page));
        pages += 1;
        token = page["metadata"]["continue"].as_str().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 7);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 25, "every item exactly once: {seen:?}");
    // Pagination composes with selectors.
    let (_, page) = s
        .get("/api/v1/persistentvolumeclaims?limit=100&fieldSelector=metadata.namespace%3Dodd")
        .await;
    assert_eq!(names(&page).len(), 12);
    assert!(page["metadata"]["continue"].is_null());
}
