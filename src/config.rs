//! The server's configuration file (`stowage serve --config stowage.yaml`). Everything has a
//! default; with no file at all, the local provider is on and everything else is default.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;

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

/// Durations written like `90s`, `6m`, `1h`, `250ms`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("{s:?} is not a duration like 90s, 6m or 250ms"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("6m"), Some(Duration::from_secs(360)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("6"), None);
        assert_eq!(parse_duration("x"), None);
    }

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
