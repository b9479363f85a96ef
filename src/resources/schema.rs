//! JSON schemas of the served kinds, generated from the k8s-openapi types.
//!
//! Two uses: the OpenAPI documents kubectl reads (`/openapi/v3`), and detecting unknown fields
//! in request bodies (`fieldValidation=Strict|Warn`), which typed decoding alone would silently
//! drop.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value};

use super::Kind;

pub struct Schemas {
    /// Every schema by its Kubernetes definition name (`io.k8s.api.core.v1.Pod`).
    pub definitions: Map<String, Value>,
    /// The definition name of each kind's schema.
    pub roots: HashMap<Kind, String>,
    nodes: Vec<Node>,
    node_of: HashMap<String, usize>,
}

/// A compiled schema node for the unknown-field walk.
enum Node {
    /// Anything goes (scalars, free-form objects).
    Any,
    Object {
        properties: HashMap<String, Ref>,
        additional: Option<Ref>,
    },
    Array(Ref),
    /// Same as another node (a `$ref` with sibling keywords, or a chain of refs).
    Alias(usize),
}

#[derive(Clone, Copy)]
enum Ref {
    Node(usize),
    Any,
}

pub fn schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(build)
}

fn build() -> Schemas {
    let mut generator = SchemaSettings::openapi3()
        .with(|s| s.meta_schema = None)
        .into_generator();
    let mut roots = HashMap::new();
    macro_rules! root {
        ($($variant:ident => $ty:ty [$shape:ident],)*) => {
            $(
                generator.subschema_for::<$ty>();
                roots.insert(Kind::$variant, <$ty as schemars::JsonSchema>::schema_name().into_owned());
            )*
        };
    }
    crate::for_each_kind!(root);
    let definitions = generator.take_definitions(true);
    let mut schemas = Schemas {
        definitions,
        roots,
        nodes: Vec::new(),
        node_of: HashMap::new(),
    };
    let names: Vec<String> = schemas.definitions.keys().cloned().collect();
    for name in names {
        schemas.compile_definition(&name);
    }
    schemas
}

impl Schemas {
    fn compile_definition(&mut self, name: &str) -> Ref {
        if let Some(i) = self.node_of.get(name) {
            return Ref::Node(*i);
        }
        let Some(schema) = self.definitions.get(name).cloned() else {
            return Ref::Any;
        };
        // Reserve the slot first so recursive types terminate.
        let index = self.nodes.len();
        self.nodes.push(Node::Any);
        self.node_of.insert(name.to_string(), index);
        let node = self.compile_inline(&schema);
        self.nodes[index] = node;
        Ref::Node(index)
    }

    fn compile_ref(&mut self, schema: &Value) -> Ref {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap_or(r);
            return self.compile_definition(name);
        }
        match self.compile_inline(schema) {
            Node::Any => Ref::Any,
            node => {
                self.nodes.push(node);
                Ref::Node(self.nodes.len() - 1)
            }
        }
    }

    fn compile_inline(&mut self, schema: &Value) -> Node {
        // OpenAPI 3.0 forbids siblings of `$ref`, so a described reference is `allOf: [$ref]`.
        if let Some(Value::Array(all)) = schema.get("allOf")
            && let [only] = all.as_slice()
        {
            return match self.compile_ref(only) {
                Ref::Any => Node::Any,
                Ref::Node(i) => Node::Alias(i),
            };
        }
        if schema.get("$ref").is_some() {
            return match self.compile_ref(schema) {
                Ref::Any => Node::Any,
                Ref::Node(i) => Node::Alias(i),
            };
        }
        if let Some(Value::Object(props)) = schema.get("properties") {
            let mut properties = HashMap::new();
            for (k, v) in props {
                let r = self.compile_ref(v);
                properties.insert(k.clone(), r);
            }
            let additional = match schema.get("additionalProperties") {
                Some(v @ Value::Object(_)) => Some(self.compile_ref(v)),
                Some(Value::Bool(true)) => Some(Ref::Any),
                _ => None,
            };
            return Node::Object {
                properties,
                additional,
            };
        }
        if let Some(v @ Value::Object(_)) = schema.get("additionalProperties") {
            let r = self.compile_ref(v);
            return Node::Object {
                properties: HashMap::new(),
                additional: Some(r),
            };
        }
        if let Some(items) = schema.get("items") {
            return Node::Array(self.compile_ref(items));
        }
        Node::Any
    }

    /// Fields of `value` (the body of a `kind` object) that the kind's schema does not have, as
    /// paths like `spec.foo` or `spec.volumes[0].bar`.
    pub fn unknown_fields(&self, kind: Kind, value: &Value) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(i) = self.roots.get(&kind).and_then(|n| self.node_of.get(n)) {
            self.walk(Ref::Node(*i), value, &mut Vec::new(), &mut out);
        }
        out
    }

    /// `path` leads to `value`, as steps: it is spelled out only for an unknown field, not
    /// formatted for every field of every body (that was 1.5% of the server's CPU under
    /// creates).
    fn walk<'a>(&self, r: Ref, value: &'a Value, path: &mut Vec<Step<'a>>, out: &mut Vec<String>) {
        let Ref::Node(i) = r else { return };
        match (&self.nodes[i], value) {
            (Node::Alias(target), _) => self.walk(Ref::Node(*target), value, path, out),
            (
                Node::Object {
                    properties,
                    additional,
                },
                Value::Object(map),
            ) => {
                for (k, v) in map {
                    path.push(Step::Field(k));
                    match properties.get(k).or(additional.as_ref()) {
                        Some(r) => self.walk(*r, v, path, out),
                        None => out.push(spell(path)),
                    }
                    path.pop();
                }
            }
            (Node::Array(item), Value::Array(items)) => {
                for (n, v) in items.iter().enumerate() {
                    path.push(Step::Item(n));
                    self.walk(*item, v, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
}

/// A step on the path to a field: into an object's field, or an array's item.
enum Step<'a> {
    Field(&'a str),
    Item(usize),
}

/// A path as Kubernetes spells it in errors: `spec.volumes[0].name`.
fn spell(path: &[Step]) -> String {
    let mut spelled = String::new();
    for step in path {
        match step {
            Step::Field(name) => {
                if !spelled.is_empty() {
                    spelled.push('.');
                }
                spelled.push_str(name);
            }
            Step::Item(n) => {
                let _ = write!(spelled, "[{n}]");
            }
        }
    }
    spelled
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_found_at_any_depth() {
        let s = schemas();
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"any": "label"}, "colour": "x"},
            "spec": {"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "c", "size": 1}}],
                     "nodeName": "n"},
            "extra": true
        });
        let mut found = s.unknown_fields(Kind::Pod, &pod);
        found.sort();
        assert_eq!(
            found,
            vec![
                "extra",
                "metadata.colour",
                "spec.volumes[0].persistentVolumeClaim.size"
            ]
        );
    }

    #[test]
    fn unknown_fields_inside_later_items_of_nested_arrays_are_spelled_with_their_indexes() {
        let s = schemas();
        let pv = json!({
            "metadata": {"name": "v", "annotations": {"free/form": "yes"}},
            "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "k", "operator": "In", "values": ["a"]}]},
                {"matchExpressions": [
                    {"key": "k", "operator": "In", "values": ["a", "b"]},
                    {"key": "k", "operator": "In", "colour": "x"}
                ], "shade": 1}
            ]}}, "": 0}
        });
        let mut found = s.unknown_fields(Kind::PersistentVolume, &pv);
        found.sort();
        assert_eq!(
            found,
            vec![
                "spec.",
                "spec.nodeAffinity.required.nodeSelectorTerms[1].matchExpressions[1].colour",
                "spec.nodeAffinity.required.nodeSelectorTerms[1].shade",
            ]
        );
    }

    #[test]
    fn maps_and_free_form_fields_accept_any_key() {
        let s = schemas();
        let sc = json!({"metadata": {"name": "x", "annotations": {"whatever/key": "v"}},
                        "provisioner": "p", "parameters": {"anything": "goes"}});
        assert!(s.unknown_fields(Kind::StorageClass, &sc).is_empty());
    }
}
