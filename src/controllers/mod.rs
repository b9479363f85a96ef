//! The controllers that make the declared state real. Each one is a [`Reconciler`] run by the
//! shared [`runtime`](crate::runtime); they read the store's cache and write through the
//! registry, exactly as an outside client would (they know nothing of HTTP).
//!
//! - [`binder`]: claims meet volumes (static binding, phases, release);
//! - [`provisioner`]: classes create and delete volumes through providers;
//! - [`protection`]: claims and volumes in use are not removed;
//! - [`resizer`]: grown claims get their volumes expanded;
//! - [`modifier`]: claims naming another VolumeAttributesClass get their volumes modified;
//! - [`snapshots`]: VolumeSnapshots bind VolumeSnapshotContents, which become provider
//!   snapshots; claims being copied from are protected for a bounded time (claims restore and
//!   clone through the provisioner);
//! - [`attach`]: volumes follow their pods to nodes (VolumeAttachments), safely;
//! - [`nodehealth`]: node leases become the nodes' Ready condition;
//! - [`quota`]: ResourceQuota usage recomputed from the objects (admission keeps it exact);
//! - [`csi`]: a CSIDriver per provider and a CSINode per Node, as Kubernetes tools read them;
//! - [`capacity`]: CSIStorageCapacity per class and topology, for providers that know their room.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::providers::Providers;
use crate::registry::Registry;
use crate::registry::Write;
use crate::resources::{KindStrategy, Subresource};
use crate::runtime::{self, ControllerOptions};
use crate::store::Store;
use crate::store::Stored;

pub mod attach;
pub mod binder;
pub mod binding;
pub mod capacity;
pub mod csi;
pub mod events;
pub mod leader;
pub mod modifier;
pub mod nodehealth;
pub mod protection;
pub mod provisioner;
pub mod quota;
pub mod resizer;
pub mod retry;
#[cfg(test)]
mod scenarios;
pub mod snapshots;
#[cfg(test)]
pub mod testing;

pub use events::Recorder;

pub use crate::runtime::Error;

/// How long one provider call may take before it counts as a temporary failure (and is
/// retried with backoff). Providers wait for their backends within it (EBS: a volume becoming
/// available or attached).
pub const PROVIDER_CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// What every controller shares.
pub struct Context {
    /// What time it is (the system's clock, or tokio's in tests).
    pub clock: crate::runtime::Clock,
    pub registry: Registry,
    pub store: Store,
    pub providers: Providers,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
}

impl Context {
    /// Changes one object as `f` says and writes the parts `sub` names, at the version it was
    /// read at (409 if it moved). `None` when `f` changed nothing: nothing is written.
    pub async fn change<T: KindStrategy>(
        &self,
        stored: &Arc<Stored>,
        sub: Subresource,
        f: impl FnOnce(&mut T),
    ) -> Result<Option<Arc<Stored>>, ApiError> {
        let current: &T = &stored.typed();
        let mut changed = current.clone();
        f(&mut changed);
        if &changed == current {
            return Ok(None);
        }
        let mut written = self
            .registry
            .write(vec![Write::update(changed, stored.rv, sub)])
            .await?;
        Ok(written.pop())
    }

    /// Creates an object the server keeps in being; one that exists already is fine (another
    /// pass, or another replica, made it).
    pub async fn create_if_missing<T: KindStrategy>(&self, object: T) -> Result<(), ApiError> {
        match self.registry.write(vec![Write::create(object)]).await {
            Err(e) if e.is_already_exists() => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Deletes an object; one already gone is fine.
    pub async fn delete_if_present<T: KindStrategy>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        match self
            .registry
            .delete::<T>(namespace, name, &Default::default(), &Default::default())
            .await
        {
            Err(e) if e.is_not_found() => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Removes `finalizer` from an object (which then goes, if it was being deleted and that
    /// was its last). An object already gone is fine.
    pub async fn drop_finalizer<T: KindStrategy>(
        &self,
        stored: &Arc<Stored>,
        finalizer: &str,
    ) -> Result<(), ApiError> {
        let result = self
            .change::<T>(stored, Subresource::Main, |o| {
                if let Some(f) = o.metadata_mut().finalizers.as_mut() {
                    f.retain(|x| x != finalizer);
                }
            })
            .await;
        match result {
            Err(e) if e.is_not_found() => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Calls a provider with a deadline ([`PROVIDER_CALL_TIMEOUT`]), counting the call and its
    /// duration in `/metrics` by provider, operation and outcome. A call past the deadline is a
    /// temporary failure.
    pub async fn call_provider<T>(
        &self,
        provider: &str,
        operation: &'static str,
        f: impl std::future::Future<Output = stowage_provider::Result<T>>,
    ) -> stowage_provider::Result<T> {
        let timeout = PROVIDER_CALL_TIMEOUT;
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(stowage_provider::ProviderError::temporary(format!(
                "{operation} did not finish within {timeout:?}"
            ))),
        };
        let labels = crate::metrics::ProviderLabels {
            provider: provider.to_string(),
            operation: operation.to_string(),
            outcome: result
                .as_ref()
                .map_or_else(|e| e.kind.as_str().to_string(), |_| "ok".to_string()),
        };
        self.metrics.provider_calls.get_or_create(&labels).inc();
        self.metrics
            .provider_duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        result
    }
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub resync: Duration,
    /// How long volumes in use stay attached to an unhealthy node before a forced detach.
    pub max_wait_for_unmount: Duration,
}

/// Starts every controller; they stop with `shutdown`.
pub fn start(ctx: Arc<Context>, settings: &Settings, shutdown: &CancellationToken) {
    let opts = |concurrency| ControllerOptions {
        concurrency,
        resync: settings.resync,
    };
    tokio::spawn(runtime::run(
        Arc::new(binder::Binder::new(ctx.clone())),
        ctx.store.clone(),
        opts(64),
        ctx.metrics.clone(),
        shutdown.clone(),
    ));
    let provisioner = Arc::new(provisioner::Provisioner::new(ctx.clone()));
    tokio::spawn(provisioner::sweep_orphans_periodically(
        provisioner.clone(),
        Duration::from_secs(60),
        shutdown.clone(),
    ));
    tokio::spawn(runtime::run(
        provisioner,
        ctx.store.clone(),
        opts(256),
        ctx.metrics.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(runtime::run(
        Arc::new(protection::Protection::new(ctx.clone())),
        ctx.store.clone(),
        opts(32),
        ctx.metrics.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(runtime::run(
        Arc::new(attach::desired::AttachDetach::new(
            ctx.clone(),
            settings.max_wait_for_unmount,
        )),
        ctx.store.clone(),
        opts(64),
        ctx.metrics.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(runtime::run(
        Arc::new(attach::attacher::Attacher::new(ctx.clone())),
        ctx.store.clone(),
        opts(128),
        ctx.metrics.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(runtime::run(
        Arc::new(resizer::Resizer::new(ctx.clone())),
        ctx.store.clone(),
        opts(16),
        ctx.metrics.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(runtime::run(
        Arc::new(snapshots::binder::SnapshotBinder::new(ctx.clone())),
        ctx.store.clone(),
        opts(16),
        ctx.metrics.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(runtime::run(
        Arc::new(snapshots::contents::ContentSnapshotter::new(ctx.clone())),
        ctx.store.clone(),
        opts(16),
        ctx.metrics.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(runtime::run(
        Arc::new(snapshots::sources::SourceProtection::new(ctx.clone())),
        ctx.store.clone(),
        opts(4),
        ctx.metrics.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(runtime::run(
        Arc::new(quota::QuotaStatus::new(ctx.clone())),
        ctx.store.clone(),
        opts(4),
        ctx.metrics.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(runtime::run(
        Arc::new(modifier::Modifier::new(ctx.clone())),
        ctx.store.clone(),
        opts(16),
        ctx.metrics.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(runtime::run(
        Arc::new(capacity::Capacity::new(ctx.clone())),
        ctx.store.clone(),
        opts(4),
        ctx.metrics.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(runtime::run(
        Arc::new(csi::CsiObjects::new(ctx.clone())),
        ctx.store.clone(),
        opts(4),
        ctx.metrics.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(runtime::run(
        Arc::new(nodehealth::NodeHealth::new(ctx.clone())),
        ctx.store.clone(),
        opts(8),
        ctx.metrics.clone(),
        shutdown.clone(),
    ));
}
