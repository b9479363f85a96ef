//! Node health from leases: a node whose Lease in `stowage-node-lease` (renewed by its agent or
//! by the orchestrator) expires is marked NotReady (condition `Ready=Unknown`) with an event;
//! renewing it marks the node Ready again. Nodes without a lease are left as they are.
//!
//! The attach/detach controller reads this condition: volumes in use on an unhealthy node are
//! force-detached after `max-wait-for-unmount`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::NodeCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::Context;
use crate::registry::Write;
use crate::resources::{AnyObject, Kind, Lease, Node, Subresource};
use crate::runtime::{Action, Reconciler};
use crate::store::{Stored, WatchEvent};

pub const COMPONENT: &str = "node-lifecycle-controller";
use crate::resources::names::LEASE_NAMESPACE;
use crate::runtime::Error;
/// Lease duration when the lease does not say.
const DEFAULT_LEASE_SECONDS: i64 = 40;

pub struct NodeHealth {
    ctx: Arc<Context>,
}

impl NodeHealth {
    pub fn new(ctx: Arc<Context>) -> Self {
        NodeHealth { ctx }
    }
}

#[async_trait::async_trait]
impl Reconciler for NodeHealth {
    type Key = String;

    fn name(&self) -> &'static str {
        "nodehealth"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Node, Kind::Lease]
    }

    fn keys_for(&self, event: &WatchEvent) -> Vec<String> {
        self.keys_for_object(&event.object)
    }

    fn keys_for_object(&self, object: &Stored) -> Vec<String> {
        match object.kind {
            Kind::Node => vec![object.key.name.to_string()],
            Kind::Lease if object.key.namespace == LEASE_NAMESPACE => {
                vec![object.key.name.to_string()]
            }
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, name: &String) -> Result<Action, Error> {
        let Some(stored) = self.ctx.store.get_typed::<Node>("", name) else {
            return Ok(Action::await_change());
        };
        let Some(lease) = self.ctx.store.get_typed::<Lease>(LEASE_NAMESPACE, name) else {
            return Ok(Action::await_change());
        };
        let spec = lease.typed::<Lease>().spec.clone().unwrap_or_default();
        let renewed = spec
            .renew_time
            .map(|t| t.0)
            .or(spec.acquire_time.map(|t| t.0))
            .or_else(|| {
                lease
                    .object()
                    .meta()
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0)
            })
            .unwrap_or_else(|| self.ctx.clock.now());
        let duration = i64::from(
            spec.lease_duration_seconds
                .unwrap_or(DEFAULT_LEASE_SECONDS as i32),
        )
        .max(1);
        let expires = renewed
            .checked_add(jiff::SignedDuration::from_secs(duration))
            .unwrap_or(renewed);
        let now = self.ctx.clock.now();
        let fresh = now < expires;

        let node: &Node = &stored.typed();
        let current = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
        let (status, reason, message) = if fresh {
            (
                "True",
                "LeaseRenewed",
                "the node renews its lease".to_string(),
            )
        } else {
            (
                "Unknown",
                "NodeLeaseExpired",
                format!("the node stopped renewing its lease (last renewal {renewed})"),
            )
        };
        if current.map(|c| c.status.as_str()) != Some(status) {
            let mut n = node.clone();
            let conditions = n
                .status
                .get_or_insert_with(Default::default)
                .conditions
                .get_or_insert_with(Vec::new);
            conditions.retain(|c| c.type_ != "Ready");
            conditions.push(NodeCondition {
                type_: "Ready".into(),
                status: status.into(),
                reason: Some(reason.into()),
                message: Some(message.clone()),
                last_heartbeat_time: Some(Time(renewed)),
                last_transition_time: Some(Time(now)),
            });
            self.ctx
                .registry
                .write(vec![Write::update(n, stored.rv, Subresource::Status)])
                .await?;
            let obj: &AnyObject = &stored.object();
            if fresh {
                self.ctx.recorder.normal(
                    COMPONENT,
                    obj,
                    "NodeReady",
                    format!("Node {name} is Ready: {message}"),
                );
            } else {
                self.ctx.recorder.warning(
                    COMPONENT,
                    obj,
                    "NodeNotReady",
                    format!("Node {name} is NotReady: {message}"),
                );
            }
        }
        if fresh {
            let left = Duration::try_from(expires.duration_since(now)).unwrap_or(Duration::ZERO);
            Ok(Action::requeue(left + Duration::from_millis(50)))
        } else {
            Ok(Action::await_change())
        }
    }
}
