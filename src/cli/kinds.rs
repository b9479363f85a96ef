//! Kinds and paths as a person types them: `pvc`, `sc/fast`, `persistentvolumeclaims data`.

use super::client::{CliError, CliResult};
use crate::resources::{Kind, kind_by_any_name};

pub fn resolve(name: &str) -> CliResult<Kind> {
    kind_by_any_name(name).ok_or_else(|| {
        CliError::usage(format!(
            "unknown resource type {name:?} (try sc, pv, pvc, va, nodes, pods, events, leases)"
        ))
    })
}

fn prefix(kind: Kind) -> String {
    let i = kind.info();
    if i.group.is_empty() {
        format!("/api/{}", i.version)
    } else {
        format!("/apis/{}/{}", i.group, i.version)
    }
}

/// The collection path; `namespace` `None` for all namespaces (or cluster-scoped kinds).
pub fn collection(kind: Kind, namespace: Option<&str>) -> String {
    let i = kind.info();
    match (i.namespaced, namespace) {
        (true, Some(ns)) => format!("{}/namespaces/{ns}/{}", prefix(kind), i.plural),
        _ => format!("{}/{}", prefix(kind), i.plural),
    }
}

pub fn item(kind: Kind, namespace: &str, name: &str) -> String {
    let ns = kind.info().namespaced.then_some(namespace);
    format!("{}/{name}", collection(kind, ns))
}

/// `kind/name` as `-o name` prints it.
pub fn display_name(kind: Kind, name: &str) -> String {
    let i = kind.info();
    if i.group.is_empty() {
        format!("{}/{name}", i.singular)
    } else {
        format!("{}.{}/{name}", i.singular, i.group)
    }
}

/// Splits `kind/name` or `kind` plus separate names into a kind and names.
pub fn parse_target(first: &str, rest: &[String]) -> CliResult<(Kind, Vec<String>)> {
    match first.split_once('/') {
        Some((kind, name)) => {
            let mut names = vec![name.to_string()];
            names.extend(rest.iter().cloned());
            Ok((resolve(kind)?, names))
        }
        None => Ok((resolve(first)?, rest.to_vec())),
    }
}
