//! What a resource URL names: a kind, a namespace, a name and a subresource, parsed from the
//! path after `/api/v1/` or `/apis/{group}/{version}/`. Below the API and auth layers, which
//! both speak of it.

use super::{Kind, Subresource, kind_for_plural};
use crate::error::{ApiError, ApiResult};

/// What a resource URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: Kind,
    /// The namespace in the path; `None` for cluster-scoped kinds and all-namespace lists.
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// `/status`, for the kinds that have it.
    pub subresource: Option<Subresource>,
}

/// Parses the path after `/api/v1/` or `/apis/{group}/{version}/`.
pub fn parse_target(group: &str, version: &str, rest: &str) -> ApiResult<Target> {
    let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(ApiError::route_not_found());
    }
    let (namespace, rest) = match segments.as_slice() {
        ["namespaces", ns, plural, tail @ ..] => (Some(ns.to_string()), {
            let mut v = vec![*plural];
            v.extend_from_slice(tail);
            v
        }),
        other => (None, other.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(name.to_string()), None),
        [plural, name, sub] => (*plural, Some(name.to_string()), Some(sub.to_string())),
        _ => return Err(ApiError::route_not_found()),
    };
    let kind = kind_for_plural(group, version, plural).ok_or_else(ApiError::route_not_found)?;
    let info = kind.info();
    if namespace.is_some() && !info.namespaced {
        return Err(ApiError::route_not_found());
    }
    if info.namespaced && namespace.is_none() && name.is_some() {
        return Err(ApiError::route_not_found());
    }
    let subresource = match sub.as_deref() {
        None => None,
        Some("status") if info.has_status => Some(Subresource::Status),
        Some(_) => return Err(ApiError::route_not_found()),
    };
    Ok(Target {
        kind,
        namespace,
        name,
        subresource,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_to_kinds_namespaces_and_subresources() {
        let t = parse_target(
            "",
            "v1",
            "namespaces/team-a/persistentvolumeclaims/data/status",
        )
        .unwrap();
        assert_eq!(t.kind, Kind::PersistentVolumeClaim);
        assert_eq!(t.namespace.as_deref(), Some("team-a"));
        assert_eq!(t.name.as_deref(), Some("data"));
        assert_eq!(t.subresource, Some(Subresource::Status));
        let t = parse_target("storage.k8s.io", "v1", "storageclasses").unwrap();
        assert_eq!(t.kind, Kind::StorageClass);
        assert!(t.name.is_none());
        let all = parse_target("", "v1", "pods").unwrap();
        assert!(all.namespace.is_none());
    }

    #[test]
    fn impossible_paths_are_not_found() {
        for (g, p) in [
            ("", "namespaces/a/storageclasses"),
            ("storage.k8s.io", "namespaces/a/storageclasses/x"),
            ("", "pods/name"),
            ("", "persistentvolumes/x/scale"),
            ("storage.k8s.io", "storageclasses/x/status"),
            ("", "widgets"),
            ("", "persistentvolumes/a/b/c"),
            ("", "persistentvolumes//x"),
        ] {
            assert_eq!(parse_target(g, "v1", p).unwrap_err().code, 404, "{p}");
        }
    }
}
