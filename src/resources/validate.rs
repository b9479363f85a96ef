//! Validation rules shared by several kinds: metadata, access modes, quantities, node selectors.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelector, NodeSelectorRequirement};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::{KindInfo, NameRule};
use crate::machinery::labels::Selector;
use crate::machinery::quantity::Quantity;
use crate::machinery::validation::{
    FieldErrors, Path, dns1123_label, dns1123_subdomain, label_value, qualified_name,
};

pub const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];
pub const VOLUME_MODES: &[&str] = &["Block", "Filesystem"];
/// Kubernetes' limit on the total size of an object's annotations.
const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

/// Validates an object name by the kind's rule.
pub fn name(info: &KindInfo, name: &str, path: &Path, errs: &mut FieldErrors) {
    let problems = match info.name_rule {
        NameRule::Subdomain => dns1123_subdomain(name),
        NameRule::Label => dns1123_label(name),
    };
    errs.syntax(path, name, problems);
}

/// Metadata rules common to every kind. Names are checked by the caller once generateName ran.
pub fn object_meta(info: &KindInfo, meta: &ObjectMeta, errs: &mut FieldErrors) {
    let path = Path::root("metadata");
    match meta.name.as_deref() {
        None | Some("") => errs.required(&path.child("name"), "name or generateName is required"),
        Some(n) => name(info, n, &path.child("name"), errs),
    }
    if info.namespaced {
        match meta.namespace.as_deref() {
            None | Some("") => errs.required(&path.child("namespace"), ""),
            Some(ns) => errs.syntax(&path.child("namespace"), ns, dns1123_label(ns)),
        }
    } else if meta.namespace.as_deref().is_some_and(|ns| !ns.is_empty()) {
        errs.forbidden(&path.child("namespace"), "not allowed on this type");
    }
    labels(meta.labels.as_ref(), &path.child("labels"), errs);
    if let Some(annotations) = &meta.annotations {
        let mut total = 0;
        for (k, v) in annotations {
            errs.syntax(
                &path.child("annotations"),
                k,
                qualified_name(&k.to_ascii_lowercase()),
            );
            total += k.len() + v.len();
        }
        if total > ANNOTATIONS_MAX_BYTES {
            errs.too_long(&path.child("annotations"), ANNOTATIONS_MAX_BYTES);
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, f) in meta.finalizers.iter().flatten().enumerate() {
        let p = path.child("finalizers").index(i);
        errs.syntax(&p, f, qualified_name(f));
        if !seen.insert(f) {
            errs.duplicate(&p, f);
        }
    }
    for (i, o) in meta.owner_references.iter().flatten().enumerate() {
        let p = path.child("ownerReferences").index(i);
        if o.api_version.is_empty() {
            errs.required(&p.child("apiVersion"), "");
        }
        if o.kind.is_empty() {
            errs.required(&p.child("kind"), "");
        }
        if o.name.is_empty() {
            errs.required(&p.child("name"), "");
        }
        if o.uid.is_empty() {
            errs.required(&p.child("uid"), "");
        }
    }
    if let Some(g) = meta.generate_name.as_deref().filter(|g| !g.is_empty()) {
        // The generated suffix is added later; the prefix alone must be a valid start of a name.
        let probe = format!("{}x", g.trim_end_matches('-'));
        if !dns1123_subdomain(&probe).is_empty() {
            errs.invalid(
                &path.child("generateName"),
                g,
                "must be a prefix of a valid object name",
            );
        }
    }
}

pub fn labels(labels: Option<&BTreeMap<String, String>>, path: &Path, errs: &mut FieldErrors) {
    for (k, v) in labels.into_iter().flatten() {
        errs.syntax(path, k, qualified_name(k));
        errs.syntax(&path.key(k), v, label_value(v));
    }
}

/// Access modes: known values; ReadWriteOncePod may not be combined with others.
pub fn access_modes(modes: Option<&Vec<String>>, path: &Path, errs: &mut FieldErrors) {
    let modes = modes.map(Vec::as_slice).unwrap_or_default();
    if modes.is_empty() {
        errs.required(path, "at least 1 access mode is required");
        return;
    }
    for (i, m) in modes.iter().enumerate() {
        if !ACCESS_MODES.contains(&m.as_str()) {
            errs.not_supported(&path.index(i), m, ACCESS_MODES);
        }
    }
    if modes.iter().any(|m| m == "ReadWriteOncePod") && modes.len() > 1 {
        errs.forbidden(path, "may not use ReadWriteOncePod with other access modes");
    }
}

pub fn volume_mode(mode: Option<&String>, path: &Path, errs: &mut FieldErrors) {
    if let Some(m) = mode
        && !VOLUME_MODES.contains(&m.as_str())
    {
        errs.not_supported(path, m, VOLUME_MODES);
    }
}

/// Parses a quantity, reporting a malformed one. Returns the parsed value.
pub fn quantity(q: &K8sQuantity, path: &Path, errs: &mut FieldErrors) -> Option<Quantity> {
    match Quantity::parse(&q.0) {
        Ok(v) => Some(v),
        Err(e) => {
            errs.invalid(path, &q.0, e.to_string());
            None
        }
    }
}

/// A storage size: a well-formed quantity greater than zero.
pub fn storage_size(q: Option<&K8sQuantity>, path: &Path, errs: &mut FieldErrors) {
    match q {
        None => errs.required(path, ""),
        Some(q) => {
            if let Some(v) = quantity(q, path, errs)
                && (v.is_negative() || v.is_zero())
            {
                errs.invalid(path, &q.0, "must be greater than zero");
            }
        }
    }
}

/// Rewrites every well-formed quantity in `map` to its canonical string, as Kubernetes stores it.
pub fn canonicalize_quantities(map: Option<&mut BTreeMap<String, K8sQuantity>>) {
    for q in map.into_iter().flat_map(|m| m.values_mut()) {
        if let Ok(v) = Quantity::parse(&q.0) {
            q.0 = v.canonical();
        }
    }
}

pub fn label_selector(sel: Option<&LabelSelector>, path: &Path, errs: &mut FieldErrors) {
    if let Some(sel) = sel {
        let _ = Selector::from_label_selector(sel, path, errs);
    }
}

const NODE_SELECTOR_OPERATORS: &[&str] = &["DoesNotExist", "Exists", "Gt", "In", "Lt", "NotIn"];

fn node_selector_requirement(
    r: &NodeSelectorRequirement,
    path: &Path,
    errs: &mut FieldErrors,
    field_key: bool,
) {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" | "NotIn" if values.is_empty() => errs.required(
            &path.child("values"),
            "must be specified when `operator` is 'In' or 'NotIn'",
        ),
        "Exists" | "DoesNotExist" if !values.is_empty() => errs.forbidden(
            &path.child("values"),
            "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        ),
        "Gt" | "Lt" if values.len() != 1 || values[0].parse::<i64>().is_err() => errs.required(
            &path.child("values"),
            "must be specified single integer value when `operator` is 'Lt' or 'Gt'",
        ),
        op if !NODE_SELECTOR_OPERATORS.contains(&op) => {
            errs.not_supported(&path.child("operator"), op, NODE_SELECTOR_OPERATORS)
        }
        _ => {}
    }
    if field_key {
        if r.key != "metadata.name" {
            errs.not_supported(&path.child("key"), &r.key, &["metadata.name"]);
        }
    } else {
        errs.syntax(&path.child("key"), &r.key, qualified_name(&r.key));
    }
}

pub fn node_selector(sel: &NodeSelector, path: &Path, errs: &mut FieldErrors) {
    let terms_path = path.child("nodeSelectorTerms");
    if sel.node_selector_terms.is_empty() {
        errs.required(&terms_path, "must have at least one node selector term");
    }
    for (i, term) in sel.node_selector_terms.iter().enumerate() {
        let p = terms_path.index(i);
        for (j, r) in term.match_expressions.iter().flatten().enumerate() {
            node_selector_requirement(r, &p.child("matchExpressions").index(j), errs, false);
        }
        for (j, r) in term.match_fields.iter().flatten().enumerate() {
            node_selector_requirement(r, &p.child("matchFields").index(j), errs, true);
        }
    }
}

/// Checks that `value` is one of `allowed` if present.
pub fn one_of(value: Option<&String>, allowed: &[&str], path: &Path, errs: &mut FieldErrors) {
    if let Some(v) = value
        && !allowed.contains(&v.as_str())
    {
        errs.not_supported(path, v, allowed);
    }
}

/// An optional reference to another object's name (storage class, node, volume).
pub fn optional_name(value: Option<&String>, path: &Path, errs: &mut FieldErrors) {
    if let Some(v) = value.filter(|v| !v.is_empty()) {
        errs.syntax(path, v, dns1123_subdomain(v));
    }
}

/// Mount options must be non-empty strings.
pub fn mount_options(opts: Option<&Vec<String>>, path: &Path, errs: &mut FieldErrors) {
    for (i, o) in opts.into_iter().flatten().enumerate() {
        if o.trim().is_empty() {
            errs.invalid(&path.index(i), o, "must not be empty");
        }
    }
}

/// Kubernetes' limits on a class's parameters (StorageClass, VolumeAttributesClass): at most
/// 512 of them, 256 KiB in all, no empty names; `allow_empty: false` requires at least one.
pub fn class_parameters(
    params: Option<&BTreeMap<String, String>>,
    allow_empty: bool,
    path: &Path,
    errs: &mut FieldErrors,
) {
    const MAX_PARAMETERS: usize = 512;
    const MAX_PARAMETERS_BYTES: usize = 256 * 1024;
    let params = params.filter(|p| !p.is_empty());
    let Some(params) = params else {
        if !allow_empty {
            errs.required(path, "must contain at least one key/value pair");
        }
        return;
    };
    if params.len() > MAX_PARAMETERS {
        errs.too_many(path, params.len(), MAX_PARAMETERS);
    }
    let size: usize = params.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_PARAMETERS_BYTES {
        errs.too_long(path, MAX_PARAMETERS_BYTES);
    }
    if params.keys().any(String::is_empty) {
        errs.invalid(path, "", "parameter names must not be empty");
    }
}

/// A CSI driver's name (CSIDriver, CSINode, VolumeAttributesClass): at most 63 characters, a
/// DNS subdomain once lowercased, as Kubernetes' `ValidateCSIDriverName`.
pub fn csi_driver_name(name: &str, path: &Path, errs: &mut FieldErrors) {
    if name.is_empty() {
        errs.required(path, "");
        return;
    }
    if name.len() > 63 {
        errs.too_long(path, 63);
    }
    errs.syntax(path, name, dns1123_subdomain(&name.to_ascii_lowercase()));
}
