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
use crate::auth::tls::SharedCa;
use crate::auth::{self, Auth, Limits, Role, Tokens};
use crate::config::Config;
use crate::controllers::leader::{self, Leadership};
use crate::controllers::{self, Context, Recorder, Settings};
use crate::metrics::Metrics;
use crate::providers::Providers;
use crate::registry::{Registry, WriteOptions};
use crate::resources::StorageClass;
use crate::store::postgres::shared_value;
use crate::store::{PostgresBackend, PostgresOptions, Store, StoreOptions};
use stowage_provider::factory::Env;

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8470", env = "STOWAGE_LISTEN")]
    pub listen: SocketAddr,
    /// Directory for the SQLite database (created if missing), and this replica's own files
    /// (its kubeconfig, the CA's certificate) with a PostgreSQL store.
    #[arg(long, default_value = "./stowage-data", env = "STOWAGE_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Where objects live: `sqlite` (the default: a file in the data directory, one server),
    /// or `postgres://user@host:port/database` for several replicas on one database (the
    /// password may come from PGPASSWORD). Overrides `store.url` in the config file.
    #[arg(long, env = "STOWAGE_STORE")]
    pub store: Option<String>,
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
    /// Requests per second each node token may make (bursts up to twice that); 0: no limit.
    #[arg(long, default_value_t = 1000.0)]
    pub rate_limit_node: f64,
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
    /// Memory the watch history (the change log watches resume from) may take, in MiB:
    /// every version's JSON, counted whether or not the current object shares it.
    #[arg(long, default_value_t = 64)]
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
    let config = Config::load(args.config.as_deref())?;
    let (store, shared) = match store_choice(&args, &config, &store_options)? {
        StoreChoice::Sqlite => {
            let store = Store::open(&args.data_dir, store_options)
                .await
                .with_context(|| format!("opening the store in {}", args.data_dir.display()))?;
            (store, None)
        }
        StoreChoice::Postgres(options) => {
            let pool = crate::store::postgres::connect(&options).await?;
            let backend = PostgresBackend::open(pool.clone(), options.window).await?;
            let store = Store::with_backend(Box::new(backend), store_options).await?;
            tracing::info!(database = %crate::store::postgres::redacted(&options.url), "the store is shared PostgreSQL: this is one of its replicas");
            (store, Some(pool))
        }
    };
    let env = match &shared {
        None => Env::new(&args.data_dir),
        // Every replica marks what its providers make with one identity, so that the next
        // leader recognises what the last one made.
        Some(pool) => {
            let id = shared_value(pool, "installation-id", || {
                Ok(Env::new_installation_id().into_bytes())
            })
            .await?;
            Env::replica(&args.data_dir, String::from_utf8_lossy(&id).into_owned())
        }
    };
    let providers = Providers::build(factories, &config.providers, &env, shared.is_some()).await?;
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
        providers: providers.clone(),
        recorder: Recorder::start(registry.clone(), shutdown.clone()),
        metrics: metrics.clone(),
    });
    let settings = Settings {
        resync: config.controllers.resync,
        max_wait_for_unmount: args
            .max_wait_for_unmount
            .unwrap_or(config.controllers.max_wait_for_unmount),
    };
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("listening on {}", args.listen))?;
    let local = listener.local_addr()?;
    let address = client_address(args.listen, local);
    let identity = format!("{}_{address}", host_name());
    let leadership = if shared.is_some() {
        // Replicas: every one serves the API; the lease's holder runs the controllers.
        let leadership = Arc::new(Leadership::new(identity));
        tokio::spawn(leader::run(
            ctx,
            config.controllers.leader_election.timing()?,
            settings,
            leadership.clone(),
            shutdown.clone(),
        ));
        leadership
    } else {
        controllers::start(ctx, &settings, &shutdown);
        Arc::new(Leadership::alone(identity))
    };
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
        match &shared {
            None => Some(auth::tls::self_signed(&args.data_dir, &hosts)?),
            // One CA for every replica, so that a client trusts all of them.
            Some(pool) => {
                let ca = shared_value(pool, "tls-ca", || {
                    Ok(serde_json::to_vec(&SharedCa::generate()?)?)
                })
                .await?;
                let ca: SharedCa = serde_json::from_slice(&ca).context("reading the shared CA")?;
                Some(ca.serve(&args.data_dir, &hosts)?)
            }
        }
    } else {
        None
    };
    let url = format!(
        "{}://{address}",
        if tls.is_some() { "https" } else { "http" }
    );

    let tokens = match &shared {
        None => Tokens::open(&args.data_dir.join("stowage.db")).await?,
        Some(pool) => Tokens::open_shared(pool.clone()).await?,
    };
    let kubeconfig_path = args.data_dir.join("kubeconfig");
    let ca = tls.as_ref().and_then(|t| t.ca_pem.as_deref());
    if let Some(pool) = &shared {
        // Each replica writes a kubeconfig naming its own address, with the one admin token
        // the first replica made (kept in the database beside the CA's key).
        let token = shared_admin_token(pool, &tokens).await?;
        std::fs::create_dir_all(&args.data_dir)?;
        Kubeconfig::single(&url, &token, ca).write(&kubeconfig_path)?;
    } else if tokens.is_empty() {
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
        node_limits: Arc::new(Limits::new(
            args.rate_limit_node,
            args.max_watches_per_token,
        )),
        metrics_public: args.metrics_public,
    });
    let state = ApiState::new(
        registry,
        metrics,
        auth,
        providers.clone(),
        shutdown.clone(),
        ApiOptions {
            watch_buffer_bytes: args.watch_buffer_mib.max(1).saturating_mul(1024 * 1024),
            watch_buffer_bytes_per_token: args
                .watch_buffer_mib_per_token
                .max(1)
                .saturating_mul(1024 * 1024),
            ..ApiOptions::default()
        },
        leadership,
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

/// The admin token of the first kubeconfig, shared by replicas: made once, by whichever
/// replica comes first.
async fn shared_admin_token(pool: &sqlx::PgPool, tokens: &Tokens) -> anyhow::Result<String> {
    const NAME: &str = "admin-token";
    let existing: Option<Vec<u8>> = sqlx::query_scalar("SELECT value FROM secrets WHERE name = $1")
        .bind(NAME)
        .fetch_optional(pool)
        .await?;
    if let Some(token) = existing {
        return Ok(String::from_utf8(token)?);
    }
    let (info, token) = tokens.create("admin", Role::Admin, None).await?;
    let kept = shared_value(pool, NAME, || Ok(token.clone().into_bytes())).await?;
    let kept = String::from_utf8(kept)?;
    if kept != token {
        // Another replica was first: ours is not needed.
        tokens.revoke(&info.id).await?;
    } else {
        tracing::info!("created the admin token; every replica's kubeconfig carries it");
    }
    Ok(kept)
}

/// Where the store lives.
enum StoreChoice {
    Sqlite,
    Postgres(PostgresOptions),
}

fn store_choice(
    args: &ServeArgs,
    config: &Config,
    options: &StoreOptions,
) -> anyhow::Result<StoreChoice> {
    let from_file = config.store.as_ref();
    let url = args
        .store
        .clone()
        .or_else(|| from_file.map(|s| s.url.clone()));
    match url.as_deref() {
        None | Some("sqlite") => Ok(StoreChoice::Sqlite),
        Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
            Ok(StoreChoice::Postgres(PostgresOptions {
                url: u.to_string(),
                pool_size: from_file.map_or(8, |s| s.pool_size),
                timeout: from_file.map_or(Duration::from_secs(10), |s| s.timeout),
                window: options.log_window,
            }))
        }
        Some(_) => {
            anyhow::bail!("--store: expected `sqlite` or a URL postgres://user@host:port/database")
        }
    }
}

/// This machine's name, for the replica's identity.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "stowage".into())
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
