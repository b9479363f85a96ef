//! Patch formats: JSON patch (RFC 6902), JSON merge patch (RFC 7386), Kubernetes' strategic
//! merge patch, and the merge and field tracking behind server-side apply.
//!
//! Strategic merge needs to know how each list merges. Kubernetes reads that from struct tags;
//! here it is the table in [`list_strategy`], which covers every list of the kinds Stowage
//! serves that Kubernetes merges by key. Any other list is replaced whole, as Kubernetes does.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value};

use super::document;

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

/// Most operations in one JSON patch (Kubernetes' limit).
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// Applies an RFC 6902 JSON patch, one operation at a time, under limits that hold on what the
/// document becomes: at most [`MAX_JSON_PATCH_OPERATIONS`] operations, at most `max_copied_bytes`
/// copied by `copy` operations in all (Kubernetes caps this too: a few copies of a value into a
/// sibling double the document each time), and no value placed deeper than
/// [`document::MAX_DEPTH`] (a value copied into its own child nests one level deeper per copy).
/// On an error the document is left half-patched: callers patch a copy.
pub fn apply_json_patch(
    doc: &mut Value,
    patch: &Value,
    max_copied_bytes: usize,
) -> Result<(), PatchError> {
    let ops: Vec<json_patch::PatchOperation> = serde_json::from_value(patch.clone())
        .map_err(|e| PatchError::Malformed(format!("invalid JSON patch: {e}")))?;
    if ops.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(PatchError::TooLarge(format!(
            "a JSON patch may have at most {MAX_JSON_PATCH_OPERATIONS} operations, this one has {}",
            ops.len()
        )));
    }
    let mut copied = 0usize;
    // Work beyond what the patch's own bytes pay for: values measured for moves and elements
    // shifted by insertions and removals in the middle of lists.
    let mut work = 0usize;
    let max_work = max_copied_bytes.saturating_mul(4);
    for (i, op) in ops.iter().enumerate() {
        use json_patch::PatchOperation as Op;
        work = work.saturating_add(shifted_by(doc, op));
        let placed = match op {
            Op::Add(o) => Some((o.path.count(), document::measure(&o.value))),
            Op::Replace(o) => Some((o.path.count(), document::measure(&o.value))),
            Op::Move(o) => doc.pointer(o.from.as_str()).map(|v| {
                let m = document::measure(v);
                work = work.saturating_add(m.bytes);
                (o.path.count(), m)
            }),
            Op::Copy(o) => {
                let Some(source) = doc.pointer(o.from.as_str()) else {
                    return Err(PatchError::Failed(format!(
                        "operation {i}: copy from {:?}: no such path",
                        o.from.as_str()
                    )));
                };
                let m = document::measure(source);
                copied = copied.saturating_add(m.bytes);
                if copied > max_copied_bytes {
                    return Err(PatchError::TooLarge(format!(
                        "the copy operations of this JSON patch copy more than {max_copied_bytes} bytes"
                    )));
                }
                Some((o.path.count(), m))
            }
            Op::Remove(_) | Op::Test(_) => None,
        };
        if let Some((at, m)) = placed
            && at + m.depth > document::MAX_DEPTH
        {
            return Err(PatchError::Failed(format!(
                "operation {i} would nest the object deeper than {} levels",
                document::MAX_DEPTH
            )));
        }
        if work > max_work {
            return Err(PatchError::TooLarge(format!(
                "this JSON patch moves and shifts more than {max_work} bytes and list elements"
            )));
        }
        json_patch::patch(doc, std::slice::from_ref(op))
            .map_err(|e| PatchError::Failed(format!("operation {i}: {}", e.kind)))?;
    }
    Ok(())
}

/// How many list elements an operation shifts: inserting or removing at index `i` of a list
/// of `n` moves `n - i` of them.
fn shifted_by(doc: &Value, op: &json_patch::PatchOperation) -> usize {
    use json_patch::PatchOperation as Op;
    let shift_at = |path: &json_patch::jsonptr::Pointer| -> usize {
        let Some((parent, last)) = path.split_back() else {
            return 0;
        };
        match doc.pointer(parent.as_str()) {
            Some(Value::Array(items)) => {
                let at = last.decoded().parse::<usize>().unwrap_or(items.len());
                items.len().saturating_sub(at)
            }
            _ => 0,
        }
    };
    match op {
        Op::Add(o) => shift_at(&o.path),
        Op::Remove(o) => shift_at(&o.path),
        Op::Move(o) => shift_at(&o.from) + shift_at(&o.path),
        Op::Copy(o) => shift_at(&o.path),
        Op::Replace(_) | Op::Test(_) => 0,
    }
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
    /// The patch, or what it makes, is over a size limit (413).
    #[error("{0}")]
    TooLarge(String),
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
                    let remove: HashSet<String> = remove.iter().map(identity).collect();
                    items.retain(|i| !remove.contains(&identity(i)));
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
            let keep: HashSet<&str> = retain.iter().filter_map(Value::as_str).collect();
            target.retain(|k, _| keep.contains(k.as_str()));
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
        // Both strategies index the current items once: merging is O(n + m), not O(n * m).
        ListStrategy::Set => {
            let mut present: HashSet<String> = current.iter().map(identity).collect();
            for item in patch_items {
                if present.insert(identity(item)) {
                    current.push(item.clone());
                }
            }
            Ok(Value::Array(current))
        }
        ListStrategy::MergeByKey(key) => {
            // Slots of the current items by key; a deleted item leaves a hole, removed at the end.
            let mut slots: Vec<Option<Value>> = current.into_iter().map(Some).collect();
            let mut by_key: HashMap<String, usize> = HashMap::with_capacity(slots.len());
            for (i, item) in slots.iter().enumerate() {
                if let Some(id) = item.as_ref().and_then(|v| item_key(v, key)) {
                    by_key.entry(identity(id)).or_insert(i);
                }
            }
            for item in patch_items {
                let Some(id) = item_key(item, key).map(identity) else {
                    return Err(PatchError::Malformed(format!(
                        "{path}: every item needs the merge key {key:?}"
                    )));
                };
                let delete = directives
                    && item_key(item, "$patch").and_then(Value::as_str) == Some("delete");
                match (by_key.get(&id).copied(), delete) {
                    (Some(p), true) => {
                        slots[p] = None;
                        by_key.remove(&id);
                    }
                    (None, true) => {}
                    (Some(p), false) => {
                        if let (Some(existing), Value::Object(pm)) = (&mut slots[p], item) {
                            merge_map(existing, pm, path, directives)?;
                        }
                    }
                    (None, false) => {
                        let mut fresh = Value::Object(Map::new());
                        if let Value::Object(pm) = item {
                            merge_map(&mut fresh, pm, path, directives)?;
                        }
                        by_key.insert(id, slots.len());
                        slots.push(Some(fresh));
                    }
                }
            }
            Ok(Value::Array(slots.into_iter().flatten().collect()))
        }
    }
}

/// Sorts `items` by their position in `order` (`$setElementOrder`); items not named keep their
/// relative order at the end. O((n + m) log n).
fn reorder(items: &mut [Value], order: &[Value], strategy: ListStrategy) {
    let id = |v: &Value| -> Option<String> {
        match strategy {
            ListStrategy::MergeByKey(key) => item_key(v, key).map(identity),
            _ => Some(identity(v)),
        }
    };
    let mut rank: HashMap<String, usize> = HashMap::with_capacity(order.len());
    for (i, o) in order.iter().enumerate() {
        if let Some(k) = id(o) {
            rank.entry(k).or_insert(i);
        }
    }
    items.sort_by_cached_key(|i| {
        id(i)
            .and_then(|k| rank.get(&k).copied())
            .unwrap_or(usize::MAX)
    });
}

/// A value's identity for set membership and keyed lookups: its compact JSON.
fn identity(v: &Value) -> String {
    match v {
        Value::String(s) => format!("s{s}"),
        other => other.to_string(),
    }
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

    /// Adds every field of `other` to this set.
    pub fn union(&mut self, other: FieldSet) {
        for (k, child) in other.0 {
            self.0.entry(k).or_default().union(child);
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

/// Removes the fields at `fieldsV1`-style paths from `doc`, where present.
///
/// The paths are gathered into one tree and the document is walked once, indexing each keyed
/// list it enters, so that removing many items of one list costs O(n), not O(n) per item.
pub fn remove_fields(doc: &mut Value, paths: &[Vec<String>]) {
    let mut tree = Removal::default();
    for path in paths {
        let mut node = &mut tree;
        for seg in path {
            if node.whole {
                break;
            }
            node = node.children.entry(seg.clone()).or_default();
        }
        node.whole = true;
        node.children.clear();
    }
    tree.apply(doc);
}

/// A tree of removals: `whole` removes the node itself, else its children are visited.
#[derive(Default)]
struct Removal {
    whole: bool,
    children: BTreeMap<String, Removal>,
}

impl Removal {
    fn apply(&self, node: &mut Value) {
        match node {
            Value::Object(m) => {
                for (seg, sub) in &self.children {
                    let Some(field) = seg.strip_prefix("f:") else {
                        continue;
                    };
                    if sub.whole {
                        m.remove(field);
                    } else if let Some(child) = m.get_mut(field) {
                        sub.apply(child);
                    }
                }
            }
            Value::Array(items) => {
                let mut drop_values: HashSet<String> = HashSet::new();
                let mut drop_items: HashSet<usize> = HashSet::new();
                // Items by key, built once per list and per key name.
                let mut indexes: HashMap<String, HashMap<String, usize>> = HashMap::new();
                for (seg, sub) in &self.children {
                    if let Some(raw) = seg.strip_prefix("v:") {
                        if sub.whole
                            && let Ok(v) = serde_json::from_str::<Value>(raw)
                        {
                            drop_values.insert(identity(&v));
                        }
                        continue;
                    }
                    let Some(ident) = seg.strip_prefix("k:") else {
                        continue;
                    };
                    let Ok(Value::Object(id)) = serde_json::from_str::<Value>(ident) else {
                        continue;
                    };
                    // Keyed lists merge by one key; the item is the one whose key matches.
                    let Some((key, wanted)) = id.iter().next() else {
                        continue;
                    };
                    let index = indexes.entry(key.clone()).or_insert_with(|| {
                        let mut index = HashMap::new();
                        for (i, item) in items.iter().enumerate() {
                            if let Some(k) = item_key(item, key) {
                                index.entry(identity(k)).or_insert(i);
                            }
                        }
                        index
                    });
                    let Some(&i) = index.get(&identity(wanted)) else {
                        continue;
                    };
                    if !id.iter().all(|(k, v)| item_key(&items[i], k) == Some(v)) {
                        continue;
                    }
                    if sub.whole {
                        drop_items.insert(i);
                    } else {
                        sub.apply(&mut items[i]);
                    }
                }
                if !drop_values.is_empty() || !drop_items.is_empty() {
                    let mut i = 0;
                    items.retain(|item| {
                        let keep =
                            !drop_items.contains(&i) && !drop_values.contains(&identity(item));
                        i += 1;
                        keep
                    });
                }
            }
            _ => {}
        }
    }
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
            1024,
        )
        .unwrap_err();
        assert!(matches!(err, PatchError::Failed(_)));
        apply_json_patch(
            &mut doc,
            &json!([{"op": "replace", "path": "/spec/x", "value": 3}]),
            1024,
        )
        .unwrap();
        assert_eq!(doc["spec"]["x"], 3);
    }

    #[test]
    fn json_patch_copies_into_their_own_child_stop_at_the_depth_limit() {
        // Each copy of /x into /x/x nests the document one level deeper at almost no cost in
        // bytes: without a bound, a 30 KB patch overflowed the stack of whatever touched it.
        let mut doc = json!({"x": {}});
        let op = json!({"op": "copy", "from": "/x", "path": "/x/x"});
        let patch = Value::Array(vec![op; 5_000]);
        let err = apply_json_patch(&mut doc, &patch, usize::MAX).unwrap_err();
        assert!(
            matches!(err, PatchError::Failed(ref m) if m.contains("deeper")),
            "{err}"
        );
        assert!(document::measure(&doc).depth <= document::MAX_DEPTH);
    }

    #[test]
    fn json_patch_copies_are_bounded_in_bytes() {
        // Copying a value into a sibling doubles the document every time.
        let mut doc = json!({"a": "x".repeat(1000), "b": {}});
        let mut ops = vec![json!({"op": "copy", "from": "/a", "path": "/b/a"})];
        for i in 0..40 {
            ops.push(json!({"op": "copy", "from": "/b", "path": format!("/b/c{i}")}));
        }
        let err = apply_json_patch(&mut doc, &Value::Array(ops), 3 << 20).unwrap_err();
        assert!(matches!(err, PatchError::TooLarge(_)), "{err}");
        assert!(document::measure(&doc).bytes < 8 << 20);
    }

    #[test]
    fn json_patches_that_shift_long_lists_over_and_over_are_refused() {
        let args: Vec<Value> = (0..400_000).map(|_| json!("a")).collect();
        let mut doc = json!({"spec": {"args": args}});
        let ops: Vec<Value> = (0..10_000)
            .map(|_| json!({"op": "remove", "path": "/spec/args/0"}))
            .collect();
        let started = std::time::Instant::now();
        let err = apply_json_patch(&mut doc, &Value::Array(ops), 3 << 20).unwrap_err();
        assert!(matches!(err, PatchError::TooLarge(_)), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // Removing from the end shifts nothing.
        let mut doc = json!({"spec": {"args": (0..1000).map(|_| json!("a")).collect::<Vec<_>>()}});
        let ops: Vec<Value> = (0..1000)
            .rev()
            .map(|i| json!({"op": "remove", "path": format!("/spec/args/{i}")}))
            .collect();
        apply_json_patch(&mut doc, &Value::Array(ops), 3 << 20).unwrap();
    }

    #[test]
    fn json_patches_have_at_most_ten_thousand_operations() {
        let ops = Value::Array(vec![json!({"op": "test", "path": "", "value": {}}); 10_001]);
        let err = apply_json_patch(&mut json!({}), &ops, 1024).unwrap_err();
        assert!(matches!(err, PatchError::TooLarge(_)), "{err}");
    }

    #[test]
    fn strategic_merge_of_huge_lists_takes_linear_time() {
        let n = 50_000;
        let existing: Vec<Value> = (0..n).map(|i| json!(format!("f{i}"))).collect();
        let mut doc = json!({"metadata": {"finalizers": existing},
            "spec": {"volumes": (0..n).map(|i| json!({"name": format!("v{i}")})).collect::<Vec<_>>()}});
        let patch = json!({
            "metadata": {"finalizers": (0..n).map(|i| json!(format!("g{i}"))).collect::<Vec<_>>()},
            "spec": {
                "volumes": (0..n).map(|i| json!({"name": format!("v{i}"), "emptyDir": {}})).collect::<Vec<_>>(),
                "$setElementOrder/volumes": (0..n).rev().map(|i| json!({"name": format!("v{i}")})).collect::<Vec<_>>(),
            }
        });
        let started = std::time::Instant::now();
        apply_strategic_merge_patch(&mut doc, &patch).unwrap();
        assert_eq!(
            doc["metadata"]["finalizers"].as_array().unwrap().len(),
            2 * n
        );
        let volumes = doc["spec"]["volumes"].as_array().unwrap();
        assert_eq!(volumes.len(), n);
        assert_eq!(volumes[0]["name"], format!("v{}", n - 1), "reordered");
        assert_eq!(volumes[0]["emptyDir"], json!({}), "merged");
        // Quadratic merging took minutes here; linear takes well under a second even unoptimized.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn strategic_merge_deletes_and_dedups_by_key() {
        let mut doc = json!({"spec": {"volumes": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}});
        apply_strategic_merge_patch(
            &mut doc,
            &json!({"spec": {"volumes": [{"name": "b", "$patch": "delete"}, {"name": "d"}, {"name": "a", "x": 1}]}}),
        )
        .unwrap();
        assert_eq!(
            doc["spec"]["volumes"],
            json!([{"name": "a", "x": 1}, {"name": "c"}, {"name": "d"}])
        );
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
        remove_fields(&mut doc, &removed);
        assert_eq!(doc["metadata"]["labels"], json!({"a": "1", "other": "x"}));
        assert_eq!(doc["spec"]["volumes"], json!([{"name": "v1"}]));
        // Round trip through the wire form.
        assert_eq!(FieldSet::from_fields_v1(&first.to_fields_v1()), first);
    }
}
