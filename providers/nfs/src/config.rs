//! Configuration, from `providers.nfs` in the server's config file. Everything about a share
//! (server, export, version, layout) lives in its StorageClass, so this is only the switch and
//! the time limit.

use std::time::Duration;

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// The longest one NFS request (or a mount) may take before it counts as a temporary
    /// failure, e.g. `10s` (the default).
    #[serde(
        default = "default_call_timeout",
        with = "stowage_provider::duration::serde"
    )]
    pub call_timeout: Duration,
}

fn default_call_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            call_timeout: default_call_timeout(),
        }
    }
}
