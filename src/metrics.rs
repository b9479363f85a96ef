//! Prometheus metrics: one registry for the process, exposed at `/metrics`.
//!
//! Request metrics are labelled by Kubernetes verb, resource and status code; controllers and
//! providers register their own families here too.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: String,
    pub resource: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerResultLabels {
    pub controller: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerErrorLabels {
    pub controller: String,
    /// The API reason or the provider's error kind.
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub provider: String,
    pub request: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeaderLabels {
    /// The lease.
    pub name: String,
    /// This replica's identity.
    pub replica: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: String,
    pub operation: String,
    pub outcome: String,
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~13 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

pub struct Metrics {
    registry: Mutex<Registry>,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<RequestLabels, Histogram>,
    pub watches: Gauge,
    pub reconciles: Family<ControllerResultLabels, Counter>,
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    pub reconcile_errors: Family<ControllerErrorLabels, Counter>,
    pub queue_depth: Family<ControllerLabels, Gauge>,
    pub provider_calls: Family<ProviderLabels, Counter>,
    pub provider_duration: Family<ProviderLabels, Histogram>,
    pub backend_requests: Family<BackendLabels, Counter>,
    /// 1 on the replica that runs the controllers, 0 on the others (Kubernetes'
    /// `leader_election_master_status`).
    pub leader: Family<LeaderLabels, Gauge>,
    /// Providers whose backend request counts are copied into `backend_requests` at each
    /// scrape (they count for themselves; see `Provider::backend_requests`).
    backend_sources: Mutex<Vec<Arc<dyn stowage_provider::Provider>>>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("stowage");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration = Family::<RequestLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let watches = Gauge::default();
        let reconciles = Family::<ControllerResultLabels, Counter>::default();
        let reconcile_duration = Family::<ControllerLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let queue_depth = Family::<ControllerLabels, Gauge>::default();
        let reconcile_errors = Family::<ControllerErrorLabels, Counter>::default();
        let provider_calls = Family::<ProviderLabels, Counter>::default();
        let provider_duration = Family::<ProviderLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "apiserver_requests",
            "API requests by verb, resource and HTTP status code",
            requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "API request latency by verb, resource and HTTP status code",
            request_duration.clone(),
        );
        registry.register("apiserver_watches", "Open watch streams", watches.clone());
        registry.register(
            "controller_reconciles",
            "Reconciles by controller and result (ok, requeue, error)",
            reconciles.clone(),
        );
        registry.register(
            "controller_reconcile_duration_seconds",
            "Reconcile latency by controller",
            reconcile_duration.clone(),
        );
        registry.register(
            "controller_reconcile_errors",
            "Failed reconciles by controller and error (API reason or provider error kind)",
            reconcile_errors.clone(),
        );
        registry.register(
            "controller_queue_depth",
            "Keys waiting in each controller's work queue",
            queue_depth.clone(),
        );
        registry.register(
            "provider_operations",
            "Provider operations by provider, operation and outcome",
            provider_calls.clone(),
        );
        registry.register(
            "provider_operation_duration_seconds",
            "Provider operation latency",
            provider_duration.clone(),
        );
        let backend_requests = Family::<BackendLabels, Counter>::default();
        registry.register(
            "provider_backend_requests",
            "Requests providers made to their storage backends (NFS procedures, EC2 actions), by outcome",
            backend_requests.clone(),
        );
        let leader = Family::<LeaderLabels, Gauge>::default();
        registry.register(
            "leader_election_master_status",
            "Whether this replica holds the controllers' lease (1) or not (0)",
            leader.clone(),
        );
        Arc::new(Metrics {
            registry: Mutex::new(registry),
            leader,
            backend_requests,
            backend_sources: Mutex::new(Vec::new()),
            requests,
            request_duration,
            watches,
            reconciles,
            reconcile_duration,
            reconcile_errors,
            queue_depth,
            provider_calls,
            provider_duration,
        })
    }

    /// Lets another part of the program (a provider) register its own metric family.
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.registry.lock().register(name, help, metric);
    }

    pub fn observe_request(&self, verb: &str, resource: &str, code: u16, elapsed: Duration) {
        let labels = RequestLabels {
            verb: verb.to_string(),
            resource: resource.to_string(),
            code: code.to_string(),
        };
        self.requests.get_or_create(&labels).inc();
        self.request_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Reports these providers' backend request counts from now on.
    pub fn count_backend_requests(&self, providers: Vec<Arc<dyn stowage_provider::Provider>>) {
        *self.backend_sources.lock() = providers;
    }

    /// Brings `backend_requests` up to the providers' own counts.
    fn copy_backend_requests(&self) {
        for p in self.backend_sources.lock().iter() {
            for ((request, outcome), count) in p.backend_requests() {
                let counter = self.backend_requests.get_or_create(&BackendLabels {
                    provider: p.name().to_string(),
                    request,
                    outcome,
                });
                let seen = counter.get();
                if count > seen {
                    counter.inc_by(count - seen);
                }
            }
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        self.copy_backend_requests();
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry.lock());
        out
    }
}
