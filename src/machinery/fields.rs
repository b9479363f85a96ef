//! Field selectors (`fieldSelector=status.phase=Bound,spec.nodeName!=n1`).
//!
//! Each kind declares which field labels it supports (see `resources`); the selector itself only
//! knows `=`, `==` and `!=`, as in Kubernetes.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub negated: bool,
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    pub fn parse(input: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        if input.trim().is_empty() {
            return Ok(Self::default());
        }
        for part in split_unescaped_commas(input) {
            let part = part.trim();
            let (field, negated, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, false, v)
            } else {
                return Err(format!(
                    "invalid selector: '{input}'; can't understand '{part}'"
                ));
            };
            let field = field.trim();
            if field.is_empty() {
                return Err(format!("invalid selector: '{input}'; empty field name"));
            }
            requirements.push(FieldRequirement {
                field: field.to_string(),
                negated,
                value: unescape(value.trim()),
            });
        }
        Ok(Self { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Checks every field against `supported`; the error names the first unsupported one.
    pub fn check_supported(&self, supported: &[&str]) -> Result<(), String> {
        for r in &self.requirements {
            if !supported.contains(&r.field.as_str()) {
                return Err(format!("field label not supported: {}", r.field));
            }
        }
        Ok(())
    }

    /// `value_of` returns the object's value for a field label (absent fields read as "").
    pub fn matches(&self, value_of: impl Fn(&str) -> String) -> bool {
        self.requirements
            .iter()
            .all(|r| (value_of(&r.field) == r.value) != r.negated)
    }

    /// The value this selector pins `field` to with `=`, if any (used to narrow a list).
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && !r.negated)
            .map(|r| r.value.as_str())
    }
}

fn split_unescaped_commas(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b',' => {
                parts.push(&s[start..i]);
                start = i + 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    parts.push(&s[start..]);
    parts
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equality_and_inequality_requirements_match() {
        let s = FieldSelector::parse("status.phase=Bound,spec.nodeName!=n1").unwrap();
        let obj = |f: &str| match f {
            "status.phase" => "Bound".to_string(),
            "spec.nodeName" => "n2".to_string(),
            _ => String::new(),
        };
        assert!(s.matches(obj));
        let s = FieldSelector::parse("status.phase==Pending").unwrap();
        assert!(!s.matches(obj));
    }

    #[test]
    fn unsupported_fields_are_named() {
        let s = FieldSelector::parse("spec.foo=1").unwrap();
        assert_eq!(
            s.check_supported(&["metadata.name"]).unwrap_err(),
            "field label not supported: spec.foo"
        );
    }

    #[test]
    fn escaped_commas_stay_in_values() {
        let s = FieldSelector::parse(r"metadata.name=a\,b").unwrap();
        assert_eq!(s.exact("metadata.name"), Some("a,b"));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(FieldSelector::parse("nonsense").is_err());
        assert!(FieldSelector::parse("=x").is_err());
    }
}
