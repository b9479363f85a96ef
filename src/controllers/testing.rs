//! A test context for controllers: the real registry on an in-memory store, the in-memory
//! provider, and a clock that follows tokio's. With `#[tokio::test(start_paused = true)]`,
//! backoff, resyncs, lease expiry and force-detach timeouts run in virtual time: an hour of
//! controller life takes milliseconds, the same way every run.

use std::sync::Arc;
use std::time::Duration;

use stowage_provider::memory::{self, MemoryProvider};
use tokio_util::sync::CancellationToken;

use super::{Context, Recorder, Settings};
use crate::metrics::Metrics;
use crate::providers::Providers;
use crate::registry::{Registry, Write};
use crate::resources::{KindStrategy, Subresource, Typed};
use crate::store::{Store, StoreOptions, Stored};

pub struct Harness {
    pub ctx: Arc<Context>,
    /// The provider behind `memory.stowage.dev`, to look at or to reconfigure.
    pub memory: MemoryProvider,
    shutdown: CancellationToken,
}

impl Harness {
    /// A context with the in-memory provider (64 GiB) and no controllers running.
    pub async fn new() -> Harness {
        let memory = MemoryProvider::new(memory::NAME).with_capacity(64 << 30);
        Self::with_providers(memory.clone(), vec![Arc::new(memory)]).await
    }

    /// A context with these providers; `memory` is the in-memory provider among or behind
    /// them (wrapped in `faults::Faulty`, say).
    pub async fn with_providers(
        memory: MemoryProvider,
        list: Vec<Arc<dyn stowage_provider::Provider>>,
    ) -> Harness {
        let store = Store::in_memory(StoreOptions::default()).await;
        let registry = Registry::new(store.clone());
        let shutdown = CancellationToken::new();
        let mut providers = Providers::default();
        for p in list {
            providers.insert(p);
        }
        let ctx = Arc::new(Context {
            clock: crate::runtime::Clock::following_tokio(),
            registry: registry.clone(),
            store,
            providers,
            recorder: Recorder::start(registry, shutdown.clone()),
            metrics: Metrics::new(),
        });
        Harness {
            ctx,
            memory,
            shutdown,
        }
    }

    /// Starts every controller.
    pub fn start(&self, settings: Settings) {
        super::start(self.ctx.clone(), &settings, &self.shutdown);
    }

    /// Creates an object through the registry, as a client would.
    pub async fn create<T: KindStrategy + Typed>(&self, object: T) -> Arc<Stored> {
        self.ctx
            .registry
            .write(vec![Write::create(object)])
            .await
            .expect("create")
            .pop()
            .expect("one object written")
    }

    /// Changes an object as a client would, re-reading it after a conflict with a controller
    /// that wrote it meanwhile.
    pub async fn update<T: KindStrategy>(
        &self,
        namespace: &str,
        name: &str,
        sub: Subresource,
        f: impl Fn(&mut T),
    ) {
        loop {
            let current = self
                .ctx
                .store
                .get_typed::<T>(namespace, name)
                .unwrap_or_else(|| panic!("{namespace}/{name} to update"));
            match self.ctx.change::<T>(&current, sub, &f).await {
                Ok(_) => return,
                Err(e) if e.code == 409 => continue,
                Err(e) => panic!("updating {namespace}/{name}: {e:?}"),
            }
        }
    }

    /// The object now, typed.
    pub fn get<T: KindStrategy>(&self, namespace: &str, name: &str) -> Option<T> {
        self.ctx
            .store
            .get_typed::<T>(namespace, name)
            .map(|s| s.typed::<T>().clone())
    }

    /// Waits (in tokio's time) until `f` answers, checking every 10 ms; panics with `what`
    /// after `limit`.
    pub async fn eventually<T>(
        &self,
        what: &str,
        limit: Duration,
        f: impl Fn(&Harness) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not within {limit:?}: {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits (in tokio's time) until an event of `reason` is recorded about an object named
    /// `name`; panics after `limit`.
    pub async fn eventually_event(&self, name: &str, reason: &str, limit: Duration) {
        let what = format!("an event {reason} about {name}");
        self.eventually(&what, limit, |h| {
            h.event_reasons(name)
                .iter()
                .any(|r| r == reason)
                .then_some(())
        })
        .await
    }

    /// Reasons of the events recorded about objects named `name`.
    pub fn event_reasons(&self, name: &str) -> Vec<String> {
        let (events, _) = self.ctx.store.list(crate::resources::Kind::Event, None);
        events
            .iter()
            .filter_map(|e| match &e.object() {
                crate::resources::AnyObject::Event(ev)
                    if ev.involved_object.name.as_deref() == Some(name) =>
                {
                    ev.reason.clone()
                }
                _ => None,
            })
            .collect()
    }
}

impl Harness {
    /// Whether any event has this reason.
    pub fn event_reasons_of_kind(&self, reason: &str) -> bool {
        let (events, _) = self.ctx.store.list(crate::resources::Kind::Event, None);
        events.iter().any(|e| match &e.object() {
            crate::resources::AnyObject::Event(ev) => ev.reason.as_deref() == Some(reason),
            _ => false,
        })
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Settings for tests: a long resync, so that only what a test drives happens.
pub fn settings() -> Settings {
    Settings {
        resync: Duration::from_secs(3600),
        max_wait_for_unmount: Duration::from_secs(360),
    }
}
