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
    /// `store:`: where objects live. Absent: SQLite in the data directory.
    #[serde(default)]
    pub store: Option<StoreConfig>,
}

/// `store:` in the config file (`--store` on the command line overrides its URL).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite`, or `postgres://user@host:port/database` for replicas. A password may come
    /// from `PGPASSWORD` rather than the URL.
    pub url: String,
    /// Connections to PostgreSQL per replica.
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    /// How long to wait for a connection or a statement.
    #[serde(default = "default_store_timeout", with = "duration")]
    pub timeout: Duration,
}

fn default_pool_size() -> u32 {
    8
}

fn default_store_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `controllers.leaderElection`: how replicas share the controllers (see
/// `controllers::leader`).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaderElectionConfig {
    #[serde(default = "default_lease_duration", with = "duration")]
    pub lease_duration: Duration,
    #[serde(default = "default_renew_deadline", with = "duration")]
    pub renew_deadline: Duration,
    #[serde(default = "default_retry_period", with = "duration")]
    pub retry_period: Duration,
}

fn default_lease_duration() -> Duration {
    crate::controllers::leader::Timing::default().lease_duration
}
fn default_renew_deadline() -> Duration {
    crate::controllers::leader::Timing::default().renew_deadline
}
fn default_retry_period() -> Duration {
    crate::controllers::leader::Timing::default().retry_period
}

impl Default for LeaderElectionConfig {
    fn default() -> Self {
        LeaderElectionConfig {
            lease_duration: default_lease_duration(),
            renew_deadline: default_renew_deadline(),
            retry_period: default_retry_period(),
        }
    }
}

impl LeaderElectionConfig {
    pub fn timing(&self) -> anyhow::Result<crate::controllers::leader::Timing> {
        let t = crate::controllers::leader::Timing {
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period,
        };
        t.validate()
            .map_err(|e| anyhow::anyhow!("controllers.leaderElection: {e}"))?;
        Ok(t)
    }
}

/// `providers:`: one section per provider, by its name in the server's table of providers
/// (`local`, `nfs`, `ebs`, `memory`, or one a custom build adds). Each section is read by its
/// provider; a section naming no provider is an error when the server starts.
pub type ProvidersConfig = BTreeMap<String, serde_json::Value>;

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControllersConfig {
    /// How often every object is reconciled even without changes. A resync looks at no more
    /// than 1,000 objects a second per controller, so beyond that many objects per period it
    /// takes longer than the period (the next one starts when it ends).
    #[serde(default = "default_resync", with = "duration")]
    pub resync: Duration,
    /// How long volumes in use stay attached to an unhealthy node before a forced detach
    /// (Kubernetes: a fixed 6 minutes). `--max-wait-for-unmount` overrides it.
    #[serde(default = "default_max_wait", with = "duration")]
    pub max_wait_for_unmount: Duration,
    /// Used only when replicas share a PostgreSQL store.
    #[serde(default)]
    pub leader_election: LeaderElectionConfig,
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
            leader_election: LeaderElectionConfig::default(),
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
        let c: Config = serde_yaml_ng::from_str(
            "store: {url: 'postgres://s@db/stowage', poolSize: 4}\n\
             controllers: {leaderElection: {leaseDuration: 10s, renewDeadline: 8s}}",
        )
        .unwrap();
        assert_eq!(c.store.as_ref().unwrap().pool_size, 4);
        assert_eq!(
            c.controllers
                .leader_election
                .timing()
                .unwrap()
                .lease_duration,
            Duration::from_secs(10)
        );
        let c: Config =
            serde_yaml_ng::from_str("controllers: {leaderElection: {renewDeadline: 9s}}").unwrap();
        assert!(
            c.controllers.leader_election.timing().is_err(),
            "deadline past the lease"
        );
    }
}
