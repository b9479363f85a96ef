//! Documents from clients (request bodies, patches, applied configurations), read under limits
//! that hold on what the document *becomes*, not only on the bytes received.
//!
//! - **Depth.** Nothing a client sends or makes through a patch nests deeper than
//!   [`MAX_DEPTH`]. Deep values cost stack in every recursive step that touches them (decoding,
//!   dropping, serializing); a bounded depth keeps every one of those steps safe.
//! - **Expansion.** JSON cannot grow while it is parsed, but YAML aliases replay an anchored
//!   subtree wherever they appear: a 1 KB "billion laughs" document is gigabytes once built.
//!   YAML is therefore read through a budget: every node produced costs one unit plus the
//!   length of its text, and a document may cost at most twice its own size (plus a little).
//!   Ordinary use of aliases fits easily; expansion is refused before it is built.
//! - **Measure.** [`measure`] walks a value without recursion and tells its depth and roughly
//!   its serialized size, so that a patch can be checked before it copies a value.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// How deep any document, and any object made from one, may nest (objects and lists count).
/// Kubernetes objects rarely pass 15.
pub const MAX_DEPTH: usize = 64;

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error("{0}")]
    Syntax(String),
    #[error("the document nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error(
        "the document expands to more than twice its own size (YAML aliases); refused before it was built"
    )]
    TooLarge,
}

/// Parses YAML (which includes JSON) into a JSON value, with the depth and expansion limits.
pub fn parse_yaml(bytes: &[u8]) -> Result<Value, DocumentError> {
    // The YAML parser takes time quadratic in the nesting of flow collections (`[[[[...`),
    // before any limit of ours could stop it: look at the brackets first.
    if flow_depth(bytes) > MAX_DEPTH {
        return Err(DocumentError::TooDeep);
    }
    let budget = Budget {
        left: Cell::new(bytes.len().saturating_mul(2).saturating_add(1024)),
        exceeded: Cell::new(None),
    };
    let de = serde_yaml_ng::Deserializer::from_slice(bytes);
    let result = ValueSeed {
        budget: &budget,
        depth: 0,
    }
    .deserialize(de);
    match (result, budget.exceeded.take()) {
        (_, Some(e)) => Err(e),
        (Ok(v), None) => Ok(v),
        (Err(e), None) => Err(DocumentError::Syntax(e.to_string())),
    }
}

/// Parses JSON into a value, with the depth limit (JSON cannot expand).
pub fn parse_json(bytes: &[u8]) -> Result<Value, DocumentError> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| DocumentError::Syntax(e.to_string()))?;
    if measure(&v).depth > MAX_DEPTH {
        return Err(DocumentError::TooDeep);
    }
    Ok(v)
}

/// The depth and approximate serialized size of a value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Measure {
    /// Levels of objects and lists; a scalar is 0, `{}` is 1.
    pub depth: usize,
    /// Bytes of its compact JSON, counting strings by their unescaped length.
    pub bytes: usize,
}

/// Measures a value without recursion (a value of any depth is safe to measure).
pub fn measure(v: &Value) -> Measure {
    let mut m = Measure::default();
    let mut stack: Vec<(&Value, usize)> = vec![(v, 0)];
    while let Some((v, depth)) = stack.pop() {
        match v {
            Value::Null => m.bytes += 4,
            Value::Bool(_) => m.bytes += 5,
            Value::Number(_) => m.bytes += 8,
            Value::String(s) => m.bytes += s.len() + 2,
            Value::Array(items) => {
                m.depth = m.depth.max(depth + 1);
                m.bytes += 2 + items.len();
                stack.extend(items.iter().map(|i| (i, depth + 1)));
            }
            Value::Object(map) => {
                m.depth = m.depth.max(depth + 1);
                m.bytes += 2;
                for (k, child) in map {
                    m.bytes += k.len() + 4;
                    stack.push((child, depth + 1));
                }
            }
        }
    }
    m
}

/// How deep the flow collections (`[...]`, `{...}`) of YAML text nest, skipping quoted
/// strings and comments. Brackets inside plain scalars count too, which can only overstate.
fn flow_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut quote: Option<u8> = None;
    let mut escaped = false;
    let mut comment = false;
    let mut previous = b'\n';
    for &b in bytes {
        if comment {
            comment = b != b'\n';
        } else if let Some(q) = quote {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') if q == b'"' => escaped = true,
                (false, c) if c == q => quote = None,
                _ => {}
            }
        } else {
            match b {
                b'"' | b'\'' => quote = Some(b),
                b'#' if previous.is_ascii_whitespace() => comment = true,
                b'[' | b'{' => {
                    depth += 1;
                    max = max.max(depth);
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        previous = b;
    }
    max
}

/// Depth of JSON text, from its brackets (strings skipped); no parsing.
pub fn json_text_depth(bytes: &[u8]) -> usize {
    let mut m = TextMeter::default();
    m.feed(bytes);
    m.max_depth
}

/// Counts the bytes and the bracket depth of JSON text as it is written, keeping none of it:
/// serializing an object into a meter tells its stored size and depth without a buffer.
#[derive(Debug, Default)]
pub struct TextMeter {
    pub bytes: usize,
    pub max_depth: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl TextMeter {
    pub fn feed(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len();
        let mut rest = chunk;
        while let Some((&b, after)) = rest.split_first() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                    rest = after;
                    continue;
                }
                // Most of a JSON text is inside strings: jump to the next quote or backslash
                // rather than looking at every byte (every write is measured).
                let Some(at) = memchr::memchr2(b'"', b'\\', rest) else {
                    return;
                };
                match rest[at] {
                    b'\\' => self.escaped = true,
                    _ => self.in_string = false,
                }
                rest = &rest[at + 1..];
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    self.depth += 1;
                    self.max_depth = self.max_depth.max(self.depth);
                }
                b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
            rest = after;
        }
    }
}

impl std::io::Write for TextMeter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.feed(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Budget {
    left: Cell<usize>,
    /// Set when a limit stopped the parse: the deserializer's own error then only says "custom".
    exceeded: Cell<Option<DocumentError>>,
}

impl Budget {
    fn charge<E: de::Error>(&self, units: usize) -> Result<(), E> {
        match self.left.get().checked_sub(units) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => self.fail(DocumentError::TooLarge),
        }
    }

    fn fail<T, E: de::Error>(&self, e: DocumentError) -> Result<T, E> {
        let message = e.to_string();
        self.exceeded.set(Some(e));
        Err(E::custom(message))
    }
}

#[derive(Clone, Copy)]
struct ValueSeed<'a> {
    budget: &'a Budget,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'a> ValueSeed<'a> {
    fn nested<E: de::Error>(self) -> Result<ValueSeed<'a>, E> {
        if self.depth >= MAX_DEPTH {
            return self.budget.fail(DocumentError::TooDeep);
        }
        Ok(ValueSeed {
            budget: self.budget,
            depth: self.depth + 1,
        })
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON-compatible value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.budget.charge(1)?;
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.budget.charge(1)?;
        Ok(Value::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.budget.charge(1)?;
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.budget.charge(1)?;
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.budget.charge(1 + v.len())?;
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.budget.charge(1 + v.len())?;
        Ok(Value::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.budget.charge(1)?;
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.budget.charge(1)?;
        let child = self.nested()?;
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(child)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.budget.charge(1)?;
        let child = self.nested()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(KeySeed(child))? {
            let value = map.next_value_seed(child)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// Keys of a mapping: strings (YAML's other scalar keys are written as their text).
struct KeySeed<'a>(ValueSeed<'a>);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = String;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        match self.0.deserialize(d)? {
            Value::String(s) => Ok(s),
            Value::Null => Ok("null".to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            Value::Number(n) => Ok(n.to_string()),
            _ => Err(de::Error::custom(
                "mapping keys must be strings, numbers or booleans",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_yaml_and_json_parse_to_the_same_value() {
        let yaml = b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels: {a: '1'}\nspec:\n  volumes: [{name: x}]\n";
        let v = parse_yaml(yaml).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "1"}}, "spec": {"volumes": [{"name": "x"}]}})
        );
        assert_eq!(parse_json(v.to_string().as_bytes()).unwrap(), v);
    }

    #[test]
    fn modest_aliases_are_fine() {
        let yaml = b"base: &b {size: 1Gi, mode: rw}\none: *b\ntwo: *b\n";
        let v = parse_yaml(yaml).unwrap();
        assert_eq!(v["two"]["size"], "1Gi");
    }

    #[test]
    fn billion_laughs_is_refused_before_it_is_built() {
        let mut doc = String::from(
            "a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for i in 1..10 {
            let p = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p}]\n"
            ));
        }
        let started = std::time::Instant::now();
        assert_eq!(parse_yaml(doc.as_bytes()), Err(DocumentError::TooLarge));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn deep_documents_are_refused() {
        let deep_json = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(
            parse_json(deep_json.as_bytes()),
            Err(DocumentError::TooDeep)
        );
        assert_eq!(
            parse_yaml(deep_json.as_bytes()),
            Err(DocumentError::TooDeep)
        );
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse_yaml(ok.as_bytes()).is_ok());
        assert!(parse_json(ok.as_bytes()).is_ok());
    }

    #[test]
    fn deep_flow_yaml_is_refused_before_it_is_parsed() {
        let deep = "[".repeat(100_000);
        let started = std::time::Instant::now();
        assert_eq!(parse_yaml(deep.as_bytes()), Err(DocumentError::TooDeep));
        let deep_maps = "{a: ".repeat(100_000);
        assert_eq!(
            parse_yaml(deep_maps.as_bytes()),
            Err(DocumentError::TooDeep)
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // Brackets in quotes and comments do not count.
        let quoted = format!(
            "a: '{}'\nb: \"{}\" # {}\n",
            "[".repeat(200),
            "{".repeat(200),
            "[".repeat(200)
        );
        assert!(parse_yaml(quoted.as_bytes()).is_ok());
    }

    #[test]
    fn measure_and_text_depth_agree_with_the_value() {
        let v = json!({"a": [1, {"b": "xyz"}], "c": null});
        let m = measure(&v);
        assert_eq!(m.depth, 3);
        assert!(m.bytes >= v.to_string().len() / 2 && m.bytes <= v.to_string().len() * 2);
        assert_eq!(json_text_depth(v.to_string().as_bytes()), 3);
        assert_eq!(json_text_depth(br#"{"a":"[[[{{{"}"#), 1);
        assert_eq!(json_text_depth(br#"{"a":"\"[["}"#), 1);
    }

    /// A text fed in pieces, split anywhere (between a backslash and what it escapes, say),
    /// measures as the whole does.
    #[test]
    fn a_text_measures_the_same_however_it_is_split() {
        let text = br#"{"a":"x\\","b":[["\"[{","\\\"]"],{"c":"]]]}}"}],"d":"\u005b"}"#;
        assert_eq!(json_text_depth(text), 3);
        for at in 0..=text.len() {
            let mut m = TextMeter::default();
            m.feed(&text[..at]);
            m.feed(&text[at..]);
            assert_eq!(
                (m.bytes, m.max_depth, m.depth),
                (text.len(), 3, 0),
                "split at {at}"
            );
        }
    }
}
