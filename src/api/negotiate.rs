//! Content negotiation: what a client sent (Content-Type) and what it wants back (Accept).

use axum::http::HeaderMap;
use axum::http::header::{ACCEPT, CONTENT_TYPE};

use crate::error::{ApiError, ApiResult};

/// The representation of a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Json,
    Yaml,
    /// A `meta.k8s.io` Table, in the requested version (`v1` or `v1beta1`).
    Table {
        beta: bool,
    },
    /// Only metadata (`PartialObjectMetadata[List]`).
    Metadata,
}

const ACCEPTED: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/json;as=Table;v=v1;g=meta.k8s.io",
];

/// Parses `Accept`, choosing the first representation we can produce.
pub fn output(headers: &HeaderMap) -> ApiResult<Output> {
    let Some(accept) = headers.get(ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(Output::Json);
    };
    if accept.trim().is_empty() {
        return Ok(Output::Json);
    }
    for media in accept.split(',') {
        let mut parts = media.split(';').map(str::trim);
        let essence = parts.next().unwrap_or_default().to_ascii_lowercase();
        let mut as_ = None;
        let mut group = None;
        let mut version = None;
        for p in parts {
            if let Some((k, v)) = p.split_once('=') {
                match k.trim() {
                    "as" => as_ = Some(v.trim().to_string()),
                    "g" => group = Some(v.trim().to_string()),
                    "v" => version = Some(v.trim().to_string()),
                    _ => {}
                }
            }
        }
        let json_like = matches!(
            essence.as_str(),
            "application/json" | "*/*" | "application/*"
        );
        match (essence.as_str(), as_.as_deref()) {
            (_, Some("Table")) if json_like => {
                if group.as_deref() == Some("meta.k8s.io") {
                    match version.as_deref() {
                        Some("v1") => return Ok(Output::Table { beta: false }),
                        Some("v1beta1") => return Ok(Output::Table { beta: true }),
                        _ => continue,
                    }
                }
            }
            (_, Some("PartialObjectMetadata" | "PartialObjectMetadataList")) if json_like => {
                if group.as_deref() == Some("meta.k8s.io") {
                    return Ok(Output::Metadata);
                }
            }
            (_, Some(_)) => continue,
            ("application/yaml", None) => return Ok(Output::Yaml),
            (_, None) if json_like => return Ok(Output::Json),
            _ => continue,
        }
    }
    Err(ApiError::not_acceptable(ACCEPTED))
}

/// The body format of a create or update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Yaml,
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|v| !v.is_empty())
}

/// Create and update bodies: JSON or YAML. A missing Content-Type is JSON (the official Python
/// client sends none).
pub fn body_format(headers: &HeaderMap) -> ApiResult<BodyFormat> {
    match content_type(headers).as_deref() {
        None | Some("application/json") | Some("*/*") => Ok(BodyFormat::Json),
        Some("application/yaml") | Some("application/x-yaml") | Some("text/yaml") => {
            Ok(BodyFormat::Yaml)
        }
        Some(other) => Err(ApiError::unsupported_media_type(
            other,
            &["application/json", "application/yaml"],
        )),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchFormat {
    Json,
    Merge,
    Strategic,
    Apply,
}

pub const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

pub fn patch_format(headers: &HeaderMap) -> ApiResult<PatchFormat> {
    match content_type(headers).as_deref() {
        Some("application/json-patch+json") => Ok(PatchFormat::Json),
        Some("application/merge-patch+json") => Ok(PatchFormat::Merge),
        Some("application/strategic-merge-patch+json") => Ok(PatchFormat::Strategic),
        Some("application/apply-patch+yaml") | Some("application/apply-patch+json") => {
            Ok(PatchFormat::Apply)
        }
        other => Err(ApiError::unsupported_media_type(
            other.unwrap_or("none"),
            PATCH_TYPES,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn accept(v: &str) -> ApiResult<Output> {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_str(v).unwrap());
        output(&h)
    }

    #[test]
    fn kubectl_table_request_gets_a_table() {
        assert_eq!(
            accept(
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
            ),
            Ok(Output::Table { beta: false })
        );
    }

    #[test]
    fn protobuf_first_falls_back_to_json() {
        assert_eq!(
            accept("application/vnd.kubernetes.protobuf, application/json"),
            Ok(Output::Json)
        );
        assert!(accept("application/vnd.kubernetes.protobuf").is_err());
    }

    #[test]
    fn yaml_and_wildcards_are_understood() {
        assert_eq!(accept("application/yaml"), Ok(Output::Yaml));
        assert_eq!(accept("*/*"), Ok(Output::Json));
    }
}
