//! Why a reconcile failed, and what the runtime does about it. One type for every controller:
//! the API refused a write (a conflict is retried at once: the object moved, read it again),
//! or a provider failed (a temporary failure is retried with backoff; a final one, such as bad
//! parameters or no room, slowly, in case an admin fixes the class or space frees up).

use std::time::Duration;

use stowage_provider::{ErrorKind, ProviderError};

use super::backoff;
use crate::error::ApiError;

/// Final provider failures are retried no sooner than this.
const FINAL_FAILURE_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

impl Error {
    /// A short label for metrics: the API reason, or the provider's error kind.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Api(e) => e.reason,
            Error::Provider(e) => e.kind.as_str(),
        }
    }

    /// When to try again after the `failures`-th failure in a row.
    pub fn retry_after(&self, failures: u32) -> Duration {
        match self {
            // Lost a race: the object moved; the next read sees the new version.
            Error::Api(e) if e.is_conflict() => backoff(1),
            Error::Api(_) => backoff(failures),
            Error::Provider(e) => match e.kind {
                // A copy under way: ask again soon, however long it has been running.
                ErrorKind::InProgress => backoff(1),
                ErrorKind::Temporary | ErrorKind::FailedPrecondition => backoff(failures),
                ErrorKind::InvalidArgument
                | ErrorKind::AlreadyExists
                | ErrorKind::ResourceExhausted
                | ErrorKind::NotFound
                | ErrorKind::Unsupported => backoff(failures).max(FINAL_FAILURE_RETRY),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_retry_at_once_temporary_failures_back_off_and_final_ones_wait() {
        let conflict = Error::Api(ApiError::stale("persistentvolumes", "", "v"));
        assert_eq!(conflict.retry_after(10), backoff(1));
        let temporary = Error::Provider(ProviderError::temporary("busy"));
        assert_eq!(temporary.retry_after(3), backoff(3));
        let invalid = Error::Provider(ProviderError::invalid("bad"));
        assert_eq!(invalid.retry_after(1), FINAL_FAILURE_RETRY);
        assert_eq!(invalid.retry_after(30), backoff(30));
        assert_eq!(invalid.metric_label(), "InvalidArgument");
        assert_eq!(conflict.metric_label(), "Conflict");
    }
}
