//! The server's configuration file (`stowage serve --config stowage.yaml`). Everything has a
//! default; with no file at all, the local provider is on and everything else is default.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;
pub use stowage_provider::duration::parse_duration;
use stowage_provider::duration::serde as duration;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub providers: ProvidersConfig,
    #[serde(default)]
    pub controllers: ControllersConfig,
}

/// `providers:`: one section per provider, by its name in the server's table of providers
/// (`local`, `nfs`, `ebs`, `memory`, or one a custom build adds). Each section is read by its
/// provider; a section naming no provider is an error when the server starts.
pub type ProvidersConfig = BTreeMap<String, serde_json::Value>;

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControllersConfig {
    /// How often every object is reconciled even without changes.
    #[serde(default = "default_resync", with = "duration")]
    pub resync: Duration,
    /// How long volumes in use stay attached to an unhealthy node before a forced detach
    /// (Kubernetes: a fixed 6 minutes). `--max-wait-for-unmount` overrides it.
    #[serde(default = "default_max_wait", with = "duration")]
    pub max_wait_for_unmount: Duration,
}

fn default_max_wait() -> Duration {
    Duration::from_secs(360)
}

fn default_resync() -> Duration {
    Duration::from_secs(60)
}

impl Default for ControllersConfig {
    fn default() -> Self {
        ControllersConfig {
            resync: default_resync(),
            max_wait_for_unmount: default_max_wait(),
        }
    }
}

impl Config {
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        serde_yaml_ng::from_str(&text).with_context(|| format!("in config file {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_means_defaults_and_typos_are_errors() {
        let c: Config = serde_yaml_ng::from_str("{}").unwrap();
        assert!(c.providers.is_empty());
        let c: Config =
            serde_yaml_ng::from_str("providers: {local: {root: /x, capacity: 10Gi}}").unwrap();
        assert_eq!(c.providers["local"]["capacity"], "10Gi");
        assert!(serde_yaml_ng::from_str::<Config>("controlers: {}").is_err());
        assert!(serde_yaml_ng::from_str::<Config>("controllers: {resync: soon}").is_err());
    }
}
