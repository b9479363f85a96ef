//! Snapshots, as Kubernetes' external-snapshotter has them, in three controllers:
//!
//! - [`binder`] (external-snapshotter's snapshot-controller): a VolumeSnapshot gets its
//!   VolumeSnapshotContent, made (`snapcontent-<uid>`, from the claim's volume and the class) or
//!   found (pre-provisioned, which must name the snapshot back), and mirrors the content's
//!   status. Deleting the VolumeSnapshot deletes or releases the content by its
//!   `deletionPolicy`.
//! - [`contents`] (the csi-snapshotter sidecar): a content becomes a provider snapshot named
//!   `snapshot-<VolumeSnapshot uid>` (the idempotency key, so a retry or a restart finds the
//!   same snapshot), or an imported one is looked up by its handle. A content with `Delete`
//!   goes only after the provider's snapshot is gone.
//! - [`sources`]: claims that are being snapshotted or cloned are kept from deletion while the
//!   copy reads them, but never for ever: a claim being deleted waits at most
//!   [`SOURCE_PROTECTION_LIMIT`], and not at all for a snapshot that is failing. A broken
//!   snapshot keeps external-snapshotter's claims Terminating indefinitely.
//!
//! Claims restore from snapshots and clone other claims through the provisioner.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use stowage_provider::Progress;
use stowage_provider::quantity::Quantity;

use crate::resources::volumesnapshot::VolumeSnapshotError;

pub mod binder;
pub mod contents;
#[cfg(test)]
mod scenarios;
pub mod sources;

pub use crate::controllers::Error;

pub const COMPONENT: &str = "snapshot-controller";

/// How long a claim being deleted waits for snapshots or clones of it still being copied.
pub const SOURCE_PROTECTION_LIMIT: Duration = Duration::from_secs(300);

/// How often a snapshot the provider is still cutting is looked at again.
const POLL: Duration = Duration::from_secs(1);

/// The content a dynamic VolumeSnapshot gets.
pub fn content_name(snapshot_uid: &str) -> String {
    format!("snapcontent-{snapshot_uid}")
}

/// The provider's name for the snapshot of a VolumeSnapshot (external-snapshotter's too).
pub fn provider_snapshot_name(snapshot_uid: &str) -> String {
    format!("snapshot-{snapshot_uid}")
}

/// A content's `status.creationTime` (nanoseconds) as a VolumeSnapshot's, in whole seconds as
/// a Kubernetes `Time` is stored (anything finer would differ from the stored value on every
/// comparison, and be written again and again).
fn time_of(nanos: i64) -> Option<Time> {
    jiff::Timestamp::from_second(nanos.div_euclid(1_000_000_000))
        .ok()
        .map(Time)
}

pub(crate) fn nanos_of(t: jiff::Timestamp) -> i64 {
    t.as_nanosecond() as i64
}

fn quantity_of(bytes: i64) -> K8sQuantity {
    K8sQuantity(Quantity::from_units(bytes).canonical())
}

/// A failure as a snapshot's or content's `status.error`. The same message again keeps its
/// first time, and another message replaces it only once the recorded one is
/// [`ERROR_REFRESH`] old: a provider whose messages vary (request ids, counts) would otherwise
/// have every retry rewrite the object, and the write trigger the next retry at once.
pub(crate) fn error_now(
    old: Option<&VolumeSnapshotError>,
    message: &str,
    now: jiff::Timestamp,
) -> VolumeSnapshotError {
    // The snapshot's tenant reads this: no account identifiers from a provider's message.
    let message = stowage_provider::redact::account_identifiers(message);
    let fresh = |e: &VolumeSnapshotError| {
        e.time.as_ref().is_some_and(|t| {
            jiff::SignedDuration::try_from(ERROR_REFRESH)
                .is_ok_and(|refresh| now.duration_since(t.0) < refresh)
        })
    };
    match old {
        Some(e) if e.message.as_deref() == Some(message.as_str()) || fresh(e) => e.clone(),
        _ => VolumeSnapshotError {
            message: Some(message),
            time: Some(Time(now)),
        },
    }
}

/// How long a recorded failure stands before another message may replace it.
const ERROR_REFRESH: Duration = Duration::from_secs(30);

/// Tracks the last progress decade reported per object, so a long copy reports every 10%,
/// not every poll.
#[derive(Default)]
pub struct ProgressReports(parking_lot::Mutex<std::collections::HashMap<String, i64>>);

impl ProgressReports {
    /// Whether `progress` of `key` starts a new tenth since the last report.
    pub fn is_news(&self, key: &str, progress: &Progress) -> bool {
        let decade = progress.percent() / 10;
        let mut last = self.0.lock();
        if last.get(key) == Some(&decade) {
            return false;
        }
        last.insert(key.to_string(), decade);
        true
    }

    pub fn forget(&self, key: &str) {
        self.0.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_news_once_per_tenth() {
        let reports = ProgressReports::default();
        let at = |done| Progress {
            done_bytes: done,
            total_bytes: 100,
        };
        assert!(reports.is_news("a", &at(1)));
        assert!(!reports.is_news("a", &at(9)));
        assert!(reports.is_news("a", &at(10)));
        assert!(reports.is_news("b", &at(10)));
        reports.forget("a");
        assert!(reports.is_news("a", &at(15)));
    }

    #[test]
    fn creation_times_keep_whole_seconds_as_stored() {
        let t: jiff::Timestamp = "2026-12-03T04:05:06.123456789Z".parse().unwrap();
        let whole: jiff::Timestamp = "2026-12-03T04:05:06Z".parse().unwrap();
        assert_eq!(time_of(nanos_of(t)).unwrap().0, whole);
        let stored: Time =
            serde_json::from_value(serde_json::to_value(time_of(nanos_of(t)).unwrap()).unwrap())
                .unwrap();
        assert_eq!(stored, time_of(nanos_of(t)).unwrap());
    }

    #[test]
    fn errors_are_rewritten_at_most_every_thirty_seconds() {
        let t0: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: jiff::Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let first = error_now(None, "disk full", t0);
        assert_eq!(error_now(Some(&first), "disk full", t1), first);
        // Another message replaces it only once it is 30 s old.
        let soon: jiff::Timestamp = "2026-01-01T00:00:10Z".parse().unwrap();
        assert_eq!(error_now(Some(&first), "other", soon), first);
        let t2: jiff::Timestamp = "2026-01-01T00:00:31Z".parse().unwrap();
        let replaced = error_now(Some(&first), "other", t2);
        assert_eq!(replaced.message.as_deref(), Some("other"));
        assert_eq!(replaced.time.unwrap().0, t2);
    }
}
