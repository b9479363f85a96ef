//! ResourceQuota status: `status.used` recomputed from the objects themselves.
//!
//! Admission charges and releases quotas in the same transaction as every write (see
//! `registry::quota`), so usage is exact without this controller. It exists to repair what
//! admission cannot see: an admin who edits `status` by hand, or a quota created while objects
//! of its namespace were being written. It recomputes a quota when the quota is created or its
//! limits change, and on every resync; never on each charged write, which would make every
//! write in a busy namespace cost a full count.

use std::sync::Arc;

use super::Context;
use crate::registry::{WriteOptions, quota};
use crate::resources::resourcequota::scope::Scope;
use crate::resources::resourcequota::{self, ResourceQuota};
use crate::resources::{AnyObject, Kind, Subresource};
use crate::runtime::Error;
use crate::runtime::{Action, Reconciler};
use crate::store::{EventType, ObjectKey, Stored, WatchEvent};

pub struct QuotaStatus {
    ctx: Arc<Context>,
}

impl QuotaStatus {
    pub fn new(ctx: Arc<Context>) -> Self {
        QuotaStatus { ctx }
    }
}

#[async_trait::async_trait]
impl Reconciler for QuotaStatus {
    type Key = ObjectKey;

    fn name(&self) -> &'static str {
        "resourcequota"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::ResourceQuota]
    }

    fn keys_for(&self, event: &WatchEvent) -> Vec<ObjectKey> {
        let limits_changed = match (&*event.object.decoded(), event.prev.as_deref()) {
            (_, None) => true,
            (AnyObject::ResourceQuota(new), Some(prev)) => match &*prev.decoded() {
                AnyObject::ResourceQuota(old) => new.spec != old.spec,
                _ => true,
            },
            _ => false,
        };
        if event.type_ != EventType::Deleted && limits_changed {
            vec![event.object.key.clone()]
        } else {
            Vec::new()
        }
    }

    fn keys_for_object(&self, object: &Stored) -> Vec<ObjectKey> {
        vec![object.key.clone()]
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, Error> {
        let Some(stored) = self
            .ctx
            .store
            .get_typed::<ResourceQuota>(&key.namespace, &key.name)
        else {
            return Ok(Action::await_change());
        };
        let q: &ResourceQuota = &stored.typed();
        let scope = Scope::of(q.spec.as_ref());
        let used = quota::usage_in(&self.ctx.store, &key.namespace, &scope);
        let status = resourcequota::status_for(q, &used);
        if q.status.as_ref() == Some(&status) {
            return Ok(Action::await_change());
        }
        let mut fixed = q.clone();
        fixed.status = Some(status);
        // At the version read: a charge committed meanwhile makes this a conflict, and the
        // retry counts again.
        fixed.metadata.resource_version = Some(stored.rv.to_string());
        self.ctx
            .registry
            .update(
                &key.namespace,
                &key.name,
                fixed,
                Subresource::Status,
                &WriteOptions::default(),
            )
            .await?;
        Ok(Action::await_change())
    }
}
