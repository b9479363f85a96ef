//! `stowage serve`: wires the store, the registry, the API and (later) the controllers into one
//! process, and shuts them down in order.
//!
//! Shutdown order on SIGINT/SIGTERM: stop accepting connections and end open watches; let
//! in-flight requests finish (their writes commit); then close the store, which commits every
//! queued write and refuses new ones. Nothing acknowledged is lost, nothing half-written remains.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiOptions, ApiState};
use crate::metrics::Metrics;
use crate::registry::Registry;
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
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let store_options = StoreOptions {
        log_max_events: args.watch_history.max(1),
        ..StoreOptions::default()
    };
    let store = Store::open(&args.data_dir, store_options)
        .await
        .with_context(|| format!("opening the store in {}", args.data_dir.display()))?;
    let registry = Registry::new(store.clone());
    let metrics = Metrics::new();
    let shutdown = CancellationToken::new();
    let state = ApiState::new(registry, metrics, shutdown.clone(), ApiOptions::default());
    let app = api::router(state.clone());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let local = listener.local_addr()?;
    tracing::info!(address = %local, data_dir = %args.data_dir.display(), "stowage is serving");
    // Tests and scripts read this line to find the port when listening on port 0.
    println!("listening on http://{local}");
    state.ready.store(true, Ordering::Relaxed);

    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: draining in-flight requests");
        signal.cancel();
    });
    let server =
        axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let drained = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        result = server => result.context("serving HTTP")?,
        _ = drained => tracing::warn!("in-flight requests did not finish in time"),
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
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
