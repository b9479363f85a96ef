//! Patch formats: JSON patch (RFC 6902), JSON merge patch (RFC 7386), Kubernetes' strategic
//! merge patch, and the merge and field tracking behind server-side apply.
//!
//! Strategic merge needs to know how each list merges. Kubernetes reads that from struct tags;
//! here it is the table in [`list_strategy`], which covers every list of the kinds Stowage
//! serves that Kubernetes merges by key. Any other list is replaced whole, as Kubernetes does.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// How a list at a given path merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListStrategy {
    /// Replaced whole by a patch (the default).
    Atomic,
    /// Items are objects identified by this key; patches merge item by item.
    MergeByKey(&'static str),
    /// A list of scalars treated as a set (`metadata.finalizers`).
    Set,
}

/// The merge strategy of the list at `path` (field names joined by dots, list indices omitted).
pub fn list_strategy(path: &str) -> ListStrategy {
    use ListStrategy::*;
    match path {
        "metadata.finalizers" => Set,
        "metadata.ownerReferences" => MergeByKey("uid"),
        "status.conditions" => MergeByKey("type"),
        "status.addresses" => MergeByKey("type"),
        "spec.volumes" => MergeByKey("name"),
        "spec.containers" | "spec.initContainers" | "spec.ephemeralContainers" => {
            MergeByKey("name")
        }
        "spec.containers.env" | "spec.initContainers.env" => MergeByKey("name"),
        "spec.containers.ports" | "spec.initContainers.ports" => MergeByKey("containerPort"),
        "spec.containers.volumeMounts" | "spec.initContainers.volumeMounts" => {
            MergeByKey("mountPath")
        }
        "spec.containers.volumeDevices" | "spec.initContainers.volumeDevices" => {
            MergeByKey("devicePath")
        }
        "spec.imagePullSecrets" => MergeByKey("name"),
        "spec.hostAliases" => MergeByKey("ip"),
        "status.volumesAttached" => MergeByKey("name"),
        _ => Atomic,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Applies an RFC 6902 JSON patch.
pub fn apply_json_patch(doc: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let patch: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| PatchError::Malformed(format!("invalid JSON patch: {e}")))?;
    json_patch::patch(doc, &patch).map_err(|e| PatchError::Failed(e.to_string()))
}

/// Applies an RFC 7386 JSON merge patch.
pub fn apply_merge_patch(doc: &mut Value, patch: &Value) -> Result<(), PatchError> {
    if !patch.is_object() {
        return Err(PatchError::Malformed(
            "a merge patch must be a JSON object".into(),
        ));
    }
    json_patch::merge(doc, patch);
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch document itself is not valid for its type (400).
    #[error("{0}")]
    Malformed(String),
    /// The patch is well formed but cannot apply to this object (422).
    #[error("{0}")]
    Failed(String),
}

/// Applies a strategic merge patch, honouring `$patch`, `$retainKeys`, `$setElementOrder/` and
/// `$deleteFromPrimitiveList/` directives.
pub fn apply_strategic_merge_patch(doc: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::Malformed(
            "a strategic merge patch must be a JSON object".into(),
        ));
    };
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    merge_map(doc, patch, "", true)
}

/// Merges `patch` into `doc` the way server-side apply merges an applied configuration: maps
/// merge, keyed lists merge by key, other lists are replaced. No directives.
pub fn apply_configuration_merge(doc: &mut Value, applied: &Value) -> Result<(), PatchError> {
    let Value::Object(applied) = applied else {
        return Err(PatchError::Malformed(
            "an applied configuration must be an object".into(),
        ));
    };
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    merge_map(doc, applied, "", false)
}

fn merge_map(
    doc: &mut Value,
    patch: &Map<String, Value>,
    path: &str,
    directives: bool,
) -> Result<(), PatchError> {
    if directives {
        match patch.get("$patch").and_then(Value::as_str) {
            Some("replace") => {
                let mut replacement = patch.clone();
                replacement.remove("$patch");
                *doc = Value::Object(replacement);
                return Ok(());
            }
            Some("delete") => {
                *doc = Value::Object(Map::new());
                return Ok(());
            }
            Some("merge") | None => {}
            Some(other) => {
                return Err(PatchError::Malformed(format!(
                    "unknown patch type: {other}"
                )));
            }
        }
    }
    let target = doc
        .as_object_mut()
        .expect("merge_map is only called on objects");
    let mut orders: Vec<(String, Vec<Value>)> = Vec::new();
    for (k, v) in patch {
        if directives {
            if k == "$patch" || k == "$retainKeys" {
                continue;
            }
            if let Some(field) = k.strip_prefix("$setElementOrder/") {
                let order = v
                    .as_array()
                    .cloned()
                    .ok_or_else(|| PatchError::Malformed(format!("{k} must be a list")))?;
                orders.push((field.to_string(), order));
                continue;
            }
            if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
                let remove = v
                    .as_array()
                    .cloned()
                    .ok_or_else(|| PatchError::Malformed(format!("{k} must be a list")))?;
                if let Some(Value::Array(items)) = target.get_mut(field) {
                    items.retain(|i| !remove.contains(i));
                }
                continue;
            }
            if k.starts_with('$') {
                return Err(PatchError::Malformed(format!("unknown directive {k}")));
            }
        }
        let child_path = join(path, k);
        match v {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(pm) => {
                let entry = target.entry(k.clone()).or_insert(Value::Null);
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                merge_map(entry, pm, &child_path, directives)?;
                // A map emptied by `$patch: delete` disappears, as in Kubernetes.
                if directives && pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                    target.remove(k);
                }
            }
            Value::Array(items) => {
                let strategy = list_strategy(&child_path);
                let existing = target.remove(k);
                let merged = merge_list(existing, items, strategy, &child_path, directives)?;
                target.insert(k.clone(), merged);
            }
            scalar => {
                target.insert(k.clone(), scalar.clone());
            }
        }
    }
    if directives {
        if let Some(Value::Array(retain)) = patch.get("$retainKeys") {
            let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
            target.retain(|k, _| keep.contains(&k.as_str()));
        }
        for (field, order) in orders {
            let strategy = list_strategy(&join(path, &field));
            if let Some(Value::Array(items)) = target.get_mut(&field) {
                reorder(items, &order, strategy);
            }
        }
    }
    Ok(())
}

fn item_key<'a>(item: &'a Value, key: &str) -> Option<&'a Value> {
    item.as_object().and_then(|o| o.get(key))
}

fn merge_list(
    existing: Option<Value>,
    patch_items: &[Value],
    strategy: ListStrategy,
    path: &str,
    directives: bool,
) -> Result<Value, PatchError> {
    let mut current = match existing {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    };
    // `[{"$patch": "replace"}, ...]` replaces the whole list with the remaining items.
    if directives
        && patch_items
            .iter()
            .any(|i| item_key(i, "$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(Value::Array(
            patch_items
                .iter()
                .filter(|i| item_key(i, "$patch").is_none())
                .cloned()
                .collect(),
        ));
    }
    match strategy {
        ListStrategy::Atomic => Ok(Value::Array(patch_items.to_vec())),
        ListStrategy::Set => {
            for item in patch_items {
                if !current.contains(item) {
                    current.push(item.clone());
                }
            }
            Ok(Value::Array(current))
        }
        ListStrategy::MergeByKey(key) => {
            for item in patch_items {
                let Some(id) = item_key(item, key).cloned() else {
                    return Err(PatchError::Malformed(format!(
                        "{path}: every item needs the merge key {key:?}"
                    )));
                };
                let pos = current.iter().position(|c| item_key(c, key) == Some(&id));
                let delete = directives
                    && item_key(item, "$patch").and_then(Value::as_str) == Some("delete");
                match (pos, delete) {
                    (Some(p), true) => {
                        current.remove(p);
                    }
                    (None, true) => {}
                    (Some(p), false) => {
                        if let Value::Object(pm) = item {
                            merge_map(&mut current[p], pm, path, directives)?;
                        }
                    }
                    (None, false) => {
                        let mut fresh = Value::Object(Map::new());
                        if let Value::Object(pm) = item {
                            merge_map(&mut fresh, pm, path, directives)?;
                        }
                        current.push(fresh);
                    }
                }
            }
            Ok(Value::Array(current))
        }
    }
}

fn reorder(items: &mut [Value], order: &[Value], strategy: ListStrategy) {
    let rank = |item: &Value| -> usize {
        let id = match strategy {
            ListStrategy::MergeByKey(key) => order.iter().position(|o| {
                item_key(o, key).is_some() && item_key(o, key) == item_key(item, key)
            }),
            _ => order.iter().position(|o| o == item),
        };
        id.unwrap_or(usize::MAX)
    };
    items.sort_by_key(|i| rank(i));
}

/// The set of fields an applied configuration sets, as a tree in `fieldsV1` shape:
/// `f:<field>` for map fields, `k:<json key>` for keyed list items, `v:<json value>` for set
/// items, and `.` for an item itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet(BTreeMap<String, FieldSet>);

/// Fields that identify the object rather than configure it; apply never owns them.
const UNOWNED_TOP_LEVEL: &[&str] = &["apiVersion", "kind"];
const UNOWNED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

impl FieldSet {
    pub fn from_applied(applied: &Value) -> FieldSet {
        let mut set = FieldSet::default();
        if let Value::Object(m) = applied {
            for (k, v) in m {
                if UNOWNED_TOP_LEVEL.contains(&k.as_str()) {
                    continue;
                }
                if k == "metadata" {
                    let mut meta = FieldSet::default();
                    if let Value::Object(mm) = v {
                        for (mk, mv) in mm {
                            if UNOWNED_METADATA.contains(&mk.as_str()) {
                                continue;
                            }
                            meta.0.insert(
                                format!("f:{mk}"),
                                Self::of_value(mv, &join("metadata", mk)),
                            );
                        }
                    }
                    if !meta.0.is_empty() {
                        set.0.insert("f:metadata".into(), meta);
                    }
                    continue;
                }
                set.0.insert(format!("f:{k}"), Self::of_value(v, k));
            }
        }
        set
    }

    fn of_value(v: &Value, path: &str) -> FieldSet {
        let mut set = FieldSet::default();
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    set.0
                        .insert(format!("f:{k}"), Self::of_value(child, &join(path, k)));
                }
            }
            Value::Array(items) => match list_strategy(path) {
                ListStrategy::MergeByKey(key) => {
                    for item in items {
                        if let Some(id) = item_key(item, key) {
                            let ident = serde_json::json!({ key: id }).to_string();
                            let mut item_set = Self::of_value(item, path);
                            item_set.0.insert(".".into(), FieldSet::default());
                            set.0.insert(format!("k:{ident}"), item_set);
                        }
                    }
                }
                ListStrategy::Set => {
                    for item in items {
                        set.0.insert(format!("v:{item}"), FieldSet::default());
                    }
                }
                ListStrategy::Atomic => {}
            },
            _ => {}
        }
        set
    }

    pub fn to_fields_v1(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v.to_fields_v1()))
                .collect(),
        )
    }

    pub fn from_fields_v1(v: &Value) -> FieldSet {
        let mut set = FieldSet::default();
        if let Value::Object(m) = v {
            for (k, child) in m {
                set.0.insert(k.clone(), Self::from_fields_v1(child));
            }
        }
        set
    }

    /// Paths in `self` that `newer` no longer has; each path ends at the removed entry.
    pub fn removed_in(&self, newer: &FieldSet) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        self.collect_removed(newer, &mut Vec::new(), &mut out);
        out
    }

    fn collect_removed(
        &self,
        newer: &FieldSet,
        prefix: &mut Vec<String>,
        out: &mut Vec<Vec<String>>,
    ) {
        for (k, child) in &self.0 {
            if k == "." {
                continue;
            }
            prefix.push(k.clone());
            match newer.0.get(k) {
                None => out.push(prefix.clone()),
                Some(n) => child.collect_removed(n, prefix, out),
            }
            prefix.pop();
        }
    }

    /// Whether `path` (or a prefix of it) is owned by this set.
    pub fn covers(&self, path: &[String]) -> bool {
        let mut node = self;
        for seg in path {
            match node.0.get(seg) {
                Some(n) => node = n,
                None => return false,
            }
        }
        true
    }
}

/// Removes the field at a `fieldsV1`-style path from `doc`, if present.
pub fn remove_field(doc: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = doc;
    for seg in parents {
        let next = match navigate(node, seg) {
            Some(n) => n,
            None => return,
        };
        node = next;
    }
    if let Some(field) = last.strip_prefix("f:") {
        if let Value::Object(m) = node {
            m.remove(field);
        }
    } else if let Some(ident) = last.strip_prefix("k:") {
        if let (Value::Array(items), Ok(Value::Object(id))) =
            (node, serde_json::from_str::<Value>(ident))
        {
            items.retain(|item| !id.iter().all(|(k, v)| item_key(item, k) == Some(v)));
        }
    } else if let Some(raw) = last.strip_prefix("v:")
        && let (Value::Array(items), Ok(v)) = (node, serde_json::from_str::<Value>(raw))
    {
        items.retain(|item| item != &v);
    }
}

fn navigate<'a>(node: &'a mut Value, seg: &str) -> Option<&'a mut Value> {
    if let Some(field) = seg.strip_prefix("f:") {
        return node.as_object_mut()?.get_mut(field);
    }
    if let Some(ident) = seg.strip_prefix("k:") {
        let Ok(Value::Object(id)) = serde_json::from_str::<Value>(ident) else {
            return None;
        };
        return node
            .as_array_mut()?
            .iter_mut()
            .find(|item| id.iter().all(|(k, v)| item_key(item, k) == Some(v)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_sets_and_removes_fields() {
        let mut doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        apply_merge_patch(
            &mut doc,
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
        )
        .unwrap();
        assert_eq!(doc, json!({"metadata": {"labels": {"b": "2", "c": "3"}}}));
    }

    #[test]
    fn json_patch_test_failure_is_reported() {
        let mut doc = json!({"spec": {"x": 1}});
        let err = apply_json_patch(
            &mut doc,
            &json!([{"op": "test", "path": "/spec/x", "value": 2}]),
        )
        .unwrap_err();
        assert!(matches!(err, PatchError::Failed(_)));
        apply_json_patch(
            &mut doc,
            &json!([{"op": "replace", "path": "/spec/x", "value": 3}]),
        )
        .unwrap();
        assert_eq!(doc["spec"]["x"], 3);
    }

    #[test]
    fn strategic_merge_merges_keyed_lists_and_replaces_atomic_ones() {
        let mut doc = json!({"spec": {
            "volumes": [{"name": "a", "persistentVolumeClaim": {"claimName": "x"}}],
            "accessModes": ["ReadWriteOnce"]
        }});
        apply_strategic_merge_patch(
            &mut doc,
            &json!({"spec": {
                "volumes": [{"name": "b", "emptyDir": {}}, {"name": "a", "persistentVolumeClaim": {"readOnly": true}}],
                "accessModes": ["ReadWriteMany"]
            }}),
        )
        .unwrap();
        assert_eq!(
            doc["spec"]["volumes"],
            json!([
                {"name": "a", "persistentVolumeClaim": {"claimName": "x", "readOnly": true}},
                {"name": "b", "emptyDir": {}}
            ])
        );
        assert_eq!(doc["spec"]["accessModes"], json!(["ReadWriteMany"]));
    }

    #[test]
    fn strategic_merge_finalizers_are_a_set_with_delete_directive() {
        let mut doc = json!({"metadata": {"finalizers": ["a", "b"]}});
        apply_strategic_merge_patch(&mut doc, &json!({"metadata": {"finalizers": ["b", "c"]}}))
            .unwrap();
        assert_eq!(doc["metadata"]["finalizers"], json!(["a", "b", "c"]));
        apply_strategic_merge_patch(
            &mut doc,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        )
        .unwrap();
        assert_eq!(doc["metadata"]["finalizers"], json!(["b", "c"]));
    }

    #[test]
    fn strategic_merge_honours_delete_replace_and_order_directives() {
        let mut doc = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True"}, {"type": "Disk", "status": "False"}
        ]}});
        apply_strategic_merge_patch(
            &mut doc,
            &json!({"status": {
                "$setElementOrder/conditions": [{"type": "Disk"}, {"type": "Ready"}],
                "conditions": [{"type": "Ready", "status": "False"}]
            }}),
        )
        .unwrap();
        assert_eq!(doc["status"]["conditions"][0]["type"], "Disk");
        assert_eq!(doc["status"]["conditions"][1]["status"], "False");
        apply_strategic_merge_patch(
            &mut doc,
            &json!({"status": {"conditions": [{"type": "Disk", "$patch": "delete"}]}}),
        )
        .unwrap();
        assert_eq!(doc["status"]["conditions"].as_array().unwrap().len(), 1);
        apply_strategic_merge_patch(
            &mut doc,
            &json!({"status": {"$patch": "replace", "phase": "x"}}),
        )
        .unwrap();
        assert_eq!(doc["status"], json!({"phase": "x"}));
    }

    #[test]
    fn strategic_merge_refuses_unknown_directives_and_keyless_items() {
        let mut doc = json!({});
        assert!(apply_strategic_merge_patch(&mut doc, &json!({"$bogus": 1})).is_err());
        assert!(
            apply_strategic_merge_patch(
                &mut doc,
                &json!({"spec": {"volumes": [{"emptyDir": {}}]}})
            )
            .is_err()
        );
        assert!(apply_strategic_merge_patch(&mut doc, &json!([1])).is_err());
    }

    #[test]
    fn field_sets_find_what_an_apply_stopped_setting() {
        let first = FieldSet::from_applied(&json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"a": "1", "b": "2"}},
            "spec": {"volumes": [{"name": "v1"}, {"name": "v2"}]}
        }));
        let second = FieldSet::from_applied(&json!({
            "metadata": {"name": "p", "labels": {"a": "1"}},
            "spec": {"volumes": [{"name": "v1"}]}
        }));
        let removed = first.removed_in(&second);
        let mut doc = json!({
            "metadata": {"labels": {"a": "1", "b": "2", "other": "x"}},
            "spec": {"volumes": [{"name": "v1"}, {"name": "v2"}]}
        });
        for path in &removed {
            remove_field(&mut doc, path);
        }
        assert_eq!(doc["metadata"]["labels"], json!({"a": "1", "other": "x"}));
        assert_eq!(doc["spec"]["volumes"], json!([{"name": "v1"}]));
        // Round trip through the wire form.
        assert_eq!(FieldSet::from_fields_v1(&first.to_fields_v1()), first);
    }
}
