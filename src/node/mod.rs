//! `stowage node`: the node agent, the kubelet's volume half.
//!
//! It runs on each node as an ordinary API client with a `node:<name>` token, and the server's
//! node authorizer lets it read only the pods on its node and the claims, volumes and
//! attachments they use. It:
//! - registers its Node and renews its Lease in `stowage-node-lease` ([`register`]);
//! - publishes every attached volume of every pod on the node at
//!   `<root>/pods/<pod uid>/volumes/<volume name>`: a bind mount for local directories, a
//!   kernel mount for NFS, a filesystem staged once per volume for block devices, or the device
//!   itself for `volumeMode: Block` ([`agent`], with the mount table in [`mounts`]);
//! - lists a volume in `Node.status.volumesInUse` before it mounts it and removes it after the
//!   last unmount, so the attach/detach controller detaches only what is safe to detach;
//! - grows filesystems after an expansion and exports volume stats ([`stats`]).
//!
//! It keeps no state of its own beyond a small record beside each mount: after a crash the
//! mount table and the API say what to do, and the next pass repairs whatever a kill left.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::client::{CliError, CliResult, Client, ConnectionArgs, exit};

pub mod agent;
pub mod capacity;
pub mod mounts;
pub mod provision;
pub mod register;
pub mod snapshots;
pub mod stats;

/// `stowage node` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// This node's name (its Node object, and the `node:<name>` role of its token).
    #[arg(long, env = "STOWAGE_NODE_NAME")]
    pub node_name: String,
    /// Where pods' volumes are published (`<root>/pods/<uid>/volumes/<name>`) and block
    /// devices staged (`<root>/staging/<volume>`).
    #[arg(long, default_value = "/var/lib/stowage-node")]
    pub root: PathBuf,
    /// The node's zone (label `topology.kubernetes.io/zone`), set when it registers.
    #[arg(long)]
    pub zone: Option<String>,
    /// The node's provider id (`spec.providerID`, e.g. `aws:///us-east-1a/i-0123`).
    #[arg(long)]
    pub provider_id: Option<String>,
    /// A label to register the node with (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Where `/metrics` (volume stats) is served.
    #[arg(long, default_value = "127.0.0.1:10255")]
    pub metrics_listen: SocketAddr,
    /// The node Lease's duration; it is renewed every quarter of it.
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How often the agent re-reads claims and volumes without a change to wake it
    /// (expansions, stale mounts).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub sync_period: Duration,
    /// Where device paths from attachments are looked up (`/dev/xvdf` is `<dev-dir>/xvdf`):
    /// `/dev` on a real node.
    #[arg(long, default_value = "/dev")]
    pub dev_dir: PathBuf,
    /// Run the local provider on this node, with its volumes under this directory: claims of
    /// `local.stowage.dev` classes placed on this node are provisioned here (the server then
    /// runs with `providers.local.enabled: false`).
    #[arg(long)]
    pub local_root: Option<PathBuf>,
    /// The most the local provider's volumes may claim in all (default: the filesystem's size).
    #[arg(long, requires = "local_root")]
    pub local_capacity: Option<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    stowage_provider::duration::parse_duration(s)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{s:?} is not a duration such as 500ms, 10s or 1m"))
}

/// Runs the agent until it is stopped (SIGINT or SIGTERM).
pub async fn run(conn: &ConnectionArgs, args: NodeArgs) -> CliResult<()> {
    if let Some(e) = crate::machinery::validation::dns1123_subdomain(&args.node_name)
        .into_iter()
        .next()
    {
        return Err(CliError::usage(format!(
            "--node-name {:?} is not a valid node name: {e}",
            args.node_name
        )));
    }
    let client = Client::connect(conn)?;
    std::fs::create_dir_all(&args.root).map_err(|e| {
        CliError::new(
            exit::FAILURE,
            format!("creating the root {}: {e}", args.root.display()),
        )
    })?;
    register::register(&client, &args).await?;
    let stats = stats::Stats::default();
    let listener = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .map_err(|e| {
            CliError::new(
                exit::FAILURE,
                format!("listening on {}: {e}", args.metrics_listen),
            )
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::new(exit::FAILURE, e.to_string()))?;
    tracing::info!(node = %args.node_name, root = %args.root.display(), metrics = %addr, "node agent started");
    let lease = tokio::spawn(register::renew_lease(
        client.clone(),
        args.node_name.clone(),
        args.lease_duration,
    ));
    let metrics = tokio::spawn(stats::serve(listener, stats.clone()));
    let local = match &args.local_root {
        Some(root) => Some(
            provision::LocalProvisioner::open(
                client.clone(),
                &args.node_name,
                root.clone(),
                args.local_capacity.clone(),
            )
            .map_err(|e| CliError::new(exit::FAILURE, e))?,
        ),
        None => None,
    };
    let agent = agent::Agent::new(client, &args, stats, local);
    let result = tokio::select! {
        r = agent.run() => r,
        _ = shutdown_signal() => Ok(()),
    };
    lease.abort();
    metrics.abort();
    result.map_err(CliError::from)
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}
