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
