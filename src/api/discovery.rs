//! Discovery: which groups, versions and resources this server has, in both the classic form
//! (`APIVersions`, `APIGroupList`, `APIResourceList`) and the aggregated form kubectl prefers
//! (`apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`), which saves it a round trip per group.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::encode;
use crate::error::ApiError;
use crate::resources::{Kind, KindInfo};

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];
const NAMESPACE_VERBS: &[&str] = &["create", "get", "list"];
const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Group → versions → kinds, in a stable order. The core group is "".
fn groups() -> BTreeMap<&'static str, BTreeMap<&'static str, Vec<&'static KindInfo>>> {
    let mut g: BTreeMap<_, BTreeMap<_, Vec<_>>> = BTreeMap::new();
    for k in Kind::ALL {
        let i = k.info();
        g.entry(i.group)
            .or_default()
            .entry(i.version)
            .or_default()
            .push(i);
    }
    g
}

fn wants_aggregated(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            a.split(',').next().is_some_and(|first| {
                first.contains("as=APIGroupDiscoveryList") && first.contains("v=v2")
            })
        })
}

fn aggregated_response(items: Vec<Value>) -> Response {
    let body = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    });
    let mut resp = encode::json_value(StatusCode::OK, &body);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(AGGREGATED));
    resp
}

fn aggregated_group(group: &str, versions: &BTreeMap<&str, Vec<&KindInfo>>) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|(version, kinds)| {
            let mut resources: Vec<Value> = kinds
                .iter()
                .map(|i| {
                    let mut r = json!({
                        "resource": i.plural,
                        "responseKind": {"group": i.group, "version": i.version, "kind": i.kind},
                        "scope": if i.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": i.singular,
                        "verbs": VERBS,
                    });
                    if !i.short_names.is_empty() {
                        r["shortNames"] = json!(i.short_names);
                    }
                    if !i.categories.is_empty() {
                        r["categories"] = json!(i.categories);
                    }
                    if i.has_status {
                        r["subresources"] = json!([{
                            "subresource": "status",
                            "responseKind": {"group": i.group, "version": i.version, "kind": i.kind},
                            "verbs": STATUS_VERBS,
                        }]);
                    }
                    r
                })
                .collect();
            if group.is_empty() {
                resources.push(json!({
                    "resource": "namespaces",
                    "responseKind": {"group": "", "version": "v1", "kind": "Namespace"},
                    "scope": "Cluster",
                    "singularResource": "namespace",
                    "verbs": NAMESPACE_VERBS,
                    "shortNames": ["ns"],
                }));
            }
            resources.sort_by(|a, b| a["resource"].as_str().cmp(&b["resource"].as_str()));
            json!({"version": version, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": group}, "versions": versions})
}

/// `GET /api`.
pub fn core_versions(headers: &HeaderMap) -> Response {
    let groups = groups();
    if wants_aggregated(headers) {
        return aggregated_response(vec![aggregated_group("", &groups[""])]);
    }
    encode::json_value(
        StatusCode::OK,
        &json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
        }),
    )
}

fn group_json(group: &str, versions: &BTreeMap<&str, Vec<&KindInfo>>) -> Value {
    let vs: Vec<Value> = versions
        .keys()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": vs, "preferredVersion": vs[0]})
}

/// `GET /apis`.
pub fn group_list(headers: &HeaderMap) -> Response {
    let groups = groups();
    let named = groups.iter().filter(|(g, _)| !g.is_empty());
    if wants_aggregated(headers) {
        return aggregated_response(named.map(|(g, v)| aggregated_group(g, v)).collect());
    }
    encode::json_value(
        StatusCode::OK,
        &json!({
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": named.map(|(g, v)| group_json(g, v)).collect::<Vec<_>>(),
        }),
    )
}

/// `GET /apis/{group}`.
pub fn group(group: &str) -> Response {
    match groups().get(group).filter(|_| !group.is_empty()) {
        Some(versions) => {
            let mut g = group_json(group, versions);
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            encode::json_value(StatusCode::OK, &g)
        }
        None => axum::response::IntoResponse::into_response(ApiError::route_not_found()),
    }
}

/// `GET /api/v1` or `GET /apis/{group}/{version}`.
pub fn resource_list(group: &str, version: &str) -> Response {
    let groups = groups();
    let Some(kinds) = groups.get(group).and_then(|v| v.get(version)) else {
        return axum::response::IntoResponse::into_response(ApiError::route_not_found());
    };
    let mut resources = Vec::new();
    for i in kinds {
        let mut r = json!({
            "name": i.plural,
            "singularName": i.singular,
            "namespaced": i.namespaced,
            "kind": i.kind,
            "verbs": VERBS,
        });
        if !i.short_names.is_empty() {
            r["shortNames"] = json!(i.short_names);
        }
        if !i.categories.is_empty() {
            r["categories"] = json!(i.categories);
        }
        resources.push(r);
        if i.has_status {
            resources.push(json!({
                "name": format!("{}/status", i.plural),
                "singularName": "",
                "namespaced": i.namespaced,
                "kind": i.kind,
                "verbs": STATUS_VERBS,
            }));
        }
    }
    if group.is_empty() {
        resources.push(json!({
            "name": "namespaces",
            "singularName": "namespace",
            "namespaced": false,
            "kind": "Namespace",
            "verbs": NAMESPACE_VERBS,
            "shortNames": ["ns"],
        }));
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    encode::json_value(
        StatusCode::OK,
        &json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        }),
    )
}

/// The Kubernetes version Stowage speaks (its API is that of this release).
pub const KUBERNETES_MINOR: &str = "37";

/// `GET /version`.
pub fn version() -> Response {
    encode::json_value(
        StatusCode::OK,
        &json!({
            "major": "1",
            "minor": KUBERNETES_MINOR,
            "gitVersion": format!("v1.{KUBERNETES_MINOR}.0-stowage.{}", env!("CARGO_PKG_VERSION")),
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "",
            "goVersion": "",
            "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
        }),
    )
}
