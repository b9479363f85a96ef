//! Field-level validation errors and the syntax rules Kubernetes applies to names and labels.
//!
//! Validators push [`FieldError`]s with a field path; the API turns the list into a 422 `Status`
//! with one `cause` per error, worded as Kubernetes words them so clients and people recognise them.

use std::fmt;

/// A dotted field path such as `spec.accessModes[0]` or `metadata.labels[app]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Path(String);

impl Path {
    pub fn root(name: &str) -> Self {
        Path(name.to_string())
    }
    // Validation builds a path for every field it checks, valid or not, so these append
    // rather than go through `format!` (whose machinery was 1.5% of a create's CPU).
    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            return Path(name.to_string());
        }
        self.joined(&[".", name])
    }
    pub fn index(&self, i: usize) -> Self {
        self.joined(&["[", &i.to_string(), "]"])
    }
    pub fn key(&self, k: &str) -> Self {
        self.joined(&["[", k, "]"])
    }
    fn joined(&self, parts: &[&str]) -> Self {
        let mut s =
            String::with_capacity(self.0.len() + parts.iter().map(|p| p.len()).sum::<usize>());
        s.push_str(&self.0);
        for p in parts {
            s.push_str(p);
        }
        Path(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorType {
    Required,
    Invalid,
    NotSupported,
    Forbidden,
    Duplicate,
    TooLong,
    TooMany,
}

impl ErrorType {
    /// The `reason` of a Status cause.
    pub fn cause_reason(&self) -> &'static str {
        match self {
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::TooMany => "FieldValueTooMany",
        }
    }
    fn label(&self) -> &'static str {
        match self {
            ErrorType::Required => "Required value",
            ErrorType::Invalid => "Invalid value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::TooLong => "Too long",
            ErrorType::TooMany => "Too many",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub kind: ErrorType,
    pub field: String,
    /// The offending value, already rendered (quoted for strings), if it helps to show it.
    pub value: Option<String>,
    pub detail: String,
}

impl FieldError {
    /// The cause message, e.g. `Invalid value: "Foo": must be ...` or `Required value`.
    pub fn message(&self) -> String {
        let mut m = self.kind.label().to_string();
        if let Some(v) = &self.value {
            m.push_str(": ");
            m.push_str(v);
        }
        if !self.detail.is_empty() {
            m.push_str(": ");
            m.push_str(&self.detail);
        }
        m
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message())
    }
}

/// An accumulator of field errors; validators add to it and the caller checks it at the end.
/// It keeps at most [`MAX_FIELD_ERRORS`]: an object with a hundred thousand bad labels gets a
/// readable answer (and the server does not format a hundred thousand messages).
#[derive(Debug, Default)]
pub struct FieldErrors(pub Vec<FieldError>);

/// Field errors kept per request; the rest are counted in one last error.
pub const MAX_FIELD_ERRORS: usize = 100;

fn quote(v: &str) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| format!("{v:?}"))
}

impl FieldErrors {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn push(
        &mut self,
        kind: ErrorType,
        path: &Path,
        value: Option<String>,
        detail: impl Into<String>,
    ) {
        if self.0.len() >= MAX_FIELD_ERRORS {
            // One last entry counts what was left out.
            let omitted = match self.0.get(MAX_FIELD_ERRORS) {
                Some(last) => {
                    last.value
                        .as_deref()
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0)
                        + 1
                }
                None => 1,
            };
            let summary = FieldError {
                kind: ErrorType::TooMany,
                field: "<more>".to_string(),
                value: Some(omitted.to_string()),
                detail: format!("{omitted} more errors not shown"),
            };
            self.0.truncate(MAX_FIELD_ERRORS);
            self.0.push(summary);
            return;
        }
        self.0.push(FieldError {
            kind,
            field: path.to_string(),
            value,
            detail: detail.into(),
        });
    }
    pub fn required(&mut self, path: &Path, detail: impl Into<String>) {
        self.push(ErrorType::Required, path, None, detail);
    }
    pub fn invalid(&mut self, path: &Path, value: &str, detail: impl Into<String>) {
        self.push(ErrorType::Invalid, path, Some(quote(value)), detail);
    }
    /// An invalid value that is not a plain string (a number, a list); rendered as given.
    pub fn invalid_raw(
        &mut self,
        path: &Path,
        value: impl fmt::Display,
        detail: impl Into<String>,
    ) {
        self.push(ErrorType::Invalid, path, Some(value.to_string()), detail);
    }
    pub fn not_supported(&mut self, path: &Path, value: &str, supported: &[&str]) {
        let list = supported
            .iter()
            .map(|s| quote(s))
            .collect::<Vec<_>>()
            .join(", ");
        self.push(
            ErrorType::NotSupported,
            path,
            Some(quote(value)),
            format!("supported values: {list}"),
        );
    }
    pub fn forbidden(&mut self, path: &Path, detail: impl Into<String>) {
        self.push(ErrorType::Forbidden, path, None, detail);
    }
    pub fn duplicate(&mut self, path: &Path, value: &str) {
        self.push(ErrorType::Duplicate, path, Some(quote(value)), "");
    }
    pub fn too_long(&mut self, path: &Path, max: usize) {
        self.push(
            ErrorType::TooLong,
            path,
            None,
            format!("may not be more than {max} bytes"),
        );
    }
    pub fn too_many(&mut self, path: &Path, actual: usize, max: usize) {
        self.push(
            ErrorType::TooMany,
            path,
            Some(actual.to_string()),
            format!("must have at most {max} items"),
        );
    }
    /// Records `errors` from a syntax checker (which return `Vec<String>` messages) as Invalid.
    pub fn syntax(&mut self, path: &Path, value: &str, errors: Vec<String>) {
        for e in errors {
            self.invalid(path, value, e);
        }
    }
    pub fn immutable(&mut self, path: &Path) {
        self.push(ErrorType::Invalid, path, None, "field is immutable");
    }
}

pub const DNS1123_LABEL_MAX: usize = 63;
pub const DNS1123_SUBDOMAIN_MAX: usize = 253;
const LABEL_VALUE_MAX: usize = 63;
const QUALIFIED_NAME_MAX: usize = 63;

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn is_dns1123_label_syntax(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && is_lower_alnum(b[0])
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
}

/// RFC 1123 label: namespace names, node-local names.
pub fn dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        errs.push(format!(
            "must be no more than {DNS1123_LABEL_MAX} characters"
        ));
    }
    if !is_dns1123_label_syntax(s) {
        errs.push(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
             and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', \
             regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                .to_string(),
        );
    }
    errs
}

/// RFC 1123 subdomain: the names of most objects.
pub fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
        ));
    }
    if s.is_empty() || !s.split('.').all(is_dns1123_label_syntax) {
        errs.push(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
             '-' or '.', and must start and end with an alphanumeric character (e.g. \
             'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                .to_string(),
        );
    }
    errs
}

fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
}

/// A qualified name (`prefix/name` or `name`): label keys, annotation keys, finalizers.
pub fn qualified_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            errs.push("prefix part must be non-empty".to_string());
        } else {
            for e in dns1123_subdomain(prefix) {
                errs.push(format!("prefix part {e}"));
            }
        }
        if name.contains('/') {
            errs.push(
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and \
                 must start and end with an alphanumeric character, with an optional DNS subdomain \
                 prefix and '/'"
                    .to_string(),
            );
            return errs;
        }
    }
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else {
        if name.len() > QUALIFIED_NAME_MAX {
            errs.push(format!(
                "name part must be no more than {QUALIFIED_NAME_MAX} characters"
            ));
        }
        if !is_qualified_name_part(name) {
            errs.push(
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must \
                 start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or \
                 '123-abc', regex used for validation is \
                 '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
                    .to_string(),
            );
        }
    }
    errs
}

/// A label value: empty, or up to 63 characters of the qualified-name alphabet.
pub fn label_value(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > LABEL_VALUE_MAX {
        errs.push(format!("must be no more than {LABEL_VALUE_MAX} characters"));
    }
    if !s.is_empty() && !is_qualified_name_part(s) {
        errs.push(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', \
             '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  \
             or 'my_value',  or '12345', regex used for validation is \
             '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
                .to_string(),
        );
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomain_names_follow_rfc_1123() {
        assert!(dns1123_subdomain("pvc-1.data").is_empty());
        assert!(!dns1123_subdomain("UPPER").is_empty());
        assert!(!dns1123_subdomain("-lead").is_empty());
        assert!(!dns1123_subdomain("a..b").is_empty());
        assert!(!dns1123_subdomain("").is_empty());
        assert!(!dns1123_subdomain(&"a".repeat(254)).is_empty());
        assert!(!dns1123_subdomain("a/b").is_empty());
    }

    #[test]
    fn labels_reject_dots_but_subdomains_allow_them() {
        assert!(dns1123_label("ns-1").is_empty());
        assert!(!dns1123_label("ns.1").is_empty());
        assert!(!dns1123_label(&"a".repeat(64)).is_empty());
    }

    #[test]
    fn qualified_names_take_an_optional_dns_prefix() {
        assert!(qualified_name("app").is_empty());
        assert!(qualified_name("kubernetes.io/pvc-protection").is_empty());
        assert!(qualified_name("App_Name.x").is_empty());
        assert!(!qualified_name("/x").is_empty());
        assert!(!qualified_name("a/b/c").is_empty());
        assert!(!qualified_name("Bad_Prefix/x").is_empty());
        assert!(!qualified_name("x/").is_empty());
        assert!(!qualified_name("has space").is_empty());
    }

    #[test]
    fn label_values_may_be_empty_but_not_malformed() {
        assert!(label_value("").is_empty());
        assert!(label_value("v1.2_3").is_empty());
        assert!(!label_value("-x").is_empty());
        assert!(!label_value(&"v".repeat(64)).is_empty());
    }

    #[test]
    fn field_errors_render_like_kubernetes() {
        let mut errs = FieldErrors::new();
        errs.not_supported(
            &Path::root("spec").child("volumeMode"),
            "Disk",
            &["Block", "Filesystem"],
        );
        assert_eq!(
            errs.0[0].to_string(),
            r#"spec.volumeMode: Unsupported value: "Disk": supported values: "Block", "Filesystem""#
        );
        errs.required(&Path::root("spec").child("accessModes"), "");
        assert_eq!(errs.0[1].to_string(), "spec.accessModes: Required value");
    }
}
