//! `stowage serve`: wires the store, the registry, the API and (later) the controllers into one
//! process, and shuts them down in order.
//!
//! Shutdown order on SIGINT/SIGTERM: stop accepting connections and end open watches; let
//! in-flight requests finish (their writes commit); then close the store, which commits every
//! queued write and refuses new ones. Nothing acknowledged is lost, nothing half-written remains.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiOptions, ApiState};
use crate::auth::kubeconfig::Kubeconfig;
use crate::auth::{self, Auth, Limits, Role, Tokens};
use crate::config::Config;
use crate::controllers::{self, Context, Recorder, Settings};
use crate::metrics::Metrics;
use crate::providers::Providers;
use crate::registry::{Registry, WriteOptions};
use crate::resources::StorageClass;
use crate::store::{Store, StoreOptions};

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8470", env = "STOWAGE_LISTEN")]
    pub listen: SocketAddr,
    /// Directory for the SQLite database (created if missing).
    #[arg(long, default_value = "./stowage-data", env = "STOWAGE_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Changes kept for watch resume; a watch from an older resourceVersion gets 410 Gone.
    #[arg(long, default_value_t = 100_000)]
    pub watch_history: usize,
    /// Configuration file (YAML): providers and controller settings. Optional.
    #[arg(long, env = "STOWAGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Do not create the default StorageClass `local` on first start.
    #[arg(long)]
    pub no_default_class: bool,
    /// How long volumes in use stay attached to an unhealthy node before a forced detach
    /// (e.g. `6m`, `90s`; default 6m, or `controllers.maxWaitForUnmount` in the config).
    #[arg(long, value_parser = parse_duration_arg)]
    pub max_wait_for_unmount: Option<Duration>,
    /// TLS certificate chain (PEM) to serve with, instead of the generated one.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP instead of HTTPS. Kubernetes clients send tokens over HTTPS only, so
    /// kubectl and client libraries cannot authenticate to a plain-HTTP server.
    #[arg(long, conflicts_with = "tls_cert")]
    pub plaintext: bool,
    /// Allow `--plaintext` on an address other than loopback (tokens would cross the network in
    /// clear text).
    #[arg(long)]
    pub insecure_allow_plaintext: bool,
    /// Serve `/metrics` without a token.
    #[arg(long)]
    pub metrics_public: bool,
    /// Requests per second each non-admin token may make (bursts up to twice that); 0: no limit.
    #[arg(long, default_value_t = 100.0)]
    pub rate_limit: f64,
    /// Requests per second each admin token may make; 0 (the default): no limit.
    #[arg(long, default_value_t = 0.0)]
    pub rate_limit_admin: f64,
    /// Watches each non-admin token may have open at once.
    #[arg(long, default_value_t = 100)]
    pub max_watches_per_token: usize,
    /// Open connections at once; more are closed on arrival.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,
    /// Open connections at once from one client address.
    #[arg(long, default_value_t = 2_500)]
    pub max_connections_per_ip: usize,
    /// TLS handshakes in progress at once (a sixteenth of them from one client address).
    #[arg(long, default_value_t = 256)]
    pub max_tls_handshakes: usize,
    /// How long a TLS handshake may take.
    #[arg(long, default_value = "10s", value_parser = parse_timeout_arg)]
    pub tls_handshake_timeout: Duration,
    /// How long a client may take to send a request's headers: from connecting (or the end of
    /// the TLS handshake) to its first request, and on a kept-alive HTTP/1.1 connection to
    /// each next one.
    #[arg(long, default_value = "10s", value_parser = parse_timeout_arg)]
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    #[arg(long, default_value = "120s", value_parser = parse_timeout_arg)]
    pub idle_timeout: Duration,
    /// Memory the watch history (the change log watches resume from) may take, in MiB.
    #[arg(long, default_value_t = 256)]
    pub watch_history_mib: usize,
    /// Encoded watch output waiting for slow clients, across all watches, in MiB; a watch that
    /// would go over is ended (its client resumes).
    #[arg(long, default_value_t = 512)]
    pub watch_buffer_mib: usize,
    /// The same, for all the watches of one token together.
    #[arg(long, default_value_t = 64)]
    pub watch_buffer_mib_per_token: usize,
}

impl ServeArgs {
    fn connection_limits(&self) -> api::listen::ConnectionLimits {
        api::listen::ConnectionLimits {
            max_connections: self.max_connections.max(1),
            max_connections_per_ip: self.max_connections_per_ip.max(1),
            max_handshakes: self.max_tls_handshakes.max(1),
            handshake_timeout: self.tls_handshake_timeout,
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            drain: DRAIN_TIMEOUT,
        }
    }
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    crate::config::parse_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration like 6m, 90s or 500ms"))
}

/// A duration that must not be zero (a timeout of nothing would close every connection).
fn parse_timeout_arg(s: &str) -> Result<Duration, String> {
    match parse_duration_arg(s)? {
        d if d < Duration::from_millis(10) => Err(format!("{s:?} is too short for a timeout")),
        d => Ok(d),
    }
}

/// The address clients should use for a listen address (loopback for "any").
fn client_address(listen: SocketAddr, local: SocketAddr) -> String {
    let ip = match local.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let _ = listen;
    format!("{ip}:{}", local.port())
}

/// Serves until a shutdown signal, with the providers `factories` can build.
pub async fn serve(
    args: ServeArgs,
    factories: &[Box<dyn stowage_provider::factory::Factory>],
) -> anyhow::Result<()> {
    if args.plaintext && !args.listen.ip().is_loopback() && !args.insecure_allow_plaintext {
        anyhow::bail!(
            "refusing to serve plain HTTP on {}: tokens would cross the network in clear text. \
             Drop --plaintext (HTTPS is the default), listen on a loopback address, or pass \
             --insecure-allow-plaintext",
            args.listen
        );
    }
    let store_options = StoreOptions {
        log_max_events: args.watch_history.max(1),
        log_max_bytes: args.watch_history_mib.max(1).saturating_mul(1024 * 1024),
        ..StoreOptions::default()
    };
    let store = Store::open(&args.data_dir, store_options)
        .await
        .with_context(|| format!("opening the store in {}", args.data_dir.display()))?;
    let config = Config::load(args.config.as_deref())?;
    let providers = Providers::build(factories, &config.providers, &args.data_dir).await?;
    let provider_info: Vec<serde_json::Value> = providers
        .iter()
        .map(|p| crate::providers::describe(p.as_ref()))
        .collect();
    let first_start = store.current_rv() == 0;
    let registry = Registry::new(store.clone());
    let metrics = Metrics::new();
    metrics.count_backend_requests(providers.iter().cloned().collect());
    let shutdown = CancellationToken::new();
    if first_start
        && !args.no_default_class
        && providers.get(stowage_provider_local::NAME).is_some()
    {
        create_default_class(&registry).await?;
    }
    let ctx = Arc::new(Context {
        clock: crate::runtime::Clock::system(),
        registry: registry.clone(),
        store: store.clone(),
        providers,
        recorder: Recorder::start(registry.clone(), shutdown.clone()),
        metrics: metrics.clone(),
    });
    controllers::start(
        ctx,
        &Settings {
            resync: config.controllers.resync,
            max_wait_for_unmount: args
                .max_wait_for_unmount
                .unwrap_or(config.controllers.max_wait_for_unmount),
        },
        &shutdown,
    );
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("listening on {}", args.listen))?;
    let local = listener.local_addr()?;
    let address = client_address(args.listen, local);
    let tls = if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        Some(auth::tls::load(cert, key)?)
    } else if !args.plaintext {
        let mut hosts = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        if !local.ip().is_unspecified() {
            hosts.push(local.ip().to_string());
        }
        Some(auth::tls::self_signed(&args.data_dir, &hosts)?)
    } else {
        None
    };
    let url = format!(
        "{}://{address}",
        if tls.is_some() { "https" } else { "http" }
    );

    let tokens = Tokens::open(&args.data_dir.join("stowage.db")).await?;
    let kubeconfig_path = args.data_dir.join("kubeconfig");
    let ca = tls.as_ref().and_then(|t| t.ca_pem.as_deref());
    if tokens.is_empty() {
        let (_, token) = tokens.create("admin", Role::Admin, None).await?;
        Kubeconfig::single(&url, &token, ca).write(&kubeconfig_path)?;
        tracing::info!(kubeconfig = %kubeconfig_path.display(), "created an admin token; its kubeconfig is ready");
    } else if let Ok(mut existing) = Kubeconfig::read(&kubeconfig_path) {
        // Keep the written kubeconfig pointing at where the server listens now.
        for c in existing.clusters.iter_mut().filter(|c| c.name == "stowage") {
            c.cluster.server = url.clone();
            c.cluster.certificate_authority_data =
                ca.map(|c| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, c));
        }
        existing.write(&kubeconfig_path)?;
    }
    let auth = Arc::new(Auth {
        tokens,
        limits: Arc::new(Limits::new(args.rate_limit, args.max_watches_per_token)),
        admin_limits: Arc::new(Limits::new(args.rate_limit_admin, usize::MAX)),
        metrics_public: args.metrics_public,
    });
    let state = ApiState::new(
        registry,
        metrics,
        auth,
        provider_info,
        shutdown.clone(),
        ApiOptions {
            watch_buffer_bytes: args.watch_buffer_mib.max(1).saturating_mul(1024 * 1024),
            watch_buffer_bytes_per_token: args
                .watch_buffer_mib_per_token
                .max(1)
                .saturating_mul(1024 * 1024),
            ..ApiOptions::default()
        },
    );
    let app = api::router(state.clone());
    tracing::info!(address = %local, data_dir = %args.data_dir.display(), tls = tls.is_some(), "stowage is serving");
    // Tests and scripts read this line to find the port when listening on port 0.
    println!("listening on {url}");
    state.ready.store(true, Ordering::Relaxed);

    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: draining in-flight requests");
        signal.cancel();
    });
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    api::listen::serve(
        listener,
        tls.map(|t| t.config),
        app,
        args.connection_limits(),
        shutdown.clone(),
    )
    .await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// The class a fresh server offers: local directories, the default for claims naming none.
async fn create_default_class(registry: &Registry) -> anyhow::Result<()> {
    let class: StorageClass = serde_json::from_value(serde_json::json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": "local",
            "annotations": {crate::resources::storageclass::DEFAULT_CLASS_ANNOTATION: "true"},
        },
        "provisioner": stowage_provider_local::NAME,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": true,
    }))?;
    match registry.create("", class, &WriteOptions::default()).await {
        Ok(_) => {
            tracing::info!("created the default StorageClass \"local\"");
            Ok(())
        }
        Err(e) if e.is_already_exists() => Ok(()),
        Err(e) => Err(anyhow::anyhow!("creating the default StorageClass: {e}")),
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
