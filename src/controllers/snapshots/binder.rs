//! The VolumeSnapshot side: each snapshot bound to one VolumeSnapshotContent, its status a
//! mirror of the content's, and its deletion carried to the content by `deletionPolicy`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{COMPONENT, Error, content_name, error_now, quantity_of, time_of};
use crate::controllers::Context;
use crate::resources::names::finalizers::{CONTENT_BOUND, PVC_AS_SNAPSHOT_SOURCE, SNAPSHOT_BOUND};
use crate::resources::names::labels::SNAPSHOT_MANAGED_BY;
use crate::resources::volumesnapshot::{VolumeSnapshotStatus, source_claim};
use crate::resources::volumesnapshotclass::{self, VolumeSnapshotClass};
use crate::resources::volumesnapshotcontent::{
    VolumeSnapshotContentSource, VolumeSnapshotContentSpec, VolumeSnapshotContentStatus,
};
use crate::resources::{
    AnyObject, Kind, PersistentVolume, PersistentVolumeClaim, Subresource, VolumeSnapshot,
    VolumeSnapshotContent, pvc,
};
use crate::runtime::{Action, Reconciler};
use crate::store::{ObjectKey, Stored, WatchEvent};

pub struct SnapshotBinder {
    ctx: Arc<Context>,
}

/// The volume behind a claim, once the claim is bound.
struct Source {
    driver: String,
    handle: String,
    volume_mode: Option<String>,
    /// The node whose agent snapshots it: a node-local volume of a provider the server does
    /// not run (node-local provisioning).
    node: Option<String>,
}

/// Why a snapshot cannot be made yet, or at all.
enum Blocked {
    /// Something it needs is missing or not ready: wait for it.
    Waiting(String),
    /// It can never be made as asked.
    Refused(String),
}

fn has_finalizer(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers.iter().flatten().any(|f| f == finalizer)
}

/// The content bound to a snapshot: the one its status names, else the one it would get.
fn bound_content_name(s: &VolumeSnapshot, uid: &str) -> String {
    s.status
        .as_ref()
        .and_then(|st| st.bound_volume_snapshot_content_name.clone())
        .or_else(|| s.spec.source.volume_snapshot_content_name.clone())
        .unwrap_or_else(|| content_name(uid))
}

/// Whether `content` names the snapshot `stored` as its own (by namespace and name, and by uid
/// once it has one).
fn refers_to(content: &VolumeSnapshotContent, stored: &Stored) -> bool {
    let r = &content.spec.volume_snapshot_ref;
    r.namespace.as_deref() == Some(stored.key.namespace.as_str())
        && r.name.as_deref() == Some(stored.key.name.as_str())
        && r.uid
            .as_deref()
            .is_none_or(|u| u.is_empty() || u == stored.uid())
}

impl SnapshotBinder {
    pub fn new(ctx: Arc<Context>) -> Self {
        SnapshotBinder { ctx }
    }

    fn source(&self, namespace: &str, claim_name: &str) -> Result<Source, Blocked> {
        let Some(claim) = self
            .ctx
            .store
            .get_typed::<PersistentVolumeClaim>(namespace, claim_name)
        else {
            return Err(Blocked::Waiting(format!(
                "persistentvolumeclaim \"{claim_name}\" not found"
            )));
        };
        let c: &PersistentVolumeClaim = &claim.typed();
        if c.metadata.deletion_timestamp.is_some() {
            return Err(Blocked::Refused(format!(
                "persistentvolumeclaim \"{claim_name}\" is being deleted"
            )));
        }
        let volume_name = c.spec.as_ref().and_then(|s| s.volume_name.clone());
        let (Some(volume_name), true) = (volume_name, pvc::is_bound(c)) else {
            return Err(Blocked::Waiting(format!(
                "persistentvolumeclaim \"{claim_name}\" is not bound yet"
            )));
        };
        let Some(volume) = self
            .ctx
            .store
            .get_typed::<PersistentVolume>("", &volume_name)
        else {
            return Err(Blocked::Waiting(format!(
                "the volume of persistentvolumeclaim \"{claim_name}\" is not found"
            )));
        };
        let spec = volume.typed::<PersistentVolume>().spec.unwrap_or_default();
        let Some(csi) = spec.csi else {
            return Err(Blocked::Refused(format!(
                "volume {volume_name} has no provider here to snapshot it"
            )));
        };
        let volume = volume.typed::<PersistentVolume>();
        let node = match self.ctx.providers.get(&csi.driver) {
            Some(provider) if !provider.capabilities().snapshots => {
                return Err(Blocked::Refused(format!(
                    "provider {} cannot take snapshots",
                    csi.driver
                )));
            }
            Some(_) => None,
            // Not the server's: a volume on one node's disk is that node's agent's to
            // snapshot (Kubernetes' distributed snapshotting).
            None => match crate::resources::pv::pinned_node(&volume) {
                Some(node) => Some(node.to_string()),
                None => {
                    return Err(Blocked::Refused(format!(
                        "provider {} is not enabled on this server",
                        csi.driver
                    )));
                }
            },
        };
        Ok(Source {
            driver: csi.driver,
            handle: csi.volume_handle,
            volume_mode: spec.volume_mode,
            node,
        })
    }

    /// The class to take the snapshot with: the one named, else the driver's default (the
    /// newest, if there are several), else none (Stowage then deletes the provider's snapshot
    /// with the VolumeSnapshot, and passes no parameters).
    fn class(
        &self,
        s: &VolumeSnapshot,
        driver: &str,
    ) -> Result<Option<VolumeSnapshotClass>, Blocked> {
        if let Some(name) = &s.spec.volume_snapshot_class_name {
            let Some(class) = self.ctx.store.get_typed::<VolumeSnapshotClass>("", name) else {
                return Err(Blocked::Waiting(format!(
                    "volumesnapshotclass \"{name}\" not found"
                )));
            };
            let class: VolumeSnapshotClass = class.typed();
            if class.driver != driver {
                return Err(Blocked::Refused(format!(
                    "volumesnapshotclass \"{name}\" is for driver {}, and the claim's volume is on {driver}",
                    class.driver
                )));
            }
            return Ok(Some(class));
        }
        let (classes, _) = self.ctx.store.list(Kind::VolumeSnapshotClass, None);
        Ok(classes
            .iter()
            .map(|c| c.typed::<VolumeSnapshotClass>())
            .filter(|c| c.driver == driver && volumesnapshotclass::is_default(c))
            .max_by_key(|c| {
                (
                    c.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    c.metadata.name.clone(),
                )
            }))
    }

    /// Writes `status` (and nothing else) if it changed.
    async fn write_status(
        &self,
        stored: &Arc<Stored>,
        status: VolumeSnapshotStatus,
    ) -> Result<(), Error> {
        let s: &VolumeSnapshot = &stored.typed();
        if s.status.as_ref() == Some(&status) {
            return Ok(());
        }
        self.ctx
            .change::<VolumeSnapshot>(stored, Subresource::Status, |s| s.status = Some(status))
            .await?;
        Ok(())
    }

    /// Records why the snapshot is not made (yet), with an event.
    async fn blocked(&self, stored: &Arc<Stored>, why: Blocked) -> Result<Action, Error> {
        let s: &VolumeSnapshot = &stored.typed();
        let mut status = s.status.clone().unwrap_or_default();
        let message = match &why {
            Blocked::Waiting(m) => {
                self.ctx
                    .recorder
                    .normal(COMPONENT, &stored.object(), "SnapshotPending", m.clone());
                m
            }
            Blocked::Refused(m) => {
                self.ctx.recorder.warning(
                    COMPONENT,
                    &stored.object(),
                    "SnapshotCreationFailed",
                    m.clone(),
                );
                m
            }
        };
        status.error = Some(error_now(
            status.error.as_ref(),
            message,
            self.ctx.clock.now(),
        ));
        self.write_status(stored, status).await?;
        // What it waits for (a claim binding, a class, a content) brings it back.
        Ok(Action::await_change())
    }

    /// A snapshot of a claim: its content is made once the claim's volume and class are known.
    async fn dynamic(&self, stored: &Arc<Stored>, claim_name: &str) -> Result<Action, Error> {
        let s: &VolumeSnapshot = &stored.typed();
        let name = content_name(&stored.uid());
        if let Some(content) = self.ctx.store.get_typed::<VolumeSnapshotContent>("", &name) {
            return self.follow(stored, &content).await;
        }
        let source = match self.source(&stored.key.namespace, claim_name) {
            Ok(source) => source,
            Err(why) => return self.blocked(stored, why).await,
        };
        let class = match self.class(s, &source.driver) {
            Ok(class) => class,
            Err(why) => return self.blocked(stored, why).await,
        };
        if let Some(class) = &class
            && s.spec.volume_snapshot_class_name.is_none()
        {
            // As external-snapshotter: the default class chosen is written down.
            let class_name = class.metadata.name.clone();
            self.ctx
                .change::<VolumeSnapshot>(stored, Subresource::Main, |s| {
                    s.spec.volume_snapshot_class_name = class_name
                })
                .await?;
            return Ok(Action::await_change());
        }
        // The claim stays while its data is read.
        if let Some(claim) = self
            .ctx
            .store
            .get_typed::<PersistentVolumeClaim>(&stored.key.namespace, claim_name)
            && !has_finalizer(
                &claim.typed::<PersistentVolumeClaim>().metadata,
                PVC_AS_SNAPSHOT_SOURCE,
            )
        {
            self.ctx
                .change::<PersistentVolumeClaim>(&claim, Subresource::Main, |c| {
                    c.metadata
                        .finalizers
                        .get_or_insert_with(Vec::new)
                        .push(PVC_AS_SNAPSHOT_SOURCE.to_string())
                })
                .await?;
        }
        let node = source.node.clone();
        let mut content = self.content(
            stored,
            &name,
            VolumeSnapshotContentSpec {
                deletion_policy: class
                    .as_ref()
                    .map_or("Delete".to_string(), |c| c.deletion_policy.clone()),
                driver: source.driver,
                volume_snapshot_class_name: class.and_then(|c| c.metadata.name),
                source: VolumeSnapshotContentSource {
                    volume_handle: Some(source.handle),
                    snapshot_handle: None,
                },
                source_volume_mode: Some(source.volume_mode.unwrap_or("Filesystem".into())),
                ..Default::default()
            },
        );
        if let Some(node) = node {
            content.metadata.labels = Some(
                [(SNAPSHOT_MANAGED_BY.to_string(), node)]
                    .into_iter()
                    .collect(),
            );
        }
        self.ctx.create_if_missing(content).await?;
        let mut status = s.status.clone().unwrap_or_default();
        status.bound_volume_snapshot_content_name = Some(name);
        status.error = None;
        self.write_status(stored, status).await?;
        Ok(Action::await_change())
    }

    /// A content named `name` bound to the snapshot `stored`, with its finalizer.
    fn content(
        &self,
        stored: &Stored,
        name: &str,
        spec: VolumeSnapshotContentSpec,
    ) -> VolumeSnapshotContent {
        VolumeSnapshotContent {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                finalizers: Some(vec![CONTENT_BOUND.to_string()]),
                ..Default::default()
            },
            spec: VolumeSnapshotContentSpec {
                volume_snapshot_ref: self.reference(stored),
                ..spec
            },
            status: None,
        }
    }

    fn reference(&self, stored: &Stored) -> ObjectReference {
        ObjectReference {
            api_version: Some(crate::resources::volumesnapshot::API_VERSION.to_string()),
            kind: Some(crate::resources::volumesnapshot::KIND.to_string()),
            namespace: Some(stored.key.namespace.to_string()),
            name: Some(stored.key.name.to_string()),
            uid: Some(stored.uid()),
            resource_version: None,
            field_path: None,
        }
    }

    /// A snapshot of an existing content: bound if the content names it back.
    async fn pre_provisioned(&self, stored: &Arc<Stored>, name: &str) -> Result<Action, Error> {
        let Some(content) = self.ctx.store.get_typed::<VolumeSnapshotContent>("", name) else {
            return self
                .blocked(
                    stored,
                    Blocked::Waiting(format!("volumesnapshotcontent \"{name}\" not found")),
                )
                .await;
        };
        let c: &VolumeSnapshotContent = &content.typed();
        if c.spec.source.snapshot_handle.is_none() {
            return self
                .blocked(
                    stored,
                    Blocked::Refused(format!(
                        "volumesnapshotcontent \"{name}\" has no source.snapshotHandle: only existing snapshots can be bound by name"
                    )),
                )
                .await;
        }
        if !refers_to(c, stored) {
            return self
                .blocked(
                    stored,
                    Blocked::Refused(format!(
                        "volumesnapshotcontent \"{name}\" is bound to another VolumeSnapshot"
                    )),
                )
                .await;
        }
        if c.spec
            .volume_snapshot_ref
            .uid
            .as_deref()
            .unwrap_or_default()
            != stored.uid()
        {
            // Bind the content to this very snapshot (a later one of the same name is another).
            let uid = stored.uid();
            self.ctx
                .change::<VolumeSnapshotContent>(&content, Subresource::Main, |c| {
                    c.spec.volume_snapshot_ref.uid = Some(uid);
                    let f = c.metadata.finalizers.get_or_insert_with(Vec::new);
                    if !f.iter().any(|x| x == CONTENT_BOUND) {
                        f.push(CONTENT_BOUND.to_string());
                    }
                })
                .await?;
            return Ok(Action::await_change());
        }
        self.follow(stored, &content).await
    }

    /// Mirrors the bound content's status.
    async fn follow(&self, stored: &Arc<Stored>, content: &Arc<Stored>) -> Result<Action, Error> {
        let s: &VolumeSnapshot = &stored.typed();
        let c: &VolumeSnapshotContent = &content.typed();
        if !refers_to(c, stored) {
            return self
                .blocked(
                    stored,
                    Blocked::Refused(format!(
                        "volumesnapshotcontent \"{}\" is bound to another VolumeSnapshot",
                        content.key.name
                    )),
                )
                .await;
        }
        let old = s.status.clone().unwrap_or_default();
        let cs: VolumeSnapshotContentStatus = c.status.clone().unwrap_or_default();
        let status = VolumeSnapshotStatus {
            bound_volume_snapshot_content_name: Some(content.key.name.to_string()),
            creation_time: cs.creation_time.and_then(time_of),
            ready_to_use: Some(cs.ready_to_use.unwrap_or(false)),
            restore_size: cs.restore_size.map(quantity_of),
            error: cs.error.clone(),
            legacy_snapshot_handle: None,
            legacy_driver: None,
        };
        let handle = cs.snapshot_handle.unwrap_or_default();
        if old.creation_time.is_none() && status.creation_time.is_some() {
            self.ctx.recorder.normal(
                COMPONENT,
                &stored.object(),
                "SnapshotCreated",
                format!(
                    "Snapshot {}/{} was successfully created by the CSI driver",
                    stored.key.namespace, stored.key.name
                ),
            );
        }
        if old.ready_to_use != Some(true) && status.ready_to_use == Some(true) {
            self.ctx.recorder.normal(
                COMPONENT,
                &stored.object(),
                "SnapshotReady",
                format!(
                    "Snapshot {}/{} is ready to use (provider snapshot {handle})",
                    stored.key.namespace, stored.key.name
                ),
            );
        }
        self.write_status(stored, status).await?;
        Ok(Action::await_change())
    }

    /// A snapshot stored before contents existed: its provider snapshot gets a content, bound
    /// as a pre-provisioned one would be, deleted with the snapshot.
    async fn adopt_legacy(
        &self,
        stored: &Arc<Stored>,
        handle: &str,
        driver: &str,
    ) -> Result<Action, Error> {
        let s: &VolumeSnapshot = &stored.typed();
        let name = content_name(&stored.uid());
        let content = self.content(
            stored,
            &name,
            VolumeSnapshotContentSpec {
                deletion_policy: "Delete".into(),
                driver: driver.to_string(),
                source: VolumeSnapshotContentSource {
                    volume_handle: None,
                    snapshot_handle: Some(handle.to_string()),
                },
                ..Default::default()
            },
        );
        self.ctx.create_if_missing(content).await?;
        let mut status = s.status.clone().unwrap_or_default();
        status.bound_volume_snapshot_content_name = Some(name);
        status.legacy_snapshot_handle = None;
        status.legacy_driver = None;
        self.ctx
            .change::<VolumeSnapshot>(stored, Subresource::Status, |s| s.status = Some(status))
            .await?;
        Ok(Action::await_change())
    }

    /// A snapshot being deleted: its content goes with it (`Delete`, after the provider's
    /// snapshot) or is let go (`Retain`); claims still being restored from it hold it for a
    /// while.
    async fn release(&self, stored: &Arc<Stored>) -> Result<Action, Error> {
        let s: &VolumeSnapshot = &stored.typed();
        if let Some(wait) = self.restores_in_progress(stored) {
            return Ok(Action::requeue(wait));
        }
        let name = bound_content_name(s, &stored.uid());
        if let Some(content) = self.ctx.store.get_typed::<VolumeSnapshotContent>("", &name) {
            let c: &VolumeSnapshotContent = &content.typed();
            if refers_to(c, stored) && !c.retains() {
                if c.metadata.deletion_timestamp.is_none() {
                    self.ctx
                        .delete_if_present::<VolumeSnapshotContent>("", &name)
                        .await?;
                }
                // The content's going (after the provider's snapshot) brings this back.
                return Ok(Action::await_change());
            }
        }
        self.ctx
            .drop_finalizer::<VolumeSnapshot>(stored, SNAPSHOT_BOUND)
            .await?;
        Ok(Action::await_change())
    }

    /// While a claim in the namespace is still being restored from this snapshot, how long to
    /// wait before looking again; `None` once none is, or the deletion has waited
    /// [`super::SOURCE_PROTECTION_LIMIT`].
    fn restores_in_progress(&self, stored: &Stored) -> Option<Duration> {
        let s: &VolumeSnapshot = &stored.typed();
        let deleted_at = s.metadata.deletion_timestamp.as_ref()?.0;
        let waited = self.ctx.clock.now().duration_since(deleted_at);
        let limit = jiff::SignedDuration::try_from(super::SOURCE_PROTECTION_LIMIT).ok()?;
        if waited >= limit {
            return None;
        }
        let (claims, _) = self
            .ctx
            .store
            .list(Kind::PersistentVolumeClaim, Some(&stored.key.namespace));
        let restoring = claims.iter().any(|c| {
            let c: &PersistentVolumeClaim = &c.typed();
            c.metadata.deletion_timestamp.is_none()
                && !pvc::is_bound(c)
                && crate::controllers::provisioner::restore::snapshot_source(c).as_deref()
                    == Some(stored.key.name.as_str())
                && crate::controllers::provisioner::is_copying(c)
        });
        restoring.then(|| Duration::from_secs(2))
    }
}

#[async_trait::async_trait]
impl Reconciler for SnapshotBinder {
    type Key = ObjectKey;

    fn name(&self) -> &'static str {
        "snapshot-binder"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[
            Kind::VolumeSnapshot,
            Kind::VolumeSnapshotContent,
            Kind::VolumeSnapshotClass,
            Kind::PersistentVolumeClaim,
            Kind::PersistentVolume,
        ]
    }

    fn keys_for(&self, event: &WatchEvent) -> Vec<ObjectKey> {
        self.keys_for_object(&event.object)
    }

    fn keys_for_object(&self, object: &Stored) -> Vec<ObjectKey> {
        let unready_of = |namespace: Option<&str>, wanted: &dyn Fn(&VolumeSnapshot) -> bool| {
            let (snapshots, _) = self.ctx.store.list(Kind::VolumeSnapshot, namespace);
            snapshots
                .iter()
                .filter(|s| {
                    let s: &VolumeSnapshot = &s.typed();
                    !crate::resources::volumesnapshot::is_ready(s) && wanted(s)
                })
                .map(|s| s.key.clone())
                .collect::<Vec<_>>()
        };
        match &*object.decoded() {
            AnyObject::VolumeSnapshot(_) => vec![object.key.clone()],
            // A content's status is mirrored by its snapshot, and its going lets the snapshot go.
            AnyObject::VolumeSnapshotContent(c) => {
                let (namespace, name) = c.snapshot_ref();
                if name.is_empty() {
                    Vec::new()
                } else {
                    vec![ObjectKey::new(namespace, name)]
                }
            }
            // A class appearing lets the snapshots waiting for it go ahead.
            AnyObject::VolumeSnapshotClass(class) => {
                let name = class.metadata.name.clone();
                unready_of(None, &|s| {
                    s.spec.volume_snapshot_class_name.is_none()
                        || s.spec.volume_snapshot_class_name == name
                })
            }
            // A claim's volume appearing lets the snapshots of the claim go ahead.
            AnyObject::PersistentVolume(v) => {
                let Some(claim) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
                    return Vec::new();
                };
                let (namespace, name) = (
                    claim.namespace.clone().unwrap_or_default(),
                    claim.name.clone().unwrap_or_default(),
                );
                unready_of(Some(&namespace), &|s| {
                    source_claim(s) == Some(name.as_str())
                })
            }
            // A claim becoming bound lets the snapshots waiting for it go ahead; one restored
            // from a snapshot being deleted lets that snapshot go.
            AnyObject::PersistentVolumeClaim(c) => {
                let mut keys = Vec::new();
                if pvc::is_bound(c) {
                    let claim = object.key.name.clone();
                    keys = unready_of(Some(&object.key.namespace), &|s| {
                        source_claim(s) == Some(claim.as_str())
                    });
                }
                if let Some(snapshot) = crate::controllers::provisioner::restore::snapshot_source(c)
                {
                    keys.push(ObjectKey::new(object.key.namespace.as_str(), &snapshot));
                }
                keys
            }
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, Error> {
        let Some(stored) = self
            .ctx
            .store
            .get_typed::<VolumeSnapshot>(&key.namespace, &key.name)
        else {
            return Ok(Action::await_change());
        };
        let s: &VolumeSnapshot = &stored.typed();
        let status = s.status.clone().unwrap_or_default();
        if let (Some(handle), Some(driver), None) = (
            &status.legacy_snapshot_handle,
            &status.legacy_driver,
            &status.bound_volume_snapshot_content_name,
        ) {
            return self.adopt_legacy(&stored, handle, driver).await;
        }
        if s.metadata.deletion_timestamp.is_some() {
            if has_finalizer(&s.metadata, SNAPSHOT_BOUND) {
                return self.release(&stored).await;
            }
            return Ok(Action::await_change());
        }
        if let Some(content) = &s.spec.source.volume_snapshot_content_name {
            return self.pre_provisioned(&stored, content).await;
        }
        match source_claim(s) {
            Some(claim) => {
                let claim = claim.to_string();
                self.dynamic(&stored, &claim).await
            }
            None => Ok(Action::await_change()),
        }
    }
}
