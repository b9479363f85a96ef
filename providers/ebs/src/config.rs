//! Configuration, from `providers.ebs` in the server's config file. The provider is on when the
//! section is there. Region, endpoint and credentials also come from the standard AWS
//! environment and credential chain (`AWS_REGION`, `AWS_ENDPOINT_URL_EC2`,
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, instance roles); the file only
//! overrides them.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// AWS region (default: from the environment or profile).
    pub region: Option<String>,
    /// EC2 endpoint URL, for EC2-compatible clouds and emulators (default: AWS's, or
    /// `AWS_ENDPOINT_URL_EC2`).
    pub endpoint: Option<String>,
    /// The zone for volumes whose claim says nothing about where (no WaitForFirstConsumer
    /// node, no allowedTopologies).
    pub default_zone: Option<String>,
    /// Static credentials; better left to the environment or an instance role. Never logged
    /// or shown.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Volumes per instance when neither the instance type table nor the node says
    /// (default 25: 28 attachment slots on Nitro instances, less the root volume and two
    /// network interfaces).
    #[serde(default = "default_attach_limit")]
    pub max_attachments_per_node: u32,
    /// How long an EC2 call (with its retries) may take, e.g. `30s` (default).
    #[serde(
        default = "default_call_timeout",
        with = "stowage_provider::duration::serde"
    )]
    pub call_timeout: Duration,
    /// How long to wait for a volume to become available, attached or detached (default 5m).
    #[serde(
        default = "default_state_timeout",
        with = "stowage_provider::duration::serde"
    )]
    pub state_timeout: Duration,
}

fn default_attach_limit() -> u32 {
    25
}

fn default_call_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_state_timeout() -> Duration {
    Duration::from_secs(300)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            region: None,
            endpoint: None,
            default_zone: None,
            access_key_id: None,
            secret_access_key: None,
            max_attachments_per_node: default_attach_limit(),
            call_timeout: default_call_timeout(),
            state_timeout: default_state_timeout(),
        }
    }
}

/// Never prints the credentials.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("default_zone", &self.default_zone)
            .field(
                "access_key_id",
                &self.access_key_id.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("max_attachments_per_node", &self.max_attachments_per_node)
            .field("call_timeout", &self.call_timeout)
            .field("state_timeout", &self.state_timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show_in_debug_output() {
        let c = Config {
            access_key_id: Some("AKIAEXAMPLEKEY".into()),
            secret_access_key: Some("very-secret".into()),
            ..Config::default()
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("AKIAEXAMPLEKEY") && !shown.contains("very-secret"),
            "{shown}"
        );
    }
}
