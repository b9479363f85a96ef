//! The server's configuration file (`stowage serve --config stowage.yaml`). Everything has a
//! default; with no file at all, the local provider is on and everything else is default.

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

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProvidersConfig {
    #[serde(default)]
    pub local: stowage_provider_local::Config,
    /// NFS shares, each described by its StorageClass; on unless `enabled: false`.
    #[serde(default)]
    pub nfs: stowage_provider_nfs::Config,
    /// AWS EBS; on when this section is present.
    #[serde(default)]
    pub ebs: Option<stowage_provider_ebs::Config>,
    /// An in-memory provider (`memory.stowage.dev`) whose volumes behave like network disks;
    /// for trying Stowage out and for testing, never for data.
    #[serde(default)]
    pub memory: MemoryConfig,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemoryConfig {
    #[serde(default)]
    pub enabled: bool,
    /// Simulated attach/detach latency, e.g. `50ms`.
    pub attach_delay: Option<String>,
    /// Total capacity, as a quantity (default: unlimited).
    pub capacity: Option<String>,
}

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
        assert!(c.providers.local.enabled);
        let c: Config =
            serde_yaml_ng::from_str("providers: {local: {root: /x, capacity: 10Gi}}").unwrap();
        assert_eq!(c.providers.local.capacity.as_deref(), Some("10Gi"));
        assert!(serde_yaml_ng::from_str::<Config>("providers: {locl: {}}").is_err());
        assert!(serde_yaml_ng::from_str::<Config>("controllers: {resync: soon}").is_err());
    }
}
