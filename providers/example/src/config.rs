//! Configuration, from `providers.example` in the server's config file.

use std::path::PathBuf;

#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Where image files live (default: `<data-dir>/example-volumes`).
    pub root: Option<PathBuf>,
}
