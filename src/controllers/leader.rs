//! Leader election among replicas: every replica serves the API, one runs the controllers.
//!
//! Leadership is a `coordination.k8s.io/v1` Lease (`stowage-system/stowage-controllers`),
//! written through the registry like any client's object, with client-go's rules:
//!
//! - A replica takes the lease when it is free, or when its holder has not renewed it for a
//!   whole `leaseDuration`, timed on the taker's own monotonic clock from when it saw the last
//!   change (so clocks of different machines never need to agree).
//! - The leader renews every `retryPeriod`. If it has not renewed for `renewDeadline` (shorter
//!   than `leaseDuration`), it stops its controllers before anyone else can take the lease, so
//!   two leaders never act at once.
//! - A leader that shuts down releases the lease, and the next one takes over at once.
//!
//! Every write is a compare-and-swap on the lease's resourceVersion, checked by the database:
//! two replicas can never both win.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use parking_lot::RwLock;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Context, Settings};
use crate::registry::Write;
use crate::resources::names::{CONTROLLERS_LEASE, SYSTEM_NAMESPACE};
use crate::resources::{Lease, Subresource};

/// How leadership is held (`controllers.leaderElection` in the config file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long others wait, after the last renewal they saw, before taking the lease.
    pub lease_duration: Duration,
    /// How long the leader keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// How often the leader renews, and others look.
    pub retry_period: Duration,
}

impl Default for Timing {
    /// A failover within about 4.5 s of a leader's crash (Kubernetes' controller manager
    /// uses 15 s, 10 s and 2 s).
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(4),
            renew_deadline: Duration::from_secs(3),
            retry_period: Duration::from_millis(500),
        }
    }
}

impl Timing {
    pub fn validate(&self) -> Result<(), String> {
        if self.renew_deadline >= self.lease_duration {
            return Err("renewDeadline must be shorter than leaseDuration".into());
        }
        if self.retry_period >= self.renew_deadline || self.retry_period.is_zero() {
            return Err("retryPeriod must be positive and shorter than renewDeadline".into());
        }
        Ok(())
    }
}

/// Who leads, as this replica knows it: for `/readyz` and `/metrics`.
#[derive(Default)]
pub struct Leadership {
    /// This replica's identity (host name and listen address).
    pub identity: String,
    leading: AtomicBool,
    holder: RwLock<Option<String>>,
}

impl Leadership {
    pub fn new(identity: String) -> Self {
        Leadership {
            identity,
            ..Default::default()
        }
    }

    /// A replica that runs its controllers without an election (one process on SQLite).
    pub fn alone(identity: String) -> Self {
        let l = Self::new(identity.clone());
        l.leading.store(true, Ordering::Relaxed);
        *l.holder.write() = Some(identity);
        l
    }

    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    /// The replica that holds the lease, as last seen.
    pub fn holder(&self) -> Option<String> {
        self.holder.read().clone()
    }
}

/// What this replica last saw of the lease, and when (on its own clock).
struct Observed {
    holder: Option<String>,
    renewed: Option<Timestamp>,
    at: Instant,
}

struct Elector {
    ctx: Arc<Context>,
    timing: Timing,
    status: Arc<Leadership>,
    observed: Option<Observed>,
}

/// Runs the election until `shutdown`; while this replica leads, its controllers run.
pub async fn run(
    ctx: Arc<Context>,
    timing: Timing,
    settings: Settings,
    status: Arc<Leadership>,
    shutdown: CancellationToken,
) {
    let mut elector = Elector {
        ctx,
        timing,
        status,
        observed: None,
    };
    loop {
        // Follower: look every retry period until the lease is ours.
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            match elector.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::debug!(error = %e, "leader election: could not take the lease"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(elector.timing.retry_period) => {}
            }
        }
        tracing::info!(
            identity = elector.status.identity,
            "leading: starting the controllers"
        );
        elector.status.leading.store(true, Ordering::Relaxed);
        let lead = shutdown.child_token();
        super::start(elector.ctx.clone(), &settings, &lead);
        let mut renewed = Instant::now();
        let lost = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break false,
                _ = tokio::time::sleep(elector.timing.retry_period) => {}
            }
            let left = elector
                .timing
                .renew_deadline
                .saturating_sub(renewed.elapsed());
            let attempt = tokio::time::timeout(left, elector.try_acquire_or_renew()).await;
            match attempt {
                Ok(Ok(true)) => renewed = Instant::now(),
                Ok(Ok(false)) => break true, // another replica holds it now
                Ok(Err(e)) => tracing::warn!(error = %e, "leader election: renewal failed"),
                Err(_) => {}
            }
            if renewed.elapsed() >= elector.timing.renew_deadline {
                break true;
            }
        };
        // Stop acting first: the lease may be taken as soon as it expires.
        lead.cancel();
        elector.status.leading.store(false, Ordering::Relaxed);
        if !lost {
            elector.release().await;
            return;
        }
        tracing::warn!(
            identity = elector.status.identity,
            "lost the lease: stopped the controllers"
        );
    }
}

impl Elector {
    fn now(&self) -> Timestamp {
        self.ctx.clock.now()
    }

    fn record(&self, holder: &str, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_string()),
            lease_duration_seconds: Some(self.timing.lease_duration.as_secs().max(1) as i32),
            acquire_time: acquired.or(Some(MicroTime(self.now()))),
            renew_time: Some(MicroTime(self.now())),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Takes or renews the lease; `false` when another replica holds it.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, crate::error::ApiError> {
        let me = self.status.identity.clone();
        let Some(current) = self
            .ctx
            .store
            .get_typed::<Lease>(SYSTEM_NAMESPACE, CONTROLLERS_LEASE)
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(CONTROLLERS_LEASE.into()),
                    namespace: Some(SYSTEM_NAMESPACE.into()),
                    ..Default::default()
                },
                spec: Some(self.record(&me, None, 0)),
            };
            self.ctx.registry.write(vec![Write::create(lease)]).await?;
            *self.status.holder.write() = Some(me);
            return Ok(true);
        };
        let spec = current.typed::<Lease>().spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let renewed = spec.renew_time.as_ref().map(|t| t.0);
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|o| o.holder != holder || o.renewed != renewed);
        if changed {
            self.observed = Some(Observed {
                holder: holder.clone(),
                renewed,
                at: Instant::now(),
            });
        }
        *self.status.holder.write() = holder.clone();
        let seen_at = self.observed.as_ref().map_or_else(Instant::now, |o| o.at);
        let mine = holder.as_deref() == Some(me.as_str());
        if !mine && holder.is_some() && seen_at.elapsed() < self.timing.lease_duration {
            return Ok(false);
        }
        let (acquired, transitions) = if mine {
            (
                spec.acquire_time.clone(),
                spec.lease_transitions.unwrap_or(0),
            )
        } else {
            (None, spec.lease_transitions.unwrap_or(0) + 1)
        };
        let record = self.record(&me, acquired, transitions);
        self.ctx
            .change::<Lease>(&current, Subresource::Main, |l| l.spec = Some(record))
            .await?;
        self.observed = None;
        *self.status.holder.write() = Some(me);
        Ok(true)
    }

    /// Gives the lease up on shutdown, so that the next replica need not wait it out.
    async fn release(&self) {
        let Some(current) = self
            .ctx
            .store
            .get_typed::<Lease>(SYSTEM_NAMESPACE, CONTROLLERS_LEASE)
        else {
            return;
        };
        let spec = current.typed::<Lease>().spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.status.identity.as_str()) {
            return;
        }
        let released = LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            renew_time: Some(MicroTime(self.now())),
            ..spec
        };
        match self
            .ctx
            .change::<Lease>(&current, Subresource::Main, |l| l.spec = Some(released))
            .await
        {
            Ok(_) => tracing::info!("released the controllers' lease"),
            Err(e) => tracing::warn!(error = %e, "could not release the controllers' lease"),
        }
        *self.status.holder.write() = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::testing::{Harness, settings};

    fn timing() -> Timing {
        Timing::default()
    }

    fn elect(
        h: &Harness,
        name: &str,
        shutdown: &CancellationToken,
    ) -> (Arc<Leadership>, tokio::task::JoinHandle<()>) {
        let status = Arc::new(Leadership::new(name.into()));
        let task = tokio::spawn(run(
            h.ctx.clone(),
            timing(),
            settings(),
            status.clone(),
            shutdown.clone(),
        ));
        (status, task)
    }

    async fn leads(h: &Harness, who: &Leadership, within: Duration) {
        h.eventually(&format!("{} leads", who.identity), within, |_| {
            who.is_leader().then_some(())
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn another_replica_takes_over_only_after_a_crashed_leaders_lease_runs_out() {
        let h = Harness::new().await;
        let (a_stop, b_stop) = (CancellationToken::new(), CancellationToken::new());
        let (a, a_task) = elect(&h, "a", &a_stop);
        leads(&h, &a, Duration::from_secs(1)).await;
        let (b, _b_task) = elect(&h, "b", &b_stop);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(a.is_leader() && !b.is_leader(), "one leader while a renews");
        assert_eq!(b.holder().as_deref(), Some("a"));

        // a crashes: it stops renewing and releases nothing. b waits the lease out.
        a_task.abort();
        let crashed = Instant::now();
        leads(&h, &b, Duration::from_secs(6)).await;
        let waited = crashed.elapsed();
        assert!(
            waited >= timing().lease_duration - timing().retry_period,
            "took over after {waited:?}, before the lease ran out"
        );
        assert!(waited <= Duration::from_secs(5), "failover took {waited:?}");
        a_stop.cancel();
        b_stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_shuts_down_hands_over_at_once() {
        let h = Harness::new().await;
        let (a_stop, b_stop) = (CancellationToken::new(), CancellationToken::new());
        let (a, a_task) = elect(&h, "a", &a_stop);
        leads(&h, &a, Duration::from_secs(1)).await;
        let (b, _b_task) = elect(&h, "b", &b_stop);
        tokio::time::sleep(Duration::from_secs(2)).await;
        a_stop.cancel();
        a_task.await.unwrap();
        assert!(!a.is_leader());
        leads(&h, &b, timing().retry_period * 2).await;
        b_stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_cannot_renew_stops_before_its_lease_expires() {
        let h = Harness::new().await;
        let stop = CancellationToken::new();
        let (a, _task) = elect(&h, "a", &stop);
        leads(&h, &a, Duration::from_secs(1)).await;
        // Someone else takes the lease over behind a's back (as a partitioned leader would
        // find after a while): a must notice at its next renewal and stop.
        h.update::<Lease>(
            SYSTEM_NAMESPACE,
            CONTROLLERS_LEASE,
            Subresource::Main,
            |l| {
                l.spec.as_mut().unwrap().holder_identity = Some("intruder".into());
                l.spec.as_mut().unwrap().renew_time = Some(MicroTime(Timestamp::now()));
            },
        )
        .await;
        h.eventually("a stops leading", timing().retry_period * 3, |_| {
            (!a.is_leader()).then_some(())
        })
        .await;
        stop.cancel();
    }

    #[test]
    fn timings_must_leave_a_margin() {
        assert!(Timing::default().validate().is_ok());
        let bad = Timing {
            renew_deadline: Duration::from_secs(5),
            ..Timing::default()
        };
        assert!(bad.validate().is_err());
    }
}
