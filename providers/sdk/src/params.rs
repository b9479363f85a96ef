//! StorageClass parameters that more than one provider takes, read one way everywhere: the
//! same names, defaults, accepted values and error messages.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ProviderError, Result};

/// What happens to a volume's data when the volume is deleted.
pub const ON_DELETE: &str = "onDelete";
/// The octal mode of a new volume's directory.
pub const MOUNT_PERMISSIONS: &str = "mountPermissions";

/// Parameters from `(name, value)` pairs, as tests and fixtures write them.
pub fn from_pairs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What happens to a volume's directory when the volume is deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDelete {
    /// Removed with everything in it (the default).
    #[default]
    Delete,
    /// Kept where it is.
    Retain,
    /// Renamed to `archived-<name>` (then `-1`, `-2`, ...; never over an earlier archive).
    Archive,
}

impl OnDelete {
    pub fn parse(s: &str) -> Result<OnDelete> {
        match s {
            "delete" => Ok(OnDelete::Delete),
            "retain" => Ok(OnDelete::Retain),
            "archive" => Ok(OnDelete::Archive),
            other => Err(ProviderError::invalid(format!(
                "{ON_DELETE} {other:?}: use delete, retain or archive"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OnDelete::Delete => "delete",
            OnDelete::Retain => "retain",
            OnDelete::Archive => "archive",
        }
    }

    /// The class's `onDelete`, or the default.
    pub fn of(params: &BTreeMap<String, String>) -> Result<OnDelete> {
        params
            .get(ON_DELETE)
            .map_or(Ok(OnDelete::default()), |v| OnDelete::parse(v))
    }
}

/// The class's `mountPermissions` (default 0777).
pub fn mount_permissions(params: &BTreeMap<String, String>) -> Result<u32> {
    match params.get(MOUNT_PERMISSIONS) {
        None => Ok(0o777),
        Some(m) => u32::from_str_radix(m, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| {
                ProviderError::invalid(format!(
                    "{MOUNT_PERMISSIONS} {m:?} is not an octal mode like 0775"
                ))
            }),
    }
}

/// One StorageClass parameter a provider takes, as a form or a listing describes it
/// ([`crate::Provider::class_parameters`]). The provider's own parser stays the truth; this says
/// what it accepts, for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassParameter {
    pub name: &'static str,
    pub description: &'static str,
    /// The values it takes, when they are a fixed set.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub values: &'static [&'static str],
    /// A regular expression a whole value must match (written so that JavaScript and Rust's
    /// `regex` read it alike), when the values are not a fixed set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<&'static str>,
    /// What an absent parameter means.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<&'static str>,
    pub required: bool,
    /// `name` is a prefix taking a number: `tagSpecification_1`, `tagSpecification_2`, …
    pub numbered: bool,
}

impl ClassParameter {
    pub const fn new(name: &'static str, description: &'static str) -> Self {
        ClassParameter {
            name,
            description,
            values: &[],
            pattern: None,
            default: None,
            required: false,
            numbered: false,
        }
    }

    pub const fn values(mut self, values: &'static [&'static str]) -> Self {
        self.values = values;
        self
    }

    pub const fn pattern(mut self, pattern: &'static str) -> Self {
        self.pattern = Some(pattern);
        self
    }

    pub const fn default(mut self, default: &'static str) -> Self {
        self.default = Some(default);
        self
    }

    pub const fn required(mut self) -> Self {
        self.required = true;
        self
    }

    pub const fn numbered(mut self) -> Self {
        self.numbered = true;
        self
    }
}

/// Refuses a parameter `described` does not name (a numbered one by its prefix), with one
/// message for every provider: a typo is an error on the claim, never a silent default.
pub fn refuse_undescribed(
    params: &BTreeMap<String, String>,
    described: &[ClassParameter],
    provider: &str,
) -> Result<()> {
    let known = |key: &str| {
        described.iter().any(|p| {
            if p.numbered {
                key.starts_with(p.name)
            } else {
                key == p.name
            }
        })
    };
    let Some(unknown) = params.keys().find(|k| !known(k)) else {
        return Ok(());
    };
    let names: Vec<String> = described
        .iter()
        .map(|p| {
            if p.numbered {
                format!("{}N", p.name)
            } else {
                p.name.to_string()
            }
        })
        .collect();
    Err(ProviderError::invalid(format!(
        "unknown parameter {unknown:?}; the {provider} provider takes {}",
        names.join(", ")
    )))
}

/// An octal file mode, as `mountPermissions` takes it.
pub const OCTAL_MODE_PATTERN: &str = "\\+?0*[0-7]{1,4}";
/// A size like `500Gi`.
pub const QUANTITY_PATTERN: &str =
    "\\+?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?";

/// `onDelete`, described once for every provider that takes it.
pub const ON_DELETE_PARAMETER: ClassParameter = ClassParameter::new(
    ON_DELETE,
    "What happens to a volume's data when the volume is deleted: removed, kept, or renamed to archived-<name>",
)
.values(&["delete", "retain", "archive"])
.default("delete");

/// `mountPermissions`, described once for every provider that takes it.
pub const MOUNT_PERMISSIONS_PARAMETER: ClassParameter = ClassParameter::new(
    MOUNT_PERMISSIONS,
    "The octal mode of a new volume's directory",
)
.pattern(OCTAL_MODE_PATTERN)
.default("0777");

/// The names an archived directory `name` tries, in order: `archived-<name>`, then
/// `archived-<name>-1`, `-2`, ...
pub fn archive_names(name: &str) -> impl Iterator<Item = String> + '_ {
    (0u32..).map(move |n| match n {
        0 => format!("archived-{name}"),
        n => format!("archived-{name}-{n}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use from_pairs as params;

    #[test]
    fn shared_parameters_parse_with_one_set_of_rules() {
        assert_eq!(OnDelete::of(&params(&[])).unwrap(), OnDelete::Delete);
        assert_eq!(
            OnDelete::of(&params(&[("onDelete", "archive")])).unwrap(),
            OnDelete::Archive
        );
        assert!(OnDelete::of(&params(&[("onDelete", "shred")])).is_err());
        assert_eq!(mount_permissions(&params(&[])).unwrap(), 0o777);
        assert_eq!(
            mount_permissions(&params(&[("mountPermissions", "0750")])).unwrap(),
            0o750
        );
        for bad in ["999", "rwx", "77777"] {
            assert!(mount_permissions(&params(&[("mountPermissions", bad)])).is_err());
        }
        let names: Vec<String> = archive_names("v").take(3).collect();
        assert_eq!(names, ["archived-v", "archived-v-1", "archived-v-2"]);
    }
}
