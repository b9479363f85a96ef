//! `/openapi/v3`: OpenAPI documents per group-version, generated from the k8s-openapi types.
//!
//! kubectl reads them for three things, and each shapes what is here:
//! - `explain`: schemas carry `x-kubernetes-group-version-kind` (a list), and some operation on a
//!   resource path carries the same GVK (an object);
//! - server-side field validation: the PATCH operation of each kind lists a `fieldValidation`
//!   parameter, which tells kubectl to let the server validate instead of downloading
//!   `/openapi/v2` to validate itself;
//! - strategic merge: the PATCH request body lists `application/strategic-merge-patch+json`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::discovery::KUBERNETES_MINOR;
use super::encode;
use super::negotiate::PATCH_TYPES;
use crate::error::ApiError;
use crate::resources::schema::schemas;
use crate::resources::{Kind, KindInfo};

/// The group-version path key (`api/v1`, `apis/storage.k8s.io/v1`).
fn gv_key(i: &KindInfo) -> String {
    if i.group.is_empty() {
        format!("api/{}", i.version)
    } else {
        format!("apis/{}/{}", i.group, i.version)
    }
}

struct Documents {
    /// Group-version key → (document, content hash).
    docs: BTreeMap<String, (Value, String)>,
}

fn documents() -> &'static Documents {
    static DOCS: OnceLock<Documents> = OnceLock::new();
    DOCS.get_or_init(build)
}

fn param(name: &str, location: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": location,
        "description": description,
        "schema": {"type": "string", "uniqueItems": true},
        "required": location == "path",
    })
}

fn write_params() -> Vec<Value> {
    vec![
        param(
            "dryRun",
            "query",
            "When present, indicates that modifications should not be persisted.",
        ),
        param(
            "fieldManager",
            "query",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
        ),
        param(
            "fieldValidation",
            "query",
            "Ignore, Warn (default) or Strict: how unknown fields in the body are treated.",
        ),
    ]
}

fn gvk(i: &KindInfo) -> Value {
    json!({"group": i.group, "version": i.version, "kind": i.kind})
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn operation(
    i: &KindInfo,
    action: &str,
    id: &str,
    params: Vec<Value>,
    body: Option<Value>,
    root: &str,
) -> Value {
    let mut op = json!({
        "operationId": id,
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": schema_ref(root)}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(i),
    });
    if let Some(b) = body {
        op["requestBody"] = b;
    }
    op
}

fn paths_for(i: &KindInfo, root: &str) -> Vec<(String, Value)> {
    let prefix = format!("/{}", gv_key(i));
    let collection = if i.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", i.plural)
    } else {
        format!("{prefix}/{}", i.plural)
    };
    let item = format!("{collection}/{{name}}");
    let mut path_params = vec![param("name", "path", "name of the object")];
    if i.namespaced {
        path_params.push(param("namespace", "path", "object name and auth scope"));
    }
    let object_body = json!({"required": true, "content": {"*/*": {"schema": schema_ref(root)}}});
    let patch_body = json!({
        "required": true,
        "content": PATCH_TYPES.iter().map(|t| (t.to_string(), json!({"schema": {"type": "object"}}))).collect::<Map<_, _>>(),
    });
    let k = i.kind;
    let mut out = vec![(
        collection.clone(),
        json!({
            "get": operation(i, "list", &format!("list{k}"), vec![], None, root),
            "post": operation(i, "post", &format!("create{k}"), write_params(), Some(object_body.clone()), root),
        }),
    )];
    let mut item_ops = json!({
        "get": operation(i, "get", &format!("read{k}"), vec![], None, root),
        "put": operation(i, "put", &format!("replace{k}"), write_params(), Some(object_body.clone()), root),
        "patch": operation(i, "patch", &format!("patch{k}"), write_params(), Some(patch_body.clone()), root),
        "delete": operation(i, "delete", &format!("delete{k}"), vec![param("dryRun", "query", "When present, indicates that modifications should not be persisted.")], None, root),
    });
    item_ops["parameters"] = json!(path_params);
    out.push((item.clone(), item_ops));
    if i.has_status {
        let mut status_ops = json!({
            "get": operation(i, "get", &format!("read{k}Status"), vec![], None, root),
            "put": operation(i, "put", &format!("replace{k}Status"), write_params(), Some(object_body), root),
            "patch": operation(i, "patch", &format!("patch{k}Status"), write_params(), Some(patch_body), root),
        });
        status_ops["parameters"] = json!(path_params);
        out.push((format!("{item}/status"), status_ops));
    }
    out
}

fn build() -> Documents {
    let s = schemas();
    let mut by_gv: BTreeMap<String, Vec<Kind>> = BTreeMap::new();
    for k in Kind::ALL {
        by_gv.entry(gv_key(k.info())).or_default().push(*k);
    }
    let mut docs = BTreeMap::new();
    for (key, kinds) in by_gv {
        let mut schemas_out: Map<String, Value> = s.definitions.clone();
        let mut paths = Map::new();
        for k in &kinds {
            let i = k.info();
            let root = &s.roots[k];
            if let Some(Value::Object(schema)) = schemas_out.get_mut(root) {
                schema.insert("x-kubernetes-group-version-kind".into(), json!([gvk(i)]));
            }
            for (p, v) in paths_for(i, root) {
                paths.insert(p, v);
            }
        }
        let doc = json!({
            "openapi": "3.0.0",
            "info": {"title": "Stowage", "version": format!("v1.{KUBERNETES_MINOR}.0")},
            "paths": paths,
            "components": {"schemas": schemas_out},
        });
        let hash = format!(
            "{:016X}",
            fnv1a(&serde_json::to_vec(&doc).unwrap_or_default())
        );
        docs.insert(key, (doc, hash));
    }
    Documents { docs }
}

/// A stable content hash for the `?hash=` cache key kubectl passes back.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// `GET /openapi/v3`.
pub fn root() -> Response {
    let paths: Map<String, Value> = documents()
        .docs
        .iter()
        .map(|(k, (_, hash))| {
            (
                k.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{k}?hash={hash}")}),
            )
        })
        .collect();
    encode::json_value(StatusCode::OK, &json!({"paths": paths}))
}

/// `GET /openapi/v3/{group-version}`.
pub fn document(key: &str) -> Response {
    match documents().docs.get(key.trim_matches('/')) {
        Some((doc, _)) => encode::json_value(StatusCode::OK, doc),
        None => ApiError::route_not_found().into_response(),
    }
}
