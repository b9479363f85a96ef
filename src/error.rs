//! The one error type of the API: a Kubernetes `Status`.
//!
//! Error policy: everything that can reach a client (the HTTP layer, the registry, the store's
//! write path) returns [`ApiError`], whose variants are the Status reasons Kubernetes clients
//! understand. Internal failures (SQLite, I/O) become an opaque 500 whose detail is logged, not
//! returned. Controllers and providers use their own typed errors and `anyhow` for context.

use std::fmt;

use serde_json::{Value, json};

use crate::machinery::validation::FieldError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    pub reason: String,
    pub message: String,
    pub field: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
    /// Boxed: errors travel through every `Result` of the request path, so they stay small.
    details: Option<Box<Details>>,
}

/// `details` of a Status: the object concerned and, for 422, one cause per field error.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Details {
    name: Option<String>,
    group: Option<String>,
    /// The resource, e.g. `persistentvolumeclaims` (or the Kind, for Invalid).
    kind: Option<String>,
    causes: Vec<Cause>,
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Formats `plural.group` as Kubernetes does in messages (`storageclasses.storage.k8s.io`).
pub fn qualified_resource(plural: &str, group: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            retry_after: None,
            details: None,
        }
    }

    fn with_details(mut self, plural: &str, group: &str, name: &str) -> Self {
        self.details = Some(Box::new(Details {
            name: Some(name.to_string()).filter(|n| !n.is_empty()),
            group: Some(group.to_string()).filter(|g| !g.is_empty()),
            kind: Some(plural.to_string()),
            causes: Vec::new(),
        }));
        self
    }

    pub fn not_found(plural: &str, group: &str, name: &str) -> Self {
        let res = qualified_resource(plural, group);
        ApiError::new(404, "NotFound", format!("{res} \"{name}\" not found"))
            .with_details(plural, group, name)
    }

    pub fn already_exists(plural: &str, group: &str, name: &str) -> Self {
        let res = qualified_resource(plural, group);
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{res} \"{name}\" already exists"),
        )
        .with_details(plural, group, name)
    }

    pub fn conflict(plural: &str, group: &str, name: &str, why: &str) -> Self {
        let res = qualified_resource(plural, group);
        ApiError::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {res} \"{name}\": {why}"),
        )
        .with_details(plural, group, name)
    }

    pub fn stale(plural: &str, group: &str, name: &str) -> Self {
        Self::conflict(
            plural,
            group,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 Invalid with one cause per field error. `kind` is the object kind (`PersistentVolumeClaim`).
    pub fn invalid(kind: &str, group: &str, name: &str, errors: &[FieldError]) -> Self {
        let summary = match errors {
            [one] => one.to_string(),
            many => format!(
                "[{}]",
                many.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let mut e = ApiError::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {summary}"),
        );
        e.details = Some(Box::new(Details {
            name: Some(name.to_string()),
            group: Some(group.to_string()).filter(|g| !g.is_empty()),
            kind: Some(kind.to_string()),
            causes: errors
                .iter()
                .map(|fe| Cause {
                    reason: fe.kind.cause_reason().to_string(),
                    message: fe.message(),
                    field: fe.field.clone(),
                })
                .collect(),
        }));
        e
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(403, "Forbidden", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(401, "Unauthorized", message)
    }

    pub fn route_not_found() -> Self {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn method_not_allowed() -> Self {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    pub fn not_acceptable(accepted: &[&str]) -> Self {
        ApiError::new(
            406,
            "NotAcceptable",
            format!(
                "only the following media types are accepted: {}",
                accepted.join(", ")
            ),
        )
    }

    pub fn gone(message: impl Into<String>) -> Self {
        ApiError::new(410, "Expired", message)
    }

    pub fn too_large(limit: usize) -> Self {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// 413 for what a request would make, not only what it sent: an object over the stored
    /// size limit, a patch that copies too much, a YAML document that expands too far.
    pub fn entity_too_large(message: impl Into<String>) -> Self {
        ApiError::new(413, "RequestEntityTooLarge", message)
    }

    pub fn unsupported_media_type(content_type: &str, accepted: &[&str]) -> Self {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type}) - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
    }

    pub fn too_many_requests(message: impl Into<String>, retry_after: u64) -> Self {
        let mut e = ApiError::new(429, "TooManyRequests", message);
        e.retry_after = Some(retry_after);
        e
    }

    /// A 500 whose detail stays in the log; the client sees a generic message.
    pub fn internal(detail: impl fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        ApiError::new(
            500,
            "InternalError",
            "an internal error occurred; the server log has the details",
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = ApiError::new(503, "ServiceUnavailable", message);
        e.retry_after = Some(1);
        e
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        ApiError::new(504, "Timeout", message)
    }

    /// The field causes of a 422.
    pub fn causes(&self) -> &[Cause] {
        self.details.as_ref().map_or(&[], |d| d.causes.as_slice())
    }

    pub fn is_not_found(&self) -> bool {
        self.code == 404
    }

    pub fn is_conflict(&self) -> bool {
        self.code == 409 && self.reason == "Conflict"
    }

    pub fn is_already_exists(&self) -> bool {
        self.reason == "AlreadyExists"
    }

    /// The `Status` object, as JSON.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        let mut details = serde_json::Map::new();
        if let Some(d) = &self.details {
            if let Some(n) = &d.name {
                details.insert("name".into(), json!(n));
            }
            if let Some(g) = &d.group {
                details.insert("group".into(), json!(g));
            }
            if let Some(k) = &d.kind {
                details.insert("kind".into(), json!(k));
            }
            if !d.causes.is_empty() {
                details.insert(
                    "causes".into(),
                    d.causes
                        .iter()
                        .map(
                            |c| json!({"reason": c.reason, "message": c.message, "field": c.field}),
                        )
                        .collect(),
                );
            }
        }
        if let Some(r) = self.retry_after {
            details.insert("retryAfterSeconds".into(), json!(r));
        }
        if !details.is_empty() {
            status["details"] = Value::Object(details);
        }
        status
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.reason, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machinery::validation::{FieldErrors, Path};

    #[test]
    fn not_found_names_the_qualified_resource() {
        let e = ApiError::not_found("storageclasses", "storage.k8s.io", "fast");
        assert_eq!(
            e.message,
            "storageclasses.storage.k8s.io \"fast\" not found"
        );
        let s = e.to_status();
        assert_eq!(s["code"], 404);
        assert_eq!(s["details"]["kind"], "storageclasses");
        assert_eq!(s["details"]["group"], "storage.k8s.io");
    }

    #[test]
    fn invalid_lists_every_cause() {
        let mut errs = FieldErrors::new();
        errs.required(&Path::root("spec").child("accessModes"), "");
        errs.required(&Path::root("spec").child("resources"), "");
        let e = ApiError::invalid("PersistentVolumeClaim", "", "c", &errs.0);
        assert_eq!(
            e.message,
            "PersistentVolumeClaim \"c\" is invalid: [spec.accessModes: Required value, spec.resources: Required value]"
        );
        let s = e.to_status();
        assert_eq!(s["details"]["causes"][0]["field"], "spec.accessModes");
        assert_eq!(s["details"]["causes"][0]["reason"], "FieldValueRequired");
    }
}
