//! Configuration, from `providers.local` in the server's config file.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[derive(Default)]
pub struct Config {
    /// Where volume directories live (default: `<data-dir>/volumes`).
    pub root: Option<PathBuf>,
    /// The node the volumes are on (default: this host's name).
    pub node: Option<String>,
    /// Total size volumes may claim, as a quantity (`100Gi`; default: the root filesystem's size).
    pub capacity: Option<String>,
}
