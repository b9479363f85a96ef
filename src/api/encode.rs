//! Rendering objects, lists, tables and errors into HTTP responses.
//!
//! Objects are kept serialized in the store, so a GET or a list is mostly concatenation of
//! ready bytes; only tables, metadata-only and YAML output serialize anew.

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::negotiate::Output;
use super::query::IncludeObject;
use crate::error::ApiError;
use crate::resources::{AnyObject, Kind, KindStrategy};
use crate::store::{Rv, Stored};

pub const JSON: &str = "application/json";
pub const YAML: &str = "application/yaml";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (
            status,
            [(header::CONTENT_TYPE, JSON)],
            serde_json::to_vec(&self.to_status()).unwrap_or_default(),
        )
            .into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

fn bytes_response(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

pub fn json_value(status: StatusCode, v: &Value) -> Response {
    bytes_response(status, JSON, serde_json::to_vec(v).unwrap_or_default())
}

fn to_yaml(v: &Value) -> Vec<u8> {
    serde_yaml_ng::to_string(v).unwrap_or_default().into_bytes()
}

/// A JSON value in the requested format (JSON or YAML).
pub fn value_as(status: StatusCode, v: &Value, output: Output) -> Response {
    match output {
        Output::Yaml => bytes_response(status, YAML, to_yaml(v)),
        _ => json_value(status, v),
    }
}

fn partial_metadata(obj: &AnyObject, beta: bool) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": if beta { "meta.k8s.io/v1beta1" } else { "meta.k8s.io/v1" },
        "metadata": serde_json::to_value(obj.meta()).unwrap_or(Value::Null),
    })
}

/// One object in the requested representation.
pub fn object(
    status: StatusCode,
    stored: &Stored,
    output: Output,
    include: IncludeObject,
) -> Response {
    match output {
        Output::Json => bytes_response(status, JSON, stored.json.to_vec()),
        Output::Yaml => {
            let v: Value = serde_json::from_slice(&stored.json).unwrap_or(Value::Null);
            bytes_response(status, YAML, to_yaml(&v))
        }
        Output::Metadata => json_value(status, &partial_metadata(&stored.object(), false)),
        Output::Table { beta } => json_value(
            status,
            &table(stored.kind, &[stored], None, None, beta, include, true),
        ),
    }
}

/// A list in the requested representation. `rv` is the list's resourceVersion.
pub fn list(
    kind: Kind,
    items: &[Arc<Stored>],
    rv: Rv,
    continue_token: Option<String>,
    remaining: Option<i64>,
    output: Output,
    include: IncludeObject,
) -> Response {
    let info = kind.info();
    match output {
        Output::Json | Output::Yaml => {
            let mut meta = json!({"resourceVersion": rv.to_string()});
            if let Some(c) = &continue_token {
                meta["continue"] = json!(c);
            }
            if let Some(r) = remaining {
                meta["remainingItemCount"] = json!(r);
            }
            let mut body =
                Vec::with_capacity(items.iter().map(|i| i.json.len() + 1).sum::<usize>() + 256);
            body.extend_from_slice(
                format!(
                    "{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
                    info.list_kind, info.api_version, meta
                )
                .as_bytes(),
            );
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(&item.json);
            }
            body.extend_from_slice(b"]}");
            if output == Output::Yaml {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                bytes_response(StatusCode::OK, YAML, to_yaml(&v))
            } else {
                bytes_response(StatusCode::OK, JSON, body)
            }
        }
        Output::Metadata => {
            let mut meta = json!({"resourceVersion": rv.to_string()});
            if let Some(c) = &continue_token {
                meta["continue"] = json!(c);
            }
            json_value(
                StatusCode::OK,
                &json!({
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": meta,
                    "items": items.iter().map(|i| partial_metadata(&i.object(), false)).collect::<Vec<_>>(),
                }),
            )
        }
        Output::Table { beta } => {
            let refs: Vec<&Stored> = items.iter().map(|s| s.as_ref()).collect();
            json_value(
                StatusCode::OK,
                &table(kind, &refs, Some(rv), continue_token, beta, include, true),
            )
        }
    }
}

/// A `meta.k8s.io` Table of `items`. `with_columns` is false for watch events after the first.
pub fn table(
    kind: Kind,
    items: &[&Stored],
    rv: Option<Rv>,
    continue_token: Option<String>,
    beta: bool,
    include: IncludeObject,
    with_columns: bool,
) -> Value {
    crate::with_kind!(kind, T => table_of::<T>(items, rv, continue_token, beta, include, with_columns))
}

fn table_of<T: KindStrategy>(
    items: &[&Stored],
    rv: Option<Rv>,
    continue_token: Option<String>,
    beta: bool,
    include: IncludeObject,
    with_columns: bool,
) -> Value {
    let now = jiff::Timestamp::now();
    let rows: Vec<Value> = items
        .iter()
        .map(|s| {
            let obj: &T = &s.typed();
            let mut row = json!({"cells": obj.table_row(now)});
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => row["object"] = partial_metadata(&s.object(), beta),
                IncludeObject::Object => {
                    row["object"] = serde_json::from_slice(&s.json).unwrap_or(Value::Null)
                }
            }
            row
        })
        .collect();
    let mut meta = json!({});
    if let Some(rv) = rv {
        meta["resourceVersion"] = json!(rv.to_string());
    }
    if let Some(c) = continue_token {
        meta["continue"] = json!(c);
    }
    let mut t = json!({
        "kind": "Table",
        "apiVersion": if beta { "meta.k8s.io/v1beta1" } else { "meta.k8s.io/v1" },
        "metadata": meta,
        "rows": rows,
    });
    if with_columns {
        t["columnDefinitions"] = T::table_columns().iter().map(|c| c.definition()).collect();
    }
    t
}

/// The `Status` a successful delete of a kind with no object to return would send; also used
/// by deletecollection.
pub fn success_status(details: Value) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}

/// Adds a `Warning` header (RFC 7234 style, as Kubernetes sends them).
pub fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - {}", quoted_warning(w));
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

/// The longest warning text sent, in characters (as Kubernetes truncates them): a warning
/// may quote what a client sent, and a header line must stay small.
const MAX_WARNING_CHARS: usize = 256;

/// `s` as the quoted text of a `Warning` header, as Kubernetes writes it and client-go reads
/// it: UTF-8 as it is, `"` and `\` escaped with a backslash, control characters (which no
/// header may carry) as spaces, and at most [`MAX_WARNING_CHARS`] characters.
fn quoted_warning(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(4 * MAX_WARNING_CHARS) + 2);
    out.push('"');
    let mut chars = s.chars();
    for c in chars.by_ref().take(MAX_WARNING_CHARS) {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    if chars.next().is_some() {
        out.push('…');
    }
    out.push('"');
    out
}

/// A response with no body other than the bytes given (used by discovery and health).
pub fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(warning: &str) -> String {
        let resp = with_warnings(text(StatusCode::OK, ""), &[warning.to_string()]);
        let v = resp.headers().get(header::WARNING).expect("a warning");
        String::from_utf8(v.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn warnings_of_any_text_become_header_values_as_kubernetes_writes_them() {
        assert_eq!(
            sent("io1 IOPS are 100–64000 for \"fast\" \\ 🚀"),
            "299 - \"io1 IOPS are 100–64000 for \\\"fast\\\" \\\\ 🚀\""
        );
        // No control character reaches the header (DEL and newlines included).
        assert_eq!(sent("a\u{7f}b\r\nc"), "299 - \"a b  c\"");
        // A warning quoting a huge parameter stays one short line.
        let long = sent(&"x".repeat(100_000));
        assert_eq!(
            long.chars().count(),
            "299 - \"\"".len() + MAX_WARNING_CHARS + 1
        );
        assert!(long.ends_with("x…\""));
    }
}
