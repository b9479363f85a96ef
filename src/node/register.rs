//! The node's registration and heartbeat: its Node object (created once, with the labels that
//! place it; after that only an admin may change them) and its Lease in `stowage-node-lease`,
//! which the server's node-lifecycle controller reads to keep the node Ready.

use std::time::Duration;

use serde_json::{Value, json};

use super::NodeArgs;
use crate::cli::client::{CliError, CliResult, Client, exit};
use crate::resources::names::LEASE_NAMESPACE;
use crate::resources::names::node::{HOSTNAME_LABEL, ZONE_LABEL};

fn now_micro() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

/// The Node this agent registers.
pub fn node_object(args: &NodeArgs) -> CliResult<Value> {
    let mut labels = serde_json::Map::new();
    labels.insert(HOSTNAME_LABEL.into(), json!(args.node_name));
    if let Some(zone) = &args.zone {
        labels.insert(ZONE_LABEL.into(), json!(zone));
    }
    for l in &args.labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| CliError::usage(format!("--label {l:?} is not KEY=VALUE")))?;
        labels.insert(k.into(), json!(v));
    }
    let mut node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": args.node_name, "labels": labels},
    });
    if let Some(id) = &args.provider_id {
        node["spec"] = json!({"providerID": id});
    }
    Ok(node)
}

/// Creates the Node unless it exists (an admin may have created it, or an earlier start did).
pub async fn register(client: &Client, args: &NodeArgs) -> CliResult<()> {
    let path = format!("/api/v1/nodes/{}", args.node_name);
    match client.get(&path).await {
        Ok(_) => return Ok(()),
        // A node may not learn whether a Node it cannot see exists, its own included: a
        // refusal reads as "not there yet".
        Err(e) if e.code == exit::NOT_FOUND || e.code == exit::FORBIDDEN => {}
        Err(e) => return Err(e),
    }
    match client.post("/api/v1/nodes", &node_object(args)?).await {
        Ok(_) => {
            tracing::info!(node = %args.node_name, "registered the node");
            Ok(())
        }
        Err(e) if e.code == exit::CONFLICT => Ok(()),
        Err(e) => Err(e),
    }
}

/// Renews the node's Lease every quarter of its duration, forever; failures are logged and
/// retried at the next tick (the server marks the node NotReady only when the lease expires).
pub async fn renew_lease(client: Client, node: String, duration: Duration) {
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{node}");
    let seconds = duration.as_secs().max(1);
    let mut tick = tokio::time::interval((duration / 4).max(Duration::from_millis(100)));
    loop {
        tick.tick().await;
        let patch = json!({"spec": {
            "holderIdentity": node,
            "leaseDurationSeconds": seconds,
            "renewTime": now_micro(),
        }});
        let renewed = client
            .patch(&path, "application/merge-patch+json", &patch)
            .await;
        let result = match renewed {
            // Not there yet (to a node, a Lease it cannot see yet is refused, not missing).
            Err(e) if e.code == exit::NOT_FOUND || e.code == exit::FORBIDDEN => {
                let lease = json!({
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": node, "namespace": LEASE_NAMESPACE},
                    "spec": patch["spec"],
                });
                client
                    .post(
                        &format!(
                            "/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases"
                        ),
                        &lease,
                    )
                    .await
                    .map(drop)
            }
            other => other.map(drop),
        };
        if let Err(e) = result {
            tracing::warn!(node = %node, "renewing the node lease: {}", e.message);
        }
    }
}
