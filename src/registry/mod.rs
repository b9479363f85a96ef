//! The registry: Kubernetes API semantics on top of the store, for every kind.
//!
//! Create, update, patch, delete and their `/status` variants live here once, generic over the
//! kind; per-kind rules come from [`KindStrategy`] and [`admission`]. The HTTP layer and the
//! in-process controllers both write through this module, so a controller's write obeys the same
//! rules (validation, optimistic concurrency, finalizers, status split) as a client's.
//!
//! Every write passes one pipeline ([`Registry::finish`], then [`Registry::commit`]):
//! admission, defaults, normalization, validation, generation, the writer's own restrictions
//! ([`Guard`]), the limits on what is stored (size and depth, [`MAX_OBJECT_BYTES`]), and the
//! namespace's quotas, charged in the same transaction as the write itself.
//!
//! What it guarantees:
//! - `uid`, `creationTimestamp`, `generation` (bumped when the spec changes) and
//!   `resourceVersion` are set by the server, never by the client;
//! - an update or patch carrying a stale resourceVersion fails with 409 Conflict; one without a
//!   resourceVersion is retried internally against the newest version;
//! - a write that changes nothing is not written (no new resourceVersion, no watch event);
//! - a delete of an object with finalizers only marks it (`deletionTimestamp`); the object goes
//!   once the last finalizer is removed, and no finalizer may be added meanwhile;
//! - no stored object is over [`MAX_OBJECT_BYTES`] or deeper than
//!   [`document::MAX_DEPTH`](crate::machinery::document::MAX_DEPTH), whatever patch made it;
//! - no namespace goes over its ResourceQuotas, even under concurrent writes.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta, Time};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::machinery::document::{self, TextMeter};
use crate::machinery::offload;
use crate::machinery::patch::{self, FieldSet, PatchError};
use crate::machinery::validation::FieldErrors;
use crate::resources::{AnyObject, Kind, KindStrategy, Subresource, Typed, validate};
use crate::store::{
    Change, CompactString, Encoded, ObjectKey, Rv, Store, Stored, WriteError, WriteOp,
};

pub mod admission;
pub mod quota;

/// How many times a write without a client resourceVersion is retried after losing a race.
const MAX_CONFLICT_RETRIES: usize = 32;
/// Letters Kubernetes uses for generated name suffixes (no vowels, no look-alikes).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// The largest object the store keeps, as JSON: etcd's default request limit, which is what
/// bounds a Kubernetes object.
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;
/// Most bytes the `copy` operations of one JSON patch may copy (Kubernetes' limit is its
/// request body limit, as here).
pub const MAX_PATCH_COPY_BYTES: usize = 3 * 1024 * 1024;
/// Patches touching more than this (patch plus object, in bytes) are applied on the bounded
/// pool for CPU-heavy work rather than on the threads that serve requests.
const OFFLOAD_PATCH_BYTES: usize = 64 * 1024;

/// A writer's own restrictions, checked on the object a write would store (after every patch
/// and default), with the current object on updates. Built by `auth` from the caller's
/// identity: a node may not change its own taints, a tenant may not file events about other
/// namespaces. `None` in [`WriteOptions`]: the server's own controllers.
#[derive(Clone)]
pub struct Guard(pub Arc<GuardFn>);

/// `(current object, object to store) -> allowed?`
pub type GuardFn = dyn Fn(Option<&AnyObject>, &AnyObject) -> ApiResult<()> + Send + Sync;

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Guard")
    }
}

#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// Validate and compute the result, but store nothing (`dryRun=All`).
    pub dry_run: bool,
    /// `fieldManager`, recorded for server-side apply.
    pub field_manager: Option<String>,
    /// The writer's restrictions on what it may store.
    pub guard: Option<Guard>,
}

/// Preconditions of a delete (`DeleteOptions.preconditions`).
#[derive(Clone, Debug, Default)]
pub struct DeletePreconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// A patch document and its type.
#[derive(Clone, Debug)]
pub enum Patch {
    Json(Value),
    Merge(Value),
    Strategic(Value),
    /// Server-side apply: the applied configuration, the manager, and whether to force.
    Apply {
        config: Value,
        force: bool,
    },
}

/// What a delete did.
pub enum Deleted {
    /// The object is gone; this is its last state.
    Gone(Arc<Stored>),
    /// The object has finalizers; it is marked for deletion and still exists.
    Pending(Arc<Stored>),
}

impl Deleted {
    pub fn object(&self) -> &Arc<Stored> {
        match self {
            Deleted::Gone(s) | Deleted::Pending(s) => s,
        }
    }
}

/// The result of an update or patch.
pub struct Written {
    pub stored: Arc<Stored>,
    /// True when the write created the object (PUT on a missing Lease, apply of a new object).
    pub created: bool,
}

impl Written {
    fn updated(stored: Arc<Stored>) -> Self {
        Written {
            stored,
            created: false,
        }
    }
}

#[derive(Clone)]
pub struct Registry {
    store: Store,
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

fn info<T: KindStrategy>() -> &'static crate::resources::KindInfo {
    &T::INFO
}

fn key_for<T: KindStrategy>(namespace: &str, name: &str) -> ObjectKey {
    if info::<T>().namespaced {
        ObjectKey::new(namespace, name)
    } else {
        ObjectKey::cluster(name)
    }
}

fn not_found<T: KindStrategy>(name: &str) -> ApiError {
    ApiError::not_found(info::<T>().plural, info::<T>().group, name)
}

/// After [`MAX_CONFLICT_RETRIES`] lost races: the client may try again.
fn too_many_writers<T: KindStrategy>(name: &str) -> ApiError {
    let i = info::<T>();
    ApiError::conflict(
        i.plural,
        i.group,
        name,
        "too many concurrent writers; try again",
    )
}

fn parse_rv(rv: &str) -> ApiResult<Rv> {
    rv.parse::<Rv>()
        .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))
}

/// An object as it would be stored, without storing it (for checks before a create).
pub fn unsaved(object: AnyObject) -> Arc<Stored> {
    transient(object, None)
}

/// A transient version of an object that was not stored (dry run): no resourceVersion.
fn transient(object: AnyObject, rv: Option<Rv>) -> Arc<Stored> {
    let mut object = object;
    object.meta_mut().resource_version = rv.map(|r| r.to_string());
    let json = bytes::Bytes::from(object.to_json());
    Arc::new(Stored::from_parts(
        object.kind(),
        ObjectKey::of(&object),
        rv.unwrap_or(0),
        json,
    ))
}

fn generated_name(prefix: &str) -> String {
    // Kubernetes caps the prefix so the name stays a valid label-length name.
    let prefix: String = prefix.chars().take(63 - 5).collect();
    let random = uuid::Uuid::new_v4();
    let suffix: String = random.as_bytes()[..5]
        .iter()
        .map(|b| NAME_ALPHABET[*b as usize % NAME_ALPHABET.len()] as char)
        .collect();
    format!("{prefix}{suffix}")
}

/// The size and depth limits on what is stored, checked on the object as it would be stored.
fn check_stored_limits(encoded: &Encoded) -> ApiResult<()> {
    let mut meter = TextMeter::default();
    meter.feed(encoded.json());
    // Measured as it will be stored, with the longest resourceVersion in the placeholder's place.
    meter.bytes -= Encoded::placeholder_excess();
    let obj = encoded.object();
    let name = obj.meta().name.as_deref().unwrap_or_default();
    let i = obj.kind().info();
    if meter.bytes > MAX_OBJECT_BYTES {
        return Err(ApiError::entity_too_large(format!(
            "{} \"{name}\" would be {} bytes once stored; the limit is {MAX_OBJECT_BYTES}",
            crate::error::qualified_resource(i.plural, i.group),
            meter.bytes
        )));
    }
    if meter.max_depth > document::MAX_DEPTH {
        let mut errs = FieldErrors::new();
        errs.forbidden(
            &crate::machinery::validation::Path::root("metadata"),
            format!(
                "the object nests deeper than {} levels",
                document::MAX_DEPTH
            ),
        );
        return Err(ApiError::invalid(i.kind, i.group, name, &errs.0));
    }
    Ok(())
}

/// One object of a commit: the store operation and the version it replaces (for quotas and
/// dry runs).
struct Staged {
    op: WriteOp,
    old: Option<Arc<Stored>>,
    /// Whether quotas may refuse it (everything but status writes; see `quota::charge`).
    enforced: bool,
}

/// Why a commit did not happen.
enum CommitError {
    /// An object's precondition failed: it changed since it was read (op index).
    Stale(usize),
    Refused(ApiError),
}

/// Maps a store error on operation `op` to the API error the client sees.
fn write_error(e: WriteError, names: &[(Kind, CompactString)]) -> CommitError {
    let named = |op: usize| {
        let (kind, name) = &names[op.min(names.len().saturating_sub(1))];
        (kind.info(), name.as_str())
    };
    CommitError::Refused(match e {
        WriteError::Conflict { op, .. } => return CommitError::Stale(op),
        WriteError::AlreadyExists { op } => {
            let (i, name) = named(op);
            ApiError::already_exists(i.plural, i.group, name)
        }
        WriteError::NotFound { op } => {
            let (i, name) = named(op);
            ApiError::not_found(i.plural, i.group, name)
        }
        WriteError::Unavailable(m) => ApiError::unavailable(m),
    })
}

impl Staged {
    /// What a dry run answers: the object as it would be stored, or the one it would delete.
    fn dry_run(self) -> Arc<Stored> {
        match (self.op.change, self.old) {
            (Change::Put(obj), old) => transient(obj.into_object(), old.as_ref().map(|o| o.rv)),
            (Change::Delete | Change::Check, Some(old)) => old,
            (Change::Delete | Change::Check, None) => {
                unreachable!("deletes and checks are staged with the object they name")
            }
        }
    }
}

impl CommitError {
    fn into_api(self, staged_names: &[(Kind, CompactString)]) -> ApiError {
        match self {
            CommitError::Refused(e) => e,
            CommitError::Stale(op) => {
                let (kind, name) = &staged_names[op.min(staged_names.len().saturating_sub(1))];
                let i = kind.info();
                ApiError::stale(i.plural, i.group, name)
            }
        }
    }
}

impl Registry {
    pub fn new(store: Store) -> Self {
        Registry { store }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn get<T: KindStrategy>(&self, namespace: &str, name: &str) -> ApiResult<Arc<Stored>> {
        self.store
            .get(<T as Typed>::KIND, &key_for::<T>(namespace, name))
            .ok_or_else(|| not_found::<T>(name))
    }

    fn validate<T: KindStrategy>(obj: &T, old: Option<&T>) -> ApiResult<()> {
        let mut errs = FieldErrors::new();
        validate::object_meta(info::<T>(), obj.metadata(), &mut errs);
        obj.validate(&mut errs);
        if let Some(old) = old {
            obj.validate_update(old, &mut errs);
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(
                info::<T>().kind,
                info::<T>().group,
                obj.metadata().name.as_deref().unwrap_or_default(),
                &errs.0,
            ))
        }
    }

    /// The rules every create and update passes, for clients and controllers alike, in order:
    /// admission, defaults, normalization, validation, generation, the writer's guard, and the
    /// limits on what is stored. `old` is the current version on updates.
    fn finish<T: KindStrategy>(
        &self,
        new: T,
        old: Option<&Arc<Stored>>,
        opts: &WriteOptions,
    ) -> ApiResult<Encoded> {
        let mut any = new.into_any();
        // The current version, decoded once for every rule below.
        let old_object = old.map(|o| o.object());
        admission::admit(&self.store, &mut any, old_object.as_ref())?;
        let mut new = T::from_any_owned(any).expect("admission keeps the kind");
        new.default();
        normalize_meta(new.metadata_mut());
        let old_typed = old_object.as_ref().and_then(T::from_any);
        if let Some(old) = old_typed {
            new.prepare_for_update(old);
        }
        Self::validate(&new, old_typed)?;
        if let Some(old) = old_typed
            && new.spec_changed(old)
        {
            new.metadata_mut().generation = Some(old.metadata().generation.unwrap_or(1) + 1);
        }
        let any = new.into_any();
        if let Some(guard) = &opts.guard {
            (guard.0)(old_object.as_ref(), &any)?;
        }
        // Serialized here, once: the limits are measured on these bytes, and the store keeps
        // them (with the resourceVersion put in).
        let encoded = Encoded::new(any);
        check_stored_limits(&encoded)?;
        Ok(encoded)
    }

    /// Commits staged changes in one transaction, together with the quota charges they need;
    /// or, for a dry run, checks the quotas and returns what would be stored. A quota that
    /// changed meanwhile is re-read and charged again; an object that changed is `Stale`.
    async fn commit(
        &self,
        mut staged: Vec<Staged>,
        dry_run: bool,
    ) -> Result<Vec<Arc<Stored>>, CommitError> {
        let names: Vec<(Kind, CompactString)> = staged
            .iter()
            .map(|s| (s.op.kind, s.op.key.name.clone()))
            .collect();
        for _ in 0..MAX_CONFLICT_RETRIES {
            let charges = quota::charge(&self.store, &staged).map_err(CommitError::Refused)?;
            if dry_run {
                return Ok(staged.into_iter().map(Staged::dry_run).collect());
            }
            let own = staged.len();
            // Without quotas to charge there is nothing to retry: hand the objects over as
            // they are rather than copying them.
            let mut ops: Vec<WriteOp> = if charges.is_empty() {
                staged.drain(..).map(|s| s.op).collect()
            } else {
                staged.iter().map(|s| s.op.clone()).collect()
            };
            ops.extend(charges);
            match self.store.write(ops).await {
                Ok(mut stored) => {
                    stored.truncate(own);
                    return Ok(stored);
                }
                // A quota moved on (or went) under us: charge the new usage.
                Err(WriteError::Conflict { op, .. } | WriteError::NotFound { op })
                    if op >= own && !staged.is_empty() =>
                {
                    continue;
                }
                Err(e) => return Err(write_error(e, &names)),
            }
        }
        Err(CommitError::Refused(ApiError::unavailable(
            "the namespace's quotas are changing too fast; try again",
        )))
    }

    /// Creates `obj` in `namespace` (ignored for cluster-scoped kinds).
    pub async fn create<T: KindStrategy>(
        &self,
        namespace: &str,
        obj: T,
        opts: &WriteOptions,
    ) -> ApiResult<Arc<Stored>> {
        self.create_inner(namespace, obj, opts, false).await
    }

    async fn create_inner<T: KindStrategy>(
        &self,
        namespace: &str,
        mut obj: T,
        opts: &WriteOptions,
        is_apply: bool,
    ) -> ApiResult<Arc<Stored>> {
        let i = info::<T>();
        let meta = obj.metadata_mut();
        if i.namespaced {
            match meta.namespace.as_deref() {
                Some(ns) if !ns.is_empty() && ns != namespace => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => meta.namespace = Some(namespace.to_string()),
            }
        } else {
            meta.namespace = None;
        }
        if meta
            .resource_version
            .as_deref()
            .is_some_and(|rv| !rv.is_empty())
        {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let generate = meta.name.as_deref().unwrap_or_default().is_empty()
            && meta.generate_name.as_deref().is_some_and(|g| !g.is_empty());
        meta.uid = Some(uuid::Uuid::new_v4().to_string());
        meta.creation_timestamp = Some(now());
        meta.generation = Some(1);
        meta.deletion_timestamp = None;
        meta.deletion_grace_period_seconds = None;
        meta.self_link = None;
        if !is_apply {
            // Only server-side apply records managed fields; it builds them itself.
            meta.managed_fields = None;
        }
        obj.prepare_for_create();

        // A generated name that collides is drawn again, as Kubernetes' clients would retry.
        for _ in 0..8 {
            if generate {
                let prefix = obj.metadata().generate_name.clone().unwrap_or_default();
                obj.metadata_mut().name = Some(generated_name(&prefix));
            }
            let checked = self.finish(obj.clone(), None, opts)?;
            let name = checked.object().meta().name.clone().unwrap_or_default();
            if opts.dry_run
                && self
                    .store
                    .get(<T as Typed>::KIND, &key_for::<T>(namespace, &name))
                    .is_some()
            {
                return Err(ApiError::already_exists(i.plural, i.group, &name));
            }
            let staged = vec![Staged {
                op: WriteOp::create(checked),
                old: None,
                enforced: true,
            }];
            match self.commit(staged, opts.dry_run).await {
                Ok(mut stored) => return Ok(stored.remove(0)),
                Err(CommitError::Refused(e)) if generate && e.is_already_exists() => continue,
                Err(e) => return Err(e.into_api(&[(<T as Typed>::KIND, name.into())])),
            }
        }
        Err(ApiError::already_exists(
            i.plural,
            i.group,
            obj.metadata().generate_name.as_deref().unwrap_or_default(),
        ))
    }

    /// Replaces an object (PUT), or its status.
    pub async fn update<T: KindStrategy>(
        &self,
        namespace: &str,
        name: &str,
        obj: T,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        let i = info::<T>();
        if let Some(body_name) = obj.metadata().name.as_deref()
            && !body_name.is_empty()
            && body_name != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if i.namespaced
            && let Some(ns) = obj.metadata().namespace.as_deref()
            && !ns.is_empty()
            && ns != namespace
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let client_rv = match obj.metadata().resource_version.as_deref() {
            Some(rv) if !rv.is_empty() => Some(parse_rv(rv)?),
            _ => None,
        };
        for _ in 0..MAX_CONFLICT_RETRIES {
            let Some(current) = self
                .store
                .get(<T as Typed>::KIND, &key_for::<T>(namespace, name))
            else {
                if i.allow_create_on_update && sub == Subresource::Main && client_rv.is_none() {
                    let mut fresh = obj.clone();
                    fresh.metadata_mut().name = Some(name.to_string());
                    return match self.create(namespace, fresh, opts).await {
                        Ok(stored) => Ok(Written {
                            stored,
                            created: true,
                        }),
                        // Lost a race with another creator: update what they made.
                        Err(e) if e.is_already_exists() => continue,
                        Err(e) => Err(e),
                    };
                }
                return Err(not_found::<T>(name));
            };
            if let Some(rv) = client_rv
                && rv != current.rv
            {
                return Err(ApiError::stale(i.plural, i.group, name));
            }
            match self
                .replace_at(&current, obj.clone(), sub, opts, client_rv.is_some(), false)
                .await
            {
                Err(Retry::Conflict) => continue,
                Err(Retry::Fail(e)) => return Err(e),
                Ok(stored) => return Ok(Written::updated(stored)),
            }
        }
        Err(too_many_writers::<T>(name))
    }

    /// Applies the update rules to `new` against `current` and writes it at `current.rv`.
    async fn replace_at<T: KindStrategy>(
        &self,
        current: &Arc<Stored>,
        new: T,
        sub: Subresource,
        opts: &WriteOptions,
        client_rv: bool,
        is_apply: bool,
    ) -> Result<Arc<Stored>, Retry> {
        let name = current.key.name.clone();
        let staged = self
            .stage_update(current, new, sub, opts, is_apply, current.rv)
            .map_err(Retry::Fail)?;
        // Nothing changed: no write, no new resourceVersion, no event.
        let Some(staged) = staged else {
            return Ok(current.clone());
        };
        match self.commit(vec![staged], opts.dry_run).await {
            Ok(mut stored) => Ok(stored.remove(0)),
            Err(CommitError::Stale(_)) if !client_rv => Err(Retry::Conflict),
            Err(e) => Err(Retry::Fail(e.into_api(&[(<T as Typed>::KIND, name)]))),
        }
    }

    /// The update rules, for a write of `new` (the parts `sub` names) over `current`, to be
    /// committed at resourceVersion `at`: uid, status split, server-owned metadata, the
    /// pipeline of [`Registry::finish`], no new finalizers while deleting, and the last
    /// finalizer's removal ending the object. `None`: it changes nothing.
    fn stage_update<T: KindStrategy>(
        &self,
        current: &Arc<Stored>,
        mut new: T,
        sub: Subresource,
        opts: &WriteOptions,
        is_apply: bool,
        at: Rv,
    ) -> ApiResult<Option<Staged>> {
        let i = info::<T>();
        let old: &T = &current.typed();
        let name = old.metadata().name.clone().unwrap_or_default();
        if let Some(uid) = new.metadata().uid.as_deref()
            && !uid.is_empty()
            && Some(uid) != old.metadata().uid.as_deref()
        {
            return Err(ApiError::conflict(
                i.plural,
                i.group,
                &name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    old.metadata().uid.as_deref().unwrap_or_default()
                ),
            ));
        }
        match sub {
            Subresource::Main => {
                if i.has_status {
                    new.keep_status(old);
                }
                keep_server_meta(new.metadata_mut(), old.metadata(), is_apply);
            }
            Subresource::Status => {
                new.keep_all_but_status(old);
                *new.metadata_mut() = old.metadata().clone();
            }
            Subresource::All => keep_server_meta(new.metadata_mut(), old.metadata(), false),
        }
        let mut new = self.finish(new, Some(current), opts)?;
        if old.metadata().deletion_timestamp.is_some() {
            let before: HashSet<&String> = old.metadata().finalizers.iter().flatten().collect();
            if let Some(added) = new
                .object()
                .meta()
                .finalizers
                .iter()
                .flatten()
                .find(|f| !before.contains(f))
            {
                let mut errs = FieldErrors::new();
                errs.forbidden(
                    &crate::machinery::validation::Path::root("metadata").child("finalizers"),
                    format!("no new finalizers can be added if the object is being deleted, found new finalizers [{added}]"),
                );
                return Err(ApiError::invalid(i.kind, i.group, &name, &errs.0));
            }
        }
        new.set_resource_version(old.metadata().resource_version.clone());
        if T::from_any(new.object()) == Some(old) && at == current.rv {
            return Ok(None);
        }
        let meta = new.object().meta();
        let finished_deleting =
            meta.deletion_timestamp.is_some() && meta.finalizers.as_ref().is_none_or(Vec::is_empty);
        let op = if finished_deleting {
            WriteOp::delete(<T as Typed>::KIND, current.key.clone(), at)
        } else {
            WriteOp::update(new, at)
        };
        Ok(Some(Staged {
            op,
            old: Some(current.clone()),
            // Claim status is written by controllers and nodes only (tenants cannot), to
            // report what happened; every other write, pod status included, is enforced.
            enforced: !(sub == Subresource::Status
                && <T as Typed>::KIND == Kind::PersistentVolumeClaim),
        }))
    }

    /// Patches an object or its status. Apply patches create the object if it is missing.
    pub async fn patch<T: KindStrategy>(
        &self,
        namespace: &str,
        name: &str,
        patch: Patch,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        let i = info::<T>();
        let patch = Arc::new(patch);
        for _ in 0..MAX_CONFLICT_RETRIES {
            let Some(current) = self
                .store
                .get(<T as Typed>::KIND, &key_for::<T>(namespace, name))
            else {
                if let Patch::Apply { config, .. } = patch.as_ref()
                    && sub == Subresource::Main
                {
                    let obj = applied_object::<T>(config, name, None, opts)?;
                    return match self.create_inner(namespace, obj, opts, true).await {
                        Ok(stored) => Ok(Written {
                            stored,
                            created: true,
                        }),
                        Err(e) if e.is_already_exists() => continue,
                        Err(e) => Err(e),
                    };
                }
                return Err(not_found::<T>(name));
            };
            let new: T = if patch_size(&patch) + current.json.len() > OFFLOAD_PATCH_BYTES {
                let (current, patch, name, opts) = (
                    current.clone(),
                    patch.clone(),
                    name.to_string(),
                    opts.clone(),
                );
                offload::run(move || patched::<T>(&current, &patch, &name, &opts)).await?
            } else {
                patched::<T>(&current, &patch, name, opts)?
            };
            // A resourceVersion inside the patch is a precondition: no silent retry past it.
            let carried = patch_carried_rv(&patch).filter(|rv| !rv.is_empty());
            if let Some(rv) = &carried
                && parse_rv(rv)? != current.rv
            {
                return Err(ApiError::stale(i.plural, i.group, name));
            }
            let is_apply = matches!(patch.as_ref(), Patch::Apply { .. });
            match self
                .replace_at(&current, new, sub, opts, carried.is_some(), is_apply)
                .await
            {
                Err(Retry::Conflict) => continue,
                Err(Retry::Fail(e)) => return Err(e),
                Ok(stored) => return Ok(Written::updated(stored)),
            }
        }
        Err(too_many_writers::<T>(name))
    }

    /// Deletes an object: at once, or by marking it if it has finalizers.
    pub async fn delete<T: KindStrategy>(
        &self,
        namespace: &str,
        name: &str,
        pre: &DeletePreconditions,
        opts: &WriteOptions,
    ) -> ApiResult<Deleted> {
        let i = info::<T>();
        let names = [(<T as Typed>::KIND, CompactString::from(name))];
        for _ in 0..MAX_CONFLICT_RETRIES {
            let current = self.get::<T>(namespace, name)?;
            let obj: &T = &current.typed();
            if let Some(uid) = pre.uid.as_deref()
                && Some(uid) != obj.metadata().uid.as_deref()
            {
                return Err(ApiError::conflict(
                    i.plural,
                    i.group,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        obj.metadata().uid.as_deref().unwrap_or_default()
                    ),
                ));
            }
            if let Some(rv) = pre.resource_version.as_deref()
                && parse_rv(rv)? != current.rv
            {
                return Err(ApiError::conflict(
                    i.plural,
                    i.group,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        current.rv
                    ),
                ));
            }
            let has_finalizers = obj
                .metadata()
                .finalizers
                .as_ref()
                .is_some_and(|f| !f.is_empty());
            let pending = has_finalizers && obj.metadata().deletion_timestamp.is_none();
            if has_finalizers && !pending {
                return Ok(Deleted::Pending(current.clone()));
            }
            let op = if pending {
                let mut marked = obj.clone();
                marked.metadata_mut().deletion_timestamp = Some(now());
                marked.metadata_mut().deletion_grace_period_seconds = Some(0);
                WriteOp::update(marked.into_any(), current.rv)
            } else {
                WriteOp::delete(<T as Typed>::KIND, current.key.clone(), current.rv)
            };
            let staged = vec![Staged {
                op,
                old: Some(current.clone()),
                enforced: true,
            }];
            match self.commit(staged, opts.dry_run).await {
                Ok(mut s) if pending => return Ok(Deleted::Pending(s.remove(0))),
                Ok(mut s) => return Ok(Deleted::Gone(s.remove(0))),
                Err(CommitError::Stale(_)) if pre.resource_version.is_none() => continue,
                Err(e) => return Err(e.into_api(&names)),
            }
        }
        Err(too_many_writers::<T>(name))
    }

    /// Writes objects for the server's own controllers: each created, or updated at the
    /// resourceVersion it was read at, in the parts its [`Write`] names, through the same
    /// rules as every client write ([`Registry::finish`], server-owned metadata, no new
    /// finalizers while deleting, nothing written for an unchanged object), all in one
    /// transaction. An object that moved since it was read fails the whole write with 409.
    pub async fn write(&self, writes: Vec<Write>) -> ApiResult<Vec<Arc<Stored>>> {
        let opts = WriteOptions::default();
        let mut staged = Vec::with_capacity(writes.len());
        let mut names = Vec::with_capacity(writes.len());
        for w in writes {
            let key = ObjectKey::of(&w.object);
            let kind = w.object.kind();
            let i = kind.info();
            names.push((kind, key.name.clone()));
            let current = match w.at {
                Some(_) => Some(
                    self.store
                        .get(kind, &key)
                        .ok_or_else(|| ApiError::not_found(i.plural, i.group, &key.name))?,
                ),
                None => None,
            };
            let one = crate::with_kind!(kind, T => {
                let new = T::from_any_owned(w.object).expect("kind matches");
                match (&current, w.at) {
                    (Some(current), Some(at)) => {
                        let staged = self.stage_update(current, new, w.sub, &opts, false, at)?;
                        // Unchanged: the version read must still be the current one.
                        staged.unwrap_or_else(|| Staged {
                            op: WriteOp::check(kind, key.clone(), at),
                            old: Some(current.clone()),
                            enforced: true,
                        })
                    }
                    _ => self.stage_create(new, w.sub, &opts)?,
                }
            });
            staged.push(one);
        }
        self.commit(staged, false)
            .await
            .map_err(|e| e.into_api(&names))
    }

    /// The create rules for a controller's new object: server-owned metadata, and the
    /// pipeline of [`Registry::finish`]. With [`Subresource::All`] the status is written too
    /// (a provisioned volume is created already Bound).
    fn stage_create<T: KindStrategy>(
        &self,
        mut new: T,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> ApiResult<Staged> {
        let meta = new.metadata_mut();
        meta.uid = Some(uuid::Uuid::new_v4().to_string());
        meta.creation_timestamp = Some(now());
        meta.generation = Some(1);
        meta.resource_version = None;
        meta.deletion_timestamp = None;
        meta.deletion_grace_period_seconds = None;
        if sub != Subresource::All {
            new.prepare_for_create();
        }
        let checked = self.finish(new, None, opts)?;
        Ok(Staged {
            op: WriteOp::create(checked),
            old: None,
            enforced: true,
        })
    }
}

/// One object of a [`Registry::write`].
pub struct Write {
    object: AnyObject,
    /// The resourceVersion it was read at; `None` to create it.
    at: Option<Rv>,
    sub: Subresource,
}

impl Write {
    /// A new object, spec and status as given.
    pub fn create(object: impl Typed) -> Self {
        Write {
            object: object.into_any(),
            at: None,
            sub: Subresource::All,
        }
    }

    /// An object read at `at`, with the parts `sub` names changed.
    pub fn update(object: impl Typed, at: Rv, sub: Subresource) -> Self {
        Write {
            object: object.into_any(),
            at: Some(at),
            sub,
        }
    }

    /// Like [`Write::update`], for an object already erased to [`AnyObject`].
    pub fn update_any(object: AnyObject, at: Rv, sub: Subresource) -> Self {
        Write {
            object,
            at: Some(at),
            sub,
        }
    }
}

enum Retry {
    /// Lost a race; read the newest version and try again.
    Conflict,
    Fail(ApiError),
}

/// Roughly how many bytes a patch document holds (for choosing where to apply it).
fn patch_size(patch: &Patch) -> usize {
    let v = match patch {
        Patch::Json(v) | Patch::Merge(v) | Patch::Strategic(v) => v,
        Patch::Apply { config, .. } => config,
    };
    document::measure(v).bytes
}

/// The object a patch makes of `current`: CPU-bound, and bounded by the patch limits.
fn patched<T: KindStrategy>(
    current: &Stored,
    patch: &Patch,
    name: &str,
    opts: &WriteOptions,
) -> ApiResult<T> {
    if let Patch::Apply { config, .. } = patch {
        return applied_object::<T>(config, name, Some(current), opts);
    }
    let mut doc: Value = serde_json::from_slice(&current.json).map_err(ApiError::internal)?;
    let patched = match patch {
        Patch::Json(p) => patch::apply_json_patch(&mut doc, p, MAX_PATCH_COPY_BYTES),
        Patch::Merge(p) => patch::apply_merge_patch(&mut doc, p),
        Patch::Strategic(p) => patch::apply_strategic_merge_patch(&mut doc, p),
        Patch::Apply { .. } => Ok(()),
    };
    patched.map_err(patch_error)?;
    decode_patched::<T>(doc)
}

fn patch_error(e: PatchError) -> ApiError {
    match e {
        PatchError::Malformed(m) => ApiError::bad_request(m),
        PatchError::TooLarge(m) => ApiError::entity_too_large(m),
        PatchError::Failed(m) => {
            let mut err = ApiError::bad_request(format!("the patch could not be applied: {m}"));
            err.code = 422;
            err.reason = "Invalid";
            err
        }
    }
}

/// Builds the object a server-side apply produces: the live object (if any) merged with the
/// applied configuration, minus the fields this manager applied before and no longer does.
fn applied_object<T: KindStrategy>(
    config: &Value,
    name: &str,
    current: Option<&Stored>,
    opts: &WriteOptions,
) -> ApiResult<T> {
    let i = info::<T>();
    let manager = opts
        .field_manager
        .clone()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request("PATCH with apply-patch requires the fieldManager parameter")
        })?;
    check_type_meta::<T>(config)?;
    match config.pointer("/metadata/name").and_then(Value::as_str) {
        Some(n) if n == name => {}
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        None => {
            return Err(ApiError::bad_request(
                "the applied configuration must set metadata.name",
            ));
        }
    }
    let applied_set = FieldSet::from_applied(config);
    let mut doc = match current {
        Some(c) => serde_json::from_slice(&c.json).map_err(ApiError::internal)?,
        None => Value::Object(Default::default()),
    };
    let mut entries: Vec<ManagedFieldsEntry> = current
        .and_then(|c| c.object().meta().managed_fields.clone())
        .unwrap_or_default();
    let previous = entries
        .iter()
        .find(|e| e.manager.as_deref() == Some(&manager) && e.operation.as_deref() == Some("Apply"))
        .and_then(|e| e.fields_v1.as_ref())
        .map(|f| FieldSet::from_fields_v1(&f.0));
    patch::apply_configuration_merge(&mut doc, config).map_err(patch_error)?;
    if let Some(previous) = previous {
        // What any other manager owns, as one set: one lookup per removed path.
        let mut others = FieldSet::default();
        for e in entries
            .iter()
            .filter(|e| e.manager.as_deref() != Some(&manager))
        {
            if let Some(f) = &e.fields_v1 {
                others.union(FieldSet::from_fields_v1(&f.0));
            }
        }
        let unowned: Vec<Vec<String>> = previous
            .removed_in(&applied_set)
            .into_iter()
            .filter(|path| !others.covers(path))
            .collect();
        patch::remove_fields(&mut doc, &unowned);
    }
    // As Kubernetes' IgnoreManagedFieldsTimestampsTransformer: an apply that changes neither
    // the object nor what the manager owns keeps the entry's time, so that it stays a no-op
    // (same resourceVersion) even across a second boundary.
    let fields_v1 = applied_set.to_fields_v1();
    let kept_time = entries
        .iter()
        .find(|e| e.manager.as_deref() == Some(&manager) && e.operation.as_deref() == Some("Apply"))
        .filter(|e| e.fields_v1.as_ref().map(|f| &f.0) == Some(&fields_v1))
        .and_then(|e| e.time.clone())
        .filter(|_| {
            current.is_some_and(|c| {
                serde_json::from_slice::<Value>(&c.json)
                    .is_ok_and(|old| without_managed_fields(&old) == without_managed_fields(&doc))
            })
        });
    entries.retain(|e| {
        !(e.manager.as_deref() == Some(&manager) && e.operation.as_deref() == Some("Apply"))
    });
    entries.push(ManagedFieldsEntry {
        manager: Some(manager),
        operation: Some("Apply".into()),
        api_version: Some(i.api_version.into()),
        time: kept_time.or_else(|| Some(now())),
        fields_type: Some("FieldsV1".into()),
        fields_v1: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1(
            fields_v1,
        )),
        subresource: None,
    });
    if let Some(m) = doc.as_object_mut() {
        m.insert("apiVersion".into(), Value::from(i.api_version));
        m.insert("kind".into(), Value::from(i.kind));
        let meta = m
            .entry("metadata")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert(
                "managedFields".into(),
                serde_json::to_value(&entries).map_err(ApiError::internal)?,
            );
        }
    }
    decode_patched::<T>(doc)
}

/// The resourceVersion literally present in a patch document, if any.
fn patch_carried_rv(patch: &Patch) -> Option<String> {
    let v = match patch {
        Patch::Merge(v) | Patch::Strategic(v) => v.pointer("/metadata/resourceVersion"),
        Patch::Json(ops) => ops.as_array().and_then(|ops| {
            ops.iter()
                .find(|op| {
                    op.get("path").and_then(Value::as_str) == Some("/metadata/resourceVersion")
                })
                .and_then(|op| op.get("value"))
        }),
        Patch::Apply { config, .. } => config.pointer("/metadata/resourceVersion"),
    }?;
    v.as_str().map(str::to_string)
}

/// Empty lists and maps in metadata are absent, as Kubernetes serializes them.
fn normalize_meta(meta: &mut ObjectMeta) {
    if meta.finalizers.as_ref().is_some_and(Vec::is_empty) {
        meta.finalizers = None;
    }
    if meta.labels.as_ref().is_some_and(|l| l.is_empty()) {
        meta.labels = None;
    }
    if meta.annotations.as_ref().is_some_and(|a| a.is_empty()) {
        meta.annotations = None;
    }
    if meta.owner_references.as_ref().is_some_and(Vec::is_empty) {
        meta.owner_references = None;
    }
}

/// A document without `metadata.managedFields`, `apiVersion` and `kind`, to compare contents.
fn without_managed_fields(doc: &Value) -> Value {
    let mut d = doc.clone();
    if let Some(m) = d.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
    }
    d
}

/// Server-owned metadata survives every update from a client.
fn keep_server_meta(new: &mut ObjectMeta, old: &ObjectMeta, is_apply: bool) {
    new.name = old.name.clone();
    new.namespace = old.namespace.clone();
    new.uid = old.uid.clone();
    new.creation_timestamp = old.creation_timestamp.clone();
    new.generation = old.generation;
    new.deletion_timestamp = old.deletion_timestamp.clone();
    new.deletion_grace_period_seconds = old.deletion_grace_period_seconds;
    new.generate_name = old.generate_name.clone();
    new.self_link = None;
    if !is_apply {
        // Only server-side apply edits managedFields; it builds them itself.
        new.managed_fields = old.managed_fields.clone();
    }
}

/// `apiVersion` and `kind` of a body must name the kind at the URL.
pub fn check_type_meta<T: KindStrategy>(body: &Value) -> ApiResult<()> {
    let i = info::<T>();
    if let Some(v) = body.get("apiVersion") {
        let v = v.as_str().unwrap_or_default();
        if v != i.api_version {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({})",
                i.api_version
            )));
        }
    }
    if let Some(k) = body.get("kind") {
        let k = k.as_str().unwrap_or_default();
        if k != i.kind {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                i.kind
            )));
        }
    }
    Ok(())
}

/// Decodes a request body's document into `T`, as [`decode_patched`] does; `again` parses the
/// body anew. Saying where a type error is means tracking the path, which copies every key
/// the decoder passes; most bodies decode, so a body is decoded without that first, and only
/// one that fails is parsed and decoded again, to say where.
pub fn decode_body_document<T: KindStrategy>(
    doc: Value,
    again: impl FnOnce() -> ApiResult<Value>,
) -> ApiResult<T> {
    check_type_meta::<T>(&doc)?;
    match serde_json::from_value(with_type_meta::<T>(doc)) {
        Ok(object) => Ok(object),
        Err(_) => decode_patched(again()?),
    }
}

/// `doc` with `T`'s apiVersion and kind (which [`check_type_meta`] found absent or equal).
fn with_type_meta<T: KindStrategy>(mut doc: Value) -> Value {
    if let Some(m) = doc.as_object_mut() {
        m.insert("apiVersion".into(), Value::from(info::<T>().api_version));
        m.insert("kind".into(), Value::from(info::<T>().kind));
    }
    doc
}

/// Decodes a JSON body or patch result into `T`; type errors are 400s that say where.
pub fn decode_patched<T: KindStrategy>(doc: Value) -> ApiResult<T> {
    check_type_meta::<T>(&doc)?;
    serde_path_to_error::deserialize(with_type_meta::<T>(doc)).map_err(|e| {
        let path = e.path().to_string();
        ApiError::bad_request(format!(
            "{} in body: {}: {}",
            info::<T>().kind,
            if path == "." {
                "(root)".to_string()
            } else {
                path
            },
            e.inner()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::PersistentVolumeClaim;
    use crate::store::StoreOptions;

    /// A claim of about 1.4 MiB (in labels), and `pad` bytes more in an annotation.
    fn padded_claim(name: &str, pad: usize) -> PersistentVolumeClaim {
        let labels: serde_json::Map<String, serde_json::Value> = (0..22_000)
            .map(|i| (format!("k{i:06}"), "v".repeat(50).into()))
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": labels, "annotations": {"pad": "x".repeat(pad)}},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                     "resources": {"requests": {"storage": "1Gi"}}},
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn the_size_limit_counts_the_object_as_stored_with_the_longest_resource_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default())
            .await
            .unwrap();
        let r = Registry::new(store);
        let opts = WriteOptions::default();
        let small = r
            .create("ns", padded_claim("pad0", 1000), &opts)
            .await
            .unwrap();
        // Its size with a 20-digit resourceVersion in place of its own.
        let at_most = small.json.len() - small.rv.to_string().len() + 20;
        let largest = 1000 + MAX_OBJECT_BYTES - at_most;
        let fits = r
            .create("ns", padded_claim("pad1", largest), &opts)
            .await
            .unwrap();
        assert_eq!(
            fits.json.len() - fits.rv.to_string().len() + 20,
            MAX_OBJECT_BYTES
        );
        let err = r
            .create("ns", padded_claim("pad2", largest + 1), &opts)
            .await
            .unwrap_err();
        assert_eq!(err.code, 413, "{err}");
    }
}
