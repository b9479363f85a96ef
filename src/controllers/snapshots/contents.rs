//! The VolumeSnapshotContent side: a content becomes a provider snapshot (or an existing one is
//! looked up), and a content with `deletionPolicy: Delete` goes only after the provider's
//! snapshot is gone.
//!
//! Contents labelled `snapshot.storage.kubernetes.io/managed-by: <node>` of a provider the
//! server does not run are left to that node's agent (node-local provisioning).
//!
//! Before the first provider call the content carries its finalizer, so a content deleted
//! while the provider was still answering is held until its snapshot is deleted too: the
//! create is idempotent by name, so asking again finds the snapshot to delete. Kubernetes can
//! leak snapshots there.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use stowage_provider::{ErrorKind, Provider, SnapshotRequest};

use super::{COMPONENT, Error, POLL, ProgressReports, error_now, nanos_of, provider_snapshot_name};
use crate::controllers::Context;
use crate::resources::names::finalizers::CONTENT_BOUND;
use crate::resources::volumesnapshotcontent::VolumeSnapshotContentStatus;
use crate::resources::{
    AnyObject, Kind, Node, PersistentVolume, Subresource, VolumeSnapshot, VolumeSnapshotClass,
    VolumeSnapshotContent,
};
use crate::runtime::{Action, Reconciler};
use crate::store::{ObjectKey, Stored, WatchEvent};

pub struct ContentSnapshotter {
    ctx: Arc<Context>,
    progress: ProgressReports,
}

/// On a content: the provider has been asked for its snapshot (external-snapshotter's name).
pub const BEING_CREATED: &str = "snapshot.storage.kubernetes.io/volumesnapshot-being-created";

fn being_created(c: &VolumeSnapshotContent) -> bool {
    c.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(BEING_CREATED))
}

/// The node whose agent the content's snapshot belongs to, if it is a node-local one.
pub fn node_of(c: &VolumeSnapshotContent) -> Option<&str> {
    c.metadata
        .labels
        .as_ref()?
        .get(crate::resources::names::labels::SNAPSHOT_MANAGED_BY)
        .map(String::as_str)
}

fn has_finalizer(c: &VolumeSnapshotContent) -> bool {
    c.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == CONTENT_BOUND)
}

impl ContentSnapshotter {
    pub fn new(ctx: Arc<Context>) -> Self {
        ContentSnapshotter {
            ctx,
            progress: ProgressReports::default(),
        }
    }

    /// The VolumeSnapshot the content is bound to, if it still exists as the same object.
    fn snapshot_of(&self, c: &VolumeSnapshotContent) -> Option<Arc<Stored>> {
        let (namespace, name) = c.snapshot_ref();
        let uid = c.spec.volume_snapshot_ref.uid.as_deref()?;
        self.ctx
            .store
            .get_typed::<VolumeSnapshot>(namespace, name)
            .filter(|s| s.uid() == uid)
    }

    /// Reports on the content and, where it has one, on its VolumeSnapshot (which is what the
    /// user looks at).
    fn event(&self, stored: &Stored, warning: bool, reason: &'static str, message: String) {
        let c: &VolumeSnapshotContent = &stored.typed();
        let mut objects = vec![stored.object()];
        if let Some(s) = self.snapshot_of(c) {
            objects.push(s.object());
        }
        for object in objects {
            if warning {
                self.ctx
                    .recorder
                    .warning(COMPONENT, &object, reason, message.clone());
            } else {
                self.ctx
                    .recorder
                    .normal(COMPONENT, &object, reason, message.clone());
            }
        }
    }

    async fn write_status(
        &self,
        stored: &Arc<Stored>,
        status: VolumeSnapshotContentStatus,
    ) -> Result<(), Error> {
        let c: &VolumeSnapshotContent = &stored.typed();
        if c.status.as_ref() == Some(&status) {
            return Ok(());
        }
        self.ctx
            .change::<VolumeSnapshotContent>(stored, Subresource::Status, |c| {
                c.status = Some(status)
            })
            .await?;
        Ok(())
    }

    async fn fail(
        &self,
        stored: &Arc<Stored>,
        reason: &'static str,
        message: String,
    ) -> Result<(), Error> {
        self.event(stored, true, reason, message.clone());
        let c: &VolumeSnapshotContent = &stored.typed();
        let mut status = c.status.clone().unwrap_or_default();
        status.error = Some(error_now(
            status.error.as_ref(),
            &message,
            self.ctx.clock.now(),
        ));
        self.write_status(stored, status).await
    }

    /// The source volume's attributes, which a provider may need to find it.
    fn source_attributes(&self, driver: &str, handle: &str) -> BTreeMap<String, String> {
        let (volumes, _) = self.ctx.store.list(Kind::PersistentVolume, None);
        volumes
            .iter()
            .find_map(|v| {
                let csi = v.typed::<PersistentVolume>().spec?.csi?;
                (csi.driver == driver && csi.volume_handle == handle)
                    .then(|| csi.volume_attributes.unwrap_or_default())
            })
            .unwrap_or_default()
    }

    /// Takes (or finds again) the provider's snapshot of a dynamic content.
    async fn take(
        &self,
        stored: &Arc<Stored>,
        provider: &Arc<dyn Provider>,
        volume_handle: &str,
    ) -> Result<Action, Error> {
        let c: &VolumeSnapshotContent = &stored.typed();
        let Some(uid) = c
            .spec
            .volume_snapshot_ref
            .uid
            .clone()
            .filter(|u| !u.is_empty())
        else {
            return Ok(Action::await_change());
        };
        let parameters = match &c.spec.volume_snapshot_class_name {
            None => BTreeMap::new(),
            Some(name) => match self.ctx.store.get_typed::<VolumeSnapshotClass>("", name) {
                Some(class) => class
                    .typed::<VolumeSnapshotClass>()
                    .parameters
                    .unwrap_or_default(),
                None => {
                    self.fail(
                        stored,
                        "SnapshotCreationFailed",
                        format!("volumesnapshotclass \"{name}\" not found"),
                    )
                    .await?;
                    return Ok(Action::await_change());
                }
            },
        };
        if !being_created(c) {
            // Said before the first call, so that a deletion knows the provider may have a
            // snapshot to delete even if no id was recorded.
            self.ctx
                .change::<VolumeSnapshotContent>(stored, Subresource::Main, |c| {
                    c.metadata
                        .annotations
                        .get_or_insert_with(Default::default)
                        .insert(BEING_CREATED.to_string(), "yes".to_string());
                })
                .await?;
            return Ok(Action::await_change());
        }
        let request = SnapshotRequest {
            name: provider_snapshot_name(&uid),
            source_handle: volume_handle.to_string(),
            source_attributes: self.source_attributes(&c.spec.driver, volume_handle),
            parameters,
        };
        let taken = self
            .ctx
            .call_provider(
                &c.spec.driver,
                "create_snapshot",
                provider.create_snapshot(&request),
            )
            .await;
        let taken = match taken {
            Ok(taken) => taken,
            Err(e) => {
                self.fail(
                    stored,
                    "SnapshotCreationFailed",
                    format!("snapshotting volume {volume_handle}: {e}"),
                )
                .await?;
                return Err(Error::Provider(e));
            }
        };
        let key = stored.key.name.clone();
        if let Some(progress) = taken.progress.filter(|_| !taken.ready)
            && self.progress.is_news(&key, &progress)
        {
            self.event(
                stored,
                false,
                "SnapshotCopying",
                format!("snapshot {}: {progress}", taken.id),
            );
        }
        let mut status = c.status.clone().unwrap_or_default();
        status.snapshot_handle = Some(taken.id);
        status.ready_to_use = Some(taken.ready);
        status.restore_size = Some(taken.size_bytes);
        status
            .creation_time
            .get_or_insert_with(|| nanos_of(self.ctx.clock.now()));
        status.error = None;
        self.write_status(stored, status).await?;
        if taken.ready {
            self.progress.forget(&key);
            Ok(Action::await_change())
        } else {
            Ok(Action::requeue(self.poll_after(stored)))
        }
    }

    /// When to look again at a snapshot the provider is still cutting: every second at first,
    /// then a tenth of its age, at most every 30 s, so that a hundred EBS snapshots taking
    /// minutes do not ask EC2 a hundred times a second.
    fn poll_after(&self, stored: &Stored) -> Duration {
        let c: &VolumeSnapshotContent = &stored.typed();
        let age = c
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(|t| Duration::try_from(self.ctx.clock.now().duration_since(t.0)).ok())
            .unwrap_or_default();
        (age / 10).clamp(POLL, Duration::from_secs(30))
    }

    /// Looks up the existing snapshot of a pre-provisioned content.
    async fn import(
        &self,
        stored: &Arc<Stored>,
        provider: &Arc<dyn Provider>,
        handle: &str,
    ) -> Result<Action, Error> {
        let c: &VolumeSnapshotContent = &stored.typed();
        let found = self
            .ctx
            .call_provider(
                &c.spec.driver,
                "snapshot_info",
                provider.snapshot_info(handle),
            )
            .await;
        let found = match found {
            Ok(found) => found,
            Err(e) => {
                self.fail(
                    stored,
                    "SnapshotContentCheckandUpdateFailed",
                    format!("looking up snapshot {handle}: {e}"),
                )
                .await?;
                return match e.kind {
                    // It may be made or restored yet; look now and then.
                    ErrorKind::NotFound | ErrorKind::InvalidArgument => {
                        Ok(Action::requeue(Duration::from_secs(60)))
                    }
                    _ => Err(Error::Provider(e)),
                };
            }
        };
        let mut status = c.status.clone().unwrap_or_default();
        status.snapshot_handle = Some(found.id);
        status.ready_to_use = Some(found.ready);
        status.restore_size = Some(found.size_bytes);
        status
            .creation_time
            .get_or_insert_with(|| nanos_of(self.ctx.clock.now()));
        status.error = None;
        self.write_status(stored, status).await?;
        Ok(if found.ready {
            Action::await_change()
        } else {
            Action::requeue(self.poll_after(stored))
        })
    }

    /// A node-local content whose node is gone: its snapshot went with the node's disk. A
    /// content being deleted is let go (with a warning) rather than held for ever; one not
    /// yet taken says why it never will be.
    async fn node_gone(&self, stored: &Arc<Stored>, node: &str) -> Result<Action, Error> {
        let c: &VolumeSnapshotContent = &stored.typed();
        let message =
            format!("node {node} is gone, and with it the disk this snapshot is (or was to be) on");
        if c.metadata.deletion_timestamp.is_some() {
            if has_finalizer(c) {
                self.event(stored, true, "SnapshotDeleteFailed", message);
                self.ctx
                    .drop_finalizer::<VolumeSnapshotContent>(stored, CONTENT_BOUND)
                    .await?;
            }
            return Ok(Action::await_change());
        }
        if !c.is_ready() {
            self.fail(stored, "SnapshotCreationFailed", message).await?;
        }
        Ok(Action::await_change())
    }

    /// A content being deleted: the provider's snapshot goes first (`Delete`), unless a live
    /// VolumeSnapshot is still bound to it.
    async fn delete(&self, stored: &Arc<Stored>) -> Result<Action, Error> {
        let c: &VolumeSnapshotContent = &stored.typed();
        if let Some(snapshot) = self.snapshot_of(c)
            && snapshot
                .typed::<VolumeSnapshot>()
                .metadata
                .deletion_timestamp
                .is_none()
        {
            // Kubernetes keeps a bound content too: its snapshot's deletion lets it go.
            return Ok(Action::await_change());
        }
        if !c.retains() {
            let driver = &c.spec.driver;
            let Some(provider) = self.ctx.providers.get(driver).cloned() else {
                self.event(
                    stored,
                    true,
                    "SnapshotDeleteFailed",
                    format!("provider {driver} is not enabled on this server; the snapshot stays until it is"),
                );
                return Ok(Action::requeue(Duration::from_secs(60)));
            };
            let status = c.status.clone().unwrap_or_default();
            let id = match (&status.snapshot_handle, &c.spec.source) {
                (Some(id), _) => Some(id.clone()),
                (None, source) if source.snapshot_handle.is_some() => {
                    source.snapshot_handle.clone()
                }
                // Never asked for: nothing to delete.
                (None, _) if !being_created(c) => None,
                // Deleted while the first create was in flight: the create is idempotent by
                // name, so asking again finds the snapshot (if it was made) to delete it. A
                // failure to ask is retried, never taken for "nothing there".
                (None, source) => match (&source.volume_handle, &c.spec.volume_snapshot_ref.uid) {
                    (Some(handle), Some(uid)) => match self
                        .ctx
                        .call_provider(
                            driver,
                            "create_snapshot",
                            provider.create_snapshot(&SnapshotRequest {
                                name: provider_snapshot_name(uid),
                                source_handle: handle.clone(),
                                source_attributes: self.source_attributes(driver, handle),
                                parameters: BTreeMap::new(),
                            }),
                        )
                        .await
                    {
                        Ok(taken) => Some(taken.id),
                        // The source is gone, so no snapshot of it can be made or found.
                        Err(e) if e.kind == ErrorKind::NotFound => None,
                        Err(e) => return Err(Error::Provider(e)),
                    },
                    _ => None,
                },
            };
            if let Some(id) = id
                && let Err(e) = self
                    .ctx
                    .call_provider(driver, "delete_snapshot", provider.delete_snapshot(&id))
                    .await
            {
                self.event(
                    stored,
                    true,
                    "SnapshotDeleteFailed",
                    format!("deleting snapshot {id} failed (will retry): {e}"),
                );
                return Err(Error::Provider(e));
            }
        }
        self.progress.forget(&stored.key.name);
        self.ctx
            .drop_finalizer::<VolumeSnapshotContent>(stored, CONTENT_BOUND)
            .await?;
        Ok(Action::await_change())
    }
}

#[async_trait::async_trait]
impl Reconciler for ContentSnapshotter {
    type Key = ObjectKey;

    fn name(&self) -> &'static str {
        "snapshot-contents"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[
            Kind::VolumeSnapshotContent,
            Kind::VolumeSnapshot,
            Kind::VolumeSnapshotClass,
            Kind::Node,
        ]
    }

    fn keys_for(&self, event: &WatchEvent) -> Vec<ObjectKey> {
        self.keys_for_object(&event.object)
    }

    fn keys_for_object(&self, object: &Stored) -> Vec<ObjectKey> {
        match &*object.decoded() {
            AnyObject::VolumeSnapshotContent(_) => vec![object.key.clone()],
            // A snapshot's deletion lets its content go (or be let go).
            AnyObject::VolumeSnapshot(s) => s
                .status
                .as_ref()
                .and_then(|st| st.bound_volume_snapshot_content_name.clone())
                .map(|name| vec![ObjectKey::new("", &name)])
                .unwrap_or_default(),
            // A class appearing lets the contents waiting for it go ahead.
            AnyObject::VolumeSnapshotClass(class) => {
                let (contents, _) = self.ctx.store.list(Kind::VolumeSnapshotContent, None);
                contents
                    .iter()
                    .filter(|c| {
                        let c: &VolumeSnapshotContent = &c.typed();
                        !c.is_ready() && c.spec.volume_snapshot_class_name == class.metadata.name
                    })
                    .map(|c| c.key.clone())
                    .collect()
            }
            // A node that goes takes the snapshots on its disk with it.
            AnyObject::Node(_) => {
                let (contents, _) = self.ctx.store.list(Kind::VolumeSnapshotContent, None);
                contents
                    .iter()
                    .filter(|c| {
                        node_of(&c.typed::<VolumeSnapshotContent>())
                            == Some(object.key.name.as_str())
                    })
                    .map(|c| c.key.clone())
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, Error> {
        let Some(stored) = self
            .ctx
            .store
            .get_typed::<VolumeSnapshotContent>("", &key.name)
        else {
            self.progress.forget(&key.name);
            return Ok(Action::await_change());
        };
        let c: &VolumeSnapshotContent = &stored.typed();
        // A snapshot on a node's disk (node-local provisioning) is that node's agent's to
        // take, look up and delete (`node::snapshots`); what needs no provider (following its
        // VolumeSnapshot, its finalizer, a retained snapshot let go) stays here.
        let node_local = node_of(c).is_some() && self.ctx.providers.get(&c.spec.driver).is_none();
        if let Some(node) = node_of(c).filter(|_| node_local)
            && self.ctx.store.get_typed::<Node>("", node).is_none()
        {
            return self.node_gone(&stored, node).await;
        }
        if c.metadata.deletion_timestamp.is_some() {
            if node_local && !c.retains() {
                return Ok(Action::await_change());
            }
            if has_finalizer(c) {
                return self.delete(&stored).await;
            }
            return Ok(Action::await_change());
        }
        let bound = c
            .spec
            .volume_snapshot_ref
            .uid
            .as_deref()
            .is_some_and(|u| !u.is_empty());
        if bound && self.snapshot_of(c).is_none() {
            // Its VolumeSnapshot is gone: a retained content is let go (an admin deletes it
            // when done), a deleted one goes.
            if c.retains() {
                if has_finalizer(c) {
                    self.ctx
                        .drop_finalizer::<VolumeSnapshotContent>(&stored, CONTENT_BOUND)
                        .await?;
                }
            } else {
                self.ctx
                    .delete_if_present::<VolumeSnapshotContent>("", &key.name)
                    .await?;
            }
            return Ok(Action::await_change());
        }
        if !has_finalizer(c) {
            self.ctx
                .change::<VolumeSnapshotContent>(&stored, Subresource::Main, |c| {
                    c.metadata
                        .finalizers
                        .get_or_insert_with(Vec::new)
                        .push(CONTENT_BOUND.to_string())
                })
                .await?;
            return Ok(Action::await_change());
        }
        if c.is_ready() || node_local {
            return Ok(Action::await_change());
        }
        let Some(provider) = self.ctx.providers.get(&c.spec.driver).cloned() else {
            self.fail(
                &stored,
                "SnapshotCreationFailed",
                format!("provider {} is not enabled on this server", c.spec.driver),
            )
            .await?;
            return Ok(Action::requeue(Duration::from_secs(60)));
        };
        if !provider.capabilities().snapshots {
            self.fail(
                &stored,
                "SnapshotCreationFailed",
                format!("provider {} cannot take snapshots", c.spec.driver),
            )
            .await?;
            return Ok(Action::await_change());
        }
        match (&c.spec.source.volume_handle, &c.spec.source.snapshot_handle) {
            (_, Some(handle)) => self.import(&stored, &provider, handle).await,
            (Some(handle), None) => self.take(&stored, &provider, handle).await,
            (None, None) => Ok(Action::await_change()),
        }
    }
}
