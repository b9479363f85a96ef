//! What time it is, for controllers. Some of their decisions are measured in wall-clock
//! timestamps stored in objects (a lease's renew time, when a node became unhealthy). In
//! production that is the system's clock; in tests it follows tokio's clock, so that a test
//! with a paused clock can advance an hour of leases and timeouts in milliseconds.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

#[derive(Clone, Copy, Debug, Default)]
pub struct Clock {
    /// The wall-clock time at a tokio instant, when the clock follows tokio's.
    anchor: Option<(Timestamp, tokio::time::Instant)>,
}

impl Clock {
    /// The system's clock.
    pub fn system() -> Self {
        Clock { anchor: None }
    }

    /// A clock that starts at the system's time now and moves with tokio's clock (paused or
    /// not).
    pub fn following_tokio() -> Self {
        Clock {
            anchor: Some((Timestamp::now(), tokio::time::Instant::now())),
        }
    }

    pub fn now(&self) -> Timestamp {
        match self.anchor {
            None => Timestamp::now(),
            Some((at, instant)) => {
                let elapsed = SignedDuration::try_from(instant.elapsed()).unwrap_or_default();
                at.checked_add(elapsed).unwrap_or(at)
            }
        }
    }

    /// How long after `since` the deadline `wait` passes, from now (zero if it has passed).
    pub fn remaining(&self, since: Timestamp, wait: Duration) -> Duration {
        let elapsed =
            Duration::try_from(self.now().duration_since(since)).unwrap_or(Duration::ZERO);
        wait.saturating_sub(elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_following_clock_moves_with_paused_time() {
        let clock = Clock::following_tokio();
        let start = clock.now();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(
            clock.now().duration_since(start),
            SignedDuration::from_secs(3600)
        );
        assert_eq!(
            clock.remaining(start, Duration::from_secs(3700)),
            Duration::from_secs(100)
        );
        assert_eq!(
            clock.remaining(start, Duration::from_secs(10)),
            Duration::ZERO
        );
    }
}
