//! The EC2 client: built from the standard AWS configuration chain with the config file's
//! overrides, adaptive retries (which slow down under `RequestLimitExceeded`), a time limit per
//! call, and an interceptor that counts every HTTP attempt by API and outcome.
//!
//! [`classify`] turns EC2 errors into the SDK's error kinds.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_ec2::config::{Credentials, Region};
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use parking_lot::Mutex;
use stowage_provider::{ErrorKind, ProviderError};

use crate::config::Config;

/// EC2 HTTP attempts by (API, outcome): `ok`, `http_<status>`, or `no_response`.
#[derive(Debug, Default)]
pub struct CallCounts(Mutex<BTreeMap<(String, String), u64>>);

impl CallCounts {
    pub fn snapshot(&self) -> BTreeMap<(String, String), u64> {
        self.0.lock().clone()
    }

    /// Attempts of one API, all outcomes.
    pub fn of(&self, api: &str) -> u64 {
        self.0
            .lock()
            .iter()
            .filter(|((a, _), _)| a == api)
            .map(|(_, n)| n)
            .sum()
    }
}

#[derive(Debug)]
struct CountCalls(Arc<CallCounts>);

impl Intercept for CountCalls {
    fn name(&self) -> &'static str {
        "stowage-count-ec2-calls"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let api = cfg
            .load::<Metadata>()
            .map_or("unknown", |m| m.name())
            .to_string();
        let outcome = match context.response() {
            Some(r) if r.status().is_success() => "ok".to_string(),
            Some(r) => format!("http_{}", r.status().as_u16()),
            None => "no_response".to_string(),
        };
        *self.0.0.lock().entry((api, outcome)).or_default() += 1;
        Ok(())
    }
}

/// Builds the client. Credentials from the config file win over the environment.
pub async fn client(config: &Config, counts: Arc<CallCounts>) -> aws_sdk_ec2::Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::adaptive().with_max_attempts(5))
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(config.call_timeout)
                .build(),
        );
    if let Some(region) = &config.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &config.endpoint {
        loader = loader.endpoint_url(endpoint.clone());
    }
    if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
        loader = loader.credentials_provider(Credentials::new(
            id.clone(),
            secret.clone(),
            None,
            None,
            "stowage-config",
        ));
    }
    let shared = loader.load().await;
    let ec2 = aws_sdk_ec2::config::Builder::from(&shared)
        .interceptor(CountCalls(counts))
        .build();
    aws_sdk_ec2::Client::from_conf(ec2)
}

/// The EC2 error code, if EC2 answered with one.
pub fn code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<String> {
    e.code().map(str::to_string)
}

/// An EC2 failure as the provider reports it; `what` says what was being done.
pub fn classify<E, R>(what: &str, e: &SdkError<E, R>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let kind = match e {
        SdkError::ServiceError(_) => match e.code().unwrap_or_default() {
            c if c.ends_with(".NotFound") => ErrorKind::NotFound,
            "VolumeInUse"
            | "IncorrectState"
            | "IncorrectModificationState"
            | "IncorrectInstanceState"
            | "InvalidVolume.ZoneMismatch" => ErrorKind::FailedPrecondition,
            "VolumeLimitExceeded"
            | "AttachmentLimitExceeded"
            | "InsufficientVolumeCapacity"
            | "MaxIOPSLimitExceeded"
            | "SnapshotLimitExceeded" => ErrorKind::ResourceExhausted,
            "InvalidParameterValue"
            | "InvalidParameterCombination"
            | "InvalidParameter"
            | "UnknownVolumeType"
            | "InvalidZone.NotFound"
            | "IdempotentParameterMismatch" => ErrorKind::InvalidArgument,
            // Credentials and permissions can be fixed without changing the claim: retry.
            "AuthFailure" | "UnauthorizedOperation" | "Blocked" | "OptInRequired" => {
                ErrorKind::FailedPrecondition
            }
            _ => ErrorKind::Temporary,
        },
        SdkError::ConstructionFailure(_) => ErrorKind::InvalidArgument,
        _ => ErrorKind::Temporary,
    };
    let detail = match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ => aws_sdk_ec2::error::DisplayErrorContext(e).to_string(),
    };
    // AWS names the account, role and key in ARNs, and may attach the whole policy context.
    let detail = stowage_provider::redact::account_identifiers(&detail);
    ProviderError::new(kind, format!("{what}: {detail}"))
}

/// Whether an EC2 error says the thing is gone (`*.NotFound`).
pub fn is_gone<E, R>(e: &aws_sdk_ec2::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata,
{
    code(e).is_some_and(|c| c.ends_with(".NotFound"))
}
