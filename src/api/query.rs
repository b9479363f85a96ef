//! Query parameters of resource requests, parsed leniently like Kubernetes: unknown parameters
//! are ignored, malformed values of known ones are a 400.

use crate::error::{ApiError, ApiResult};
use crate::machinery::fields::FieldSelector;
use crate::machinery::labels::Selector;

#[derive(Clone, Debug, Default)]
pub struct Query {
    pub watch: bool,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub label_selector: Selector,
    pub field_selector: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub allow_watch_bookmarks: bool,
    pub send_initial_events: Option<bool>,
    pub dry_run: bool,
    pub field_manager: Option<String>,
    pub field_validation: FieldValidation,
    pub force: bool,
    pub include_object: IncludeObject,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    /// Unknown fields are dropped with a warning header (the Kubernetes default).
    #[default]
    Warn,
    Strict,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    #[default]
    Metadata,
    Object,
}

fn parse_bool(name: &str, v: &str) -> ApiResult<bool> {
    match v {
        "" | "1" | "true" | "True" | "TRUE" => Ok(true),
        "0" | "false" | "False" | "FALSE" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "invalid value for {name}: {v:?}: must be true or false"
        ))),
    }
}

impl Query {
    pub fn parse(raw: Option<&str>) -> ApiResult<Query> {
        let mut q = Query::default();
        let Some(raw) = raw else { return Ok(q) };
        for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
            let v = v.as_ref();
            match k.as_ref() {
                "watch" => q.watch = parse_bool("watch", v)?,
                "resourceVersion" => {
                    q.resource_version = Some(v.to_string()).filter(|s| !s.is_empty())
                }
                "resourceVersionMatch" => {
                    q.resource_version_match = Some(v.to_string()).filter(|s| !s.is_empty())
                }
                "labelSelector" => {
                    q.label_selector = Selector::parse(v).map_err(|e| {
                        ApiError::bad_request(format!("unable to parse requirement: {e}"))
                    })?
                }
                "fieldSelector" => {
                    q.field_selector = FieldSelector::parse(v).map_err(ApiError::bad_request)?
                }
                "limit" => {
                    let n: i64 = v.parse().map_err(|_| {
                        ApiError::bad_request(format!("invalid value for limit: {v:?}"))
                    })?;
                    q.limit = (n > 0).then_some(n as usize);
                }
                "continue" => q.continue_token = Some(v.to_string()).filter(|s| !s.is_empty()),
                "timeoutSeconds" => {
                    let n: u64 = v.parse().map_err(|_| {
                        ApiError::bad_request(format!("invalid value for timeoutSeconds: {v:?}"))
                    })?;
                    q.timeout_seconds = Some(n);
                }
                "allowWatchBookmarks" => q.allow_watch_bookmarks = parse_bool(&k, v)?,
                "sendInitialEvents" => q.send_initial_events = Some(parse_bool(&k, v)?),
                "dryRun" => match v {
                    "All" => q.dry_run = true,
                    "" => {}
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "unsupported dryRun value {other:?}: only \"All\" is supported"
                        )));
                    }
                },
                "fieldManager" => {
                    if v.len() > 128 || v.chars().any(|c| c.is_control()) {
                        return Err(ApiError::bad_request(
                            "fieldManager must be at most 128 printable characters",
                        ));
                    }
                    q.field_manager = Some(v.to_string()).filter(|s| !s.is_empty())
                }
                "fieldValidation" => {
                    q.field_validation = match v {
                        "Ignore" => FieldValidation::Ignore,
                        "Warn" | "" => FieldValidation::Warn,
                        "Strict" => FieldValidation::Strict,
                        other => {
                            return Err(ApiError::bad_request(format!(
                                "fieldValidation must be one of \"Ignore\", \"Warn\" or \"Strict\", got {other:?}"
                            )));
                        }
                    }
                }
                "force" => q.force = parse_bool("force", v)?,
                "includeObject" => {
                    q.include_object = match v {
                        "None" => IncludeObject::None,
                        "Metadata" | "" => IncludeObject::Metadata,
                        "Object" => IncludeObject::Object,
                        other => {
                            return Err(ApiError::bad_request(format!(
                                "includeObject must be None, Metadata or Object, got {other:?}"
                            )));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_parameters_are_parsed() {
        let q = Query::parse(Some(
            "watch=1&resourceVersion=10&labelSelector=app%3Ddb&limit=5&timeoutSeconds=3&dryRun=All&fieldManager=kubectl",
        ))
        .unwrap();
        assert!(q.watch);
        assert_eq!(q.resource_version.as_deref(), Some("10"));
        assert_eq!(q.limit, Some(5));
        assert_eq!(q.timeout_seconds, Some(3));
        assert!(q.dry_run);
        assert_eq!(q.field_manager.as_deref(), Some("kubectl"));
        assert!(!q.label_selector.is_everything());
    }

    #[test]
    fn malformed_values_are_bad_requests() {
        for bad in [
            "limit=abc",
            "watch=maybe",
            "timeoutSeconds=-1",
            "labelSelector=a%20in%20(",
            "fieldSelector=nonsense",
            "dryRun=Some",
            "fieldValidation=Loose",
        ] {
            let e = Query::parse(Some(bad)).unwrap_err();
            assert_eq!(e.code, 400, "{bad}");
        }
    }

    #[test]
    fn unknown_parameters_are_ignored() {
        assert!(Query::parse(Some("pretty=true&whatever=1")).is_ok());
    }
}
