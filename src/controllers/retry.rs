//! When to try again what a provider refused as infeasible (a volume modification, an
//! expansion): rarely, in case what made it so has changed, and never just because the status
//! write that records the refusal brought the object straight back.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use parking_lot::Mutex;

use crate::store::ObjectKey;

pub struct InfeasibleRetry<T> {
    every: Duration,
    /// Per object: the target refused, and when.
    refused: Mutex<HashMap<ObjectKey, (T, Timestamp)>>,
}

impl<T: PartialEq + Clone> InfeasibleRetry<T> {
    pub fn new(every: Duration) -> Self {
        InfeasibleRetry {
            every,
            refused: Mutex::default(),
        }
    }

    /// The provider refused `target` for `key` at `now`.
    pub fn refused(&self, key: &ObjectKey, target: T, now: Timestamp) {
        self.refused.lock().insert(key.clone(), (target, now));
    }

    /// The object is gone or wants nothing any more.
    pub fn forget(&self, key: &ObjectKey) {
        self.refused.lock().remove(key);
    }

    /// How long until `target` may be tried again for `key`; `None`: now (it was never
    /// refused, another target is asked for, or the time is up).
    pub fn wait(&self, key: &ObjectKey, target: &T, now: Timestamp) -> Option<Duration> {
        let refused = self.refused.lock();
        let (t, at) = refused.get(key)?;
        if t != target {
            return None;
        }
        let left = jiff::SignedDuration::try_from(self.every).ok()? - now.duration_since(*at);
        Duration::try_from(left).ok().filter(|d| !d.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_target_waits_its_time_and_another_goes_at_once() {
        let r = InfeasibleRetry::new(Duration::from_secs(300));
        let key = ObjectKey::new("ns", "c");
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(r.wait(&key, &"gold", t0), None, "never refused");
        r.refused(&key, "gold", t0);
        let later = t0 + jiff::SignedDuration::from_secs(100);
        assert_eq!(r.wait(&key, &"gold", later), Some(Duration::from_secs(200)));
        assert_eq!(r.wait(&key, &"silver", later), None, "another target");
        let after = t0 + jiff::SignedDuration::from_secs(300);
        assert_eq!(r.wait(&key, &"gold", after), None, "time is up");
        r.forget(&key);
        assert_eq!(r.wait(&key, &"gold", later), None);
    }
}
