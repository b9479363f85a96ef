//! ResourceQuota enforcement, at admission and atomically.
//!
//! Every write that changes what a namespace consumes (see
//! [`resourcequota::usage`](crate::resources::resourcequota::usage)) also updates the
//! `status.used` of the namespace's quotas, **in the same transaction** as the write, with each
//! quota's resourceVersion as a precondition. Two writers racing for the last unit therefore
//! cannot both win: the second one's quota update conflicts, and it is charged again against the
//! new usage (and refused if that is over). A write that would take any limited resource over its
//! `spec.hard` is refused with 403 and Kubernetes' message. Releases (deletes, shrinking usage)
//! are written the same way, so a freed unit is usable at once. The quota controller recomputes
//! `status.used` from the objects themselves, which corrects any drift (an admin editing status).

use std::collections::BTreeMap;

use crate::error::{ApiError, ApiResult};
use crate::resources::resourcequota::scope::Scope;
use crate::resources::resourcequota::{self, ResourceQuota, Usage};
use crate::resources::{AnyObject, Kind, Typed};
use crate::store::{Change, Store, WriteOp};

use super::Staged;

/// One object's part in a commit: what it consumed before and consumes after, for the
/// quotas whose scope matches it.
struct Move<'a> {
    before: Option<(AnyObject, Usage)>,
    after: Option<(&'a AnyObject, Usage)>,
    /// Whether going over a limit refuses it. Claim status writes are charged but never
    /// refused, as Kubernetes' quota admission leaves subresources alone: a controller
    /// reporting what happened (a volume that moved to another attributes class) must not be
    /// stopped by it. Pod status stays enforced: tenants write it, and a pod set Failed then
    /// Running again must not slip past `pods`.
    enforced: bool,
    kind: Kind,
    name: &'a str,
}

impl Move<'_> {
    /// What this change adds to (and takes from) a quota with `scope`.
    fn delta(&self, scope: &Scope) -> Usage {
        let mut d = Usage::new();
        if let Some((obj, usage)) = &self.after
            && scope.matches(obj)
        {
            for (k, v) in usage {
                *d.entry(k.clone()).or_default() += v;
            }
        }
        if let Some((obj, usage)) = &self.before
            && scope.matches(obj)
        {
            for (k, v) in usage {
                *d.entry(k.clone()).or_default() -= v;
            }
        }
        d
    }
}

/// The quota updates `staged` needs, or the 403 that refuses it.
pub(super) fn charge(store: &Store, staged: &[Staged]) -> ApiResult<Vec<WriteOp>> {
    // No quota anywhere (the common case): nothing to charge, and no namespace to list.
    if store.count(Kind::ResourceQuota) == 0 {
        return Ok(Vec::new());
    }
    let mut by_namespace: BTreeMap<&str, Vec<&Staged>> = BTreeMap::new();
    for s in staged {
        if s.op.kind.info().namespaced && !matches!(s.op.change, Change::Check) {
            by_namespace
                .entry(s.op.key.namespace.as_str())
                .or_default()
                .push(s);
        }
    }
    // A quota the write itself changes or deletes is not charged here (the store applies one
    // operation per object): its own usage is constant, and its status is recomputed.
    let staged_quotas: Vec<&crate::store::ObjectKey> = staged
        .iter()
        .filter(|s| s.op.kind == Kind::ResourceQuota)
        .map(|s| &s.op.key)
        .collect();
    let mut ops = Vec::new();
    for (ns, changes) in by_namespace {
        let (quotas, _) = store.list(Kind::ResourceQuota, Some(ns));
        let quotas: Vec<_> = quotas
            .into_iter()
            .filter(|q| !staged_quotas.contains(&&q.key))
            .collect();
        if quotas.is_empty() {
            continue;
        }
        let moves: Vec<Move> = changes
            .iter()
            .map(|s| Move {
                before: s.old.as_ref().map(|o| {
                    let obj = o.object();
                    let usage = resourcequota::usage(&obj);
                    (obj, usage)
                }),
                after: match &s.op.change {
                    Change::Put(obj) => Some((obj.object(), resourcequota::usage(obj.object()))),
                    _ => None,
                },
                enforced: s.enforced,
                kind: s.op.kind,
                name: s.op.key.name.as_str(),
            })
            .collect();
        let mut exceeded: Vec<String> = Vec::new();
        let mut refused: Option<(Kind, &str)> = None;
        for stored in quotas {
            let q: &ResourceQuota = &stored.typed();
            let scope = Scope::of(q.spec.as_ref());
            let mut delta = Usage::new();
            // What enforced changes alone ask for, and the first of them.
            let mut asked = Usage::new();
            let mut asker = None;
            for m in &moves {
                let d = m.delta(&scope);
                if m.enforced {
                    for (k, v) in &d {
                        *asked.entry(k.clone()).or_default() += v;
                        if *v > 0 {
                            asker.get_or_insert((m.kind, m.name));
                        }
                    }
                }
                for (k, v) in d {
                    *delta.entry(k).or_default() += v;
                }
            }
            let hard = resourcequota::hard(q);
            let mut used = resourcequota::used(q);
            let mut changed = false;
            let mut requested = Vec::new();
            let mut over = Vec::new();
            for (resource, limit) in &hard {
                let d = delta.get(resource).copied().unwrap_or(0);
                if d == 0 {
                    continue;
                }
                let now = used.get(resource).copied().unwrap_or(0);
                let after = (now + d).max(0);
                if d > 0 && after > *limit && asked.get(resource).is_some_and(|a| *a > 0) {
                    requested.push(format!(
                        "{resource}={}",
                        resourcequota::format_amount(resource, d)
                    ));
                    over.push((resource, now, *limit));
                }
                used.insert(resource.clone(), after);
                changed = true;
            }
            if !over.is_empty() {
                let list = |f: &dyn Fn(&(&String, i128, i128)) -> String| {
                    over.iter().map(f).collect::<Vec<_>>().join(",")
                };
                exceeded.push(format!(
                    "exceeded quota: {}, requested: {}, used: {}, limited: {}",
                    q.metadata.name.as_deref().unwrap_or_default(),
                    requested.join(","),
                    list(&|(r, u, _)| format!("{r}={}", resourcequota::format_amount(r, *u))),
                    list(&|(r, _, l)| format!("{r}={}", resourcequota::format_amount(r, *l))),
                ));
                refused = refused.or(asker);
                continue;
            }
            if changed {
                let mut updated = q.clone();
                updated.status = Some(resourcequota::status_for(q, &used));
                ops.push(WriteOp::update(updated.into_any(), stored.rv));
            }
        }
        if !exceeded.is_empty() {
            let (kind, name) = refused.unwrap_or((Kind::ResourceQuota, ""));
            let i = kind.info();
            return Err(ApiError::forbidden(format!(
                "{} \"{name}\" is forbidden: {}",
                crate::error::qualified_resource(i.plural, i.group),
                exceeded.join("; ")
            )));
        }
    }
    Ok(ops)
}

/// What the objects in `namespace` that a quota with `scope` counts consume now, from the
/// store's cache.
pub fn usage_in(store: &Store, namespace: &str, scope: &Scope) -> Usage {
    let mut total = Usage::new();
    for kind in Kind::ALL.iter().filter(|k| k.info().namespaced) {
        let (items, _) = store.list(*kind, Some(namespace));
        for s in items {
            let obj = s.object();
            if !scope.matches(&obj) {
                continue;
            }
            for (k, v) in resourcequota::usage(&obj) {
                *total.entry(k).or_default() += v;
            }
        }
    }
    total
}

/// A quota whose status says what its namespace uses now: set on create and when its limits
/// change, so a new quota is enforced from its first moment.
pub fn with_current_usage(store: &Store, q: &mut ResourceQuota, creating: bool) {
    let ns = q.metadata.namespace.clone().unwrap_or_default();
    let scope = Scope::of(q.spec.as_ref());
    let mut used = usage_in(store, &ns, &scope);
    // A quota being created counts itself, as it will once stored (unless its scope leaves
    // quotas out).
    if creating && scope.is_everything() {
        *used.entry("count/resourcequotas".into()).or_default() += 1;
        *used.entry("resourcequotas".into()).or_default() += 1;
    }
    q.status = Some(resourcequota::status_for(q, &used));
}

/// Whether `obj` is a quota whose status needs recomputing after this write.
pub fn needs_recount(new: &AnyObject, old: Option<&AnyObject>) -> bool {
    match (new, old) {
        (AnyObject::ResourceQuota(_), None) => true,
        (AnyObject::ResourceQuota(n), Some(AnyObject::ResourceQuota(o))) => n.spec != o.spec,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::registry::{Registry, WriteOptions};
    use crate::resources::PersistentVolumeClaim;
    use crate::store::StoreOptions;

    async fn registry() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default())
            .await
            .unwrap();
        (dir, Registry::new(store))
    }

    fn claim(name: &str, size: &str) -> PersistentVolumeClaim {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                     "resources": {"requests": {"storage": size}}},
        }))
        .unwrap()
    }

    fn quota(hard: serde_json::Value) -> ResourceQuota {
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": "q"}, "spec": {"hard": hard}}),
        )
        .unwrap()
    }

    fn used(r: &Registry, ns: &str) -> Usage {
        resourcequota::used(&r.get::<ResourceQuota>(ns, "q").unwrap().typed())
    }

    #[tokio::test]
    async fn a_new_quota_counts_what_is_there_and_refuses_what_would_go_over() {
        let (_d, r) = registry().await;
        let opts = WriteOptions::default();
        r.create("a", claim("one", "4Gi"), &opts).await.unwrap();
        r.create(
            "a",
            quota(serde_json::json!({"requests.storage": "10Gi", "persistentvolumeclaims": "2"})),
            &opts,
        )
        .await
        .unwrap();
        assert_eq!(used(&r, "a")["requests.storage"], 4 << 30);
        let err = r.create("a", claim("two", "7Gi"), &opts).await.unwrap_err();
        assert_eq!(err.code, 403, "{err}");
        assert!(
            err.message.contains("exceeded quota: q, requested: requests.storage=7Gi, used: requests.storage=4Gi, limited: requests.storage=10Gi"),
            "{err}"
        );
        r.create("a", claim("two", "6Gi"), &opts).await.unwrap();
        let err = r.create("a", claim("three", "1"), &opts).await.unwrap_err();
        assert!(err.message.contains("persistentvolumeclaims=2"), "{err}");
        // Another namespace is not charged.
        r.create("b", claim("other", "100Gi"), &opts).await.unwrap();
        assert_eq!(used(&r, "a")["requests.storage"], 10 << 30);
    }

    #[tokio::test]
    async fn racing_creates_never_both_take_the_last_unit_and_deletes_free_it_at_once() {
        let (_d, r) = registry().await;
        let opts = WriteOptions::default();
        r.create(
            "a",
            quota(serde_json::json!({"count/persistentvolumeclaims": "5"})),
            &opts,
        )
        .await
        .unwrap();
        let r = Arc::new(r);
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let r = r.clone();
                tokio::spawn(async move {
                    r.create(
                        "a",
                        claim(&format!("c{i}"), "1Gi"),
                        &WriteOptions::default(),
                    )
                    .await
                })
            })
            .collect();
        let mut created = 0;
        for t in tasks {
            if t.await.unwrap().is_ok() {
                created += 1;
            }
        }
        assert_eq!(created, 5);
        assert_eq!(r.store().count(Kind::PersistentVolumeClaim), 5);
        assert_eq!(used(&r, "a")["count/persistentvolumeclaims"], 5);
        // A claim's protection finalizer keeps it (and its charge) until it is gone.
        let victim = r.store().list(Kind::PersistentVolumeClaim, Some("a")).0[0].clone();
        let mut gone: PersistentVolumeClaim = victim.typed::<PersistentVolumeClaim>().clone();
        gone.metadata.finalizers = None;
        r.update(
            "a",
            &victim.key.name,
            gone,
            crate::resources::Subresource::Main,
            &opts,
        )
        .await
        .unwrap();
        r.delete::<PersistentVolumeClaim>("a", &victim.key.name, &Default::default(), &opts)
            .await
            .unwrap();
        assert_eq!(used(&r, "a")["count/persistentvolumeclaims"], 4);
        r.create("a", claim("again", "1Gi"), &opts).await.unwrap();
    }

    fn classed(name: &str, size: &str, vac: &str) -> PersistentVolumeClaim {
        let mut c = claim(name, size);
        c.spec.as_mut().unwrap().volume_attributes_class_name = Some(vac.into());
        c
    }

    #[tokio::test]
    async fn a_scoped_quota_counts_only_claims_on_its_attributes_classes() {
        let (_d, r) = registry().await;
        let opts = WriteOptions::default();
        r.create(
            "a",
            serde_json::from_value::<ResourceQuota>(serde_json::json!({
                "metadata": {"name": "q"},
                "spec": {"hard": {"requests.storage": "5Gi", "persistentvolumeclaims": "2"},
                         "scopeSelector": {"matchExpressions": [{"scopeName": "VolumeAttributesClass",
                             "operator": "In", "values": ["gold"]}]}},
            }))
            .unwrap(),
            &opts,
        )
        .await
        .unwrap();
        r.create("a", classed("g1", "4Gi", "gold"), &opts)
            .await
            .unwrap();
        // Other classes, and claims without one, are not its business.
        r.create("a", classed("s1", "100Gi", "silver"), &opts)
            .await
            .unwrap();
        r.create("a", claim("plain", "100Gi"), &opts).await.unwrap();
        assert_eq!(used(&r, "a")["requests.storage"], 4 << 30);
        assert_eq!(used(&r, "a")["persistentvolumeclaims"], 1);
        let err = r
            .create("a", classed("g2", "2Gi", "gold"), &opts)
            .await
            .unwrap_err();
        assert_eq!(err.code, 403, "{err}");
        assert!(
            err.message
                .contains("persistentvolumeclaims \"g2\" is forbidden: exceeded quota: q"),
            "{err}"
        );
        // Moving a big claim onto gold is refused too.
        let mut s1: PersistentVolumeClaim =
            r.get::<PersistentVolumeClaim>("a", "s1").unwrap().typed();
        s1.spec.as_mut().unwrap().volume_attributes_class_name = Some("gold".into());
        let err = r
            .update("a", "s1", s1, crate::resources::Subresource::Main, &opts)
            .await
            .err()
            .expect("refused");
        assert_eq!(err.code, 403, "{err}");
        // A status that says a volume is on gold is charged, never refused: it reports what
        // happened.
        let mut plain: PersistentVolumeClaim = r
            .get::<PersistentVolumeClaim>("a", "plain")
            .unwrap()
            .typed();
        plain.status = Some(
            serde_json::from_value(serde_json::json!({"currentVolumeAttributesClassName": "gold"}))
                .unwrap(),
        );
        r.update(
            "a",
            "plain",
            plain,
            crate::resources::Subresource::Status,
            &opts,
        )
        .await
        .unwrap();
        assert_eq!(used(&r, "a")["requests.storage"], 104 << 30);
        // And the recount agrees with what admission charged.
        let q: ResourceQuota = r.get::<ResourceQuota>("a", "q").unwrap().typed();
        let recount = usage_in(r.store(), "a", &Scope::of(q.spec.as_ref()));
        assert_eq!(recount["requests.storage"], 104 << 30);
        assert_eq!(recount["persistentvolumeclaims"], 2);
        // Leaving gold frees its share at once.
        r.delete::<PersistentVolumeClaim>("a", "g1", &Default::default(), &opts)
            .await
            .unwrap();
        let g1 = r.get::<PersistentVolumeClaim>("a", "g1");
        if let Ok(g1) = g1 {
            let mut g1: PersistentVolumeClaim = g1.typed();
            g1.metadata.finalizers = None;
            r.update("a", "g1", g1, crate::resources::Subresource::Main, &opts)
                .await
                .unwrap();
        }
        assert_eq!(used(&r, "a")["requests.storage"], 100 << 30);
    }

    #[tokio::test]
    async fn a_pod_set_failed_and_running_again_cannot_slip_past_the_pod_limit() {
        let (_d, r) = registry().await;
        let opts = WriteOptions::default();
        r.create("a", quota(serde_json::json!({"pods": "1"})), &opts)
            .await
            .unwrap();
        let pod = |name: &str| -> crate::resources::Pod {
            serde_json::from_value(serde_json::json!({"metadata": {"name": name},
                "spec": {"containers": [{"name": "c", "image": "x"}]}}))
            .unwrap()
        };
        let set_phase = |name: &str, phase: &str| {
            let mut p: crate::resources::Pod =
                r.get::<crate::resources::Pod>("a", name).unwrap().typed();
            p.status = Some(serde_json::from_value(serde_json::json!({"phase": phase})).unwrap());
            p
        };
        r.create("a", pod("one"), &opts).await.unwrap();
        let failed = set_phase("one", "Failed");
        Box::pin(r.update(
            "a",
            "one",
            failed,
            crate::resources::Subresource::Status,
            &opts,
        ))
        .await
        .unwrap();
        r.create("a", pod("two"), &opts).await.unwrap();
        let running = set_phase("one", "Running");
        let err = Box::pin(r.update(
            "a",
            "one",
            running,
            crate::resources::Subresource::Status,
            &opts,
        ))
        .await
        .err()
        .expect("refused");
        assert_eq!(err.code, 403, "{err}");
    }

    #[tokio::test]
    async fn quotas_that_count_quotas_can_be_deleted() {
        let (_d, r) = registry().await;
        let opts = WriteOptions::default();
        r.create(
            "a",
            quota(serde_json::json!({"count/resourcequotas": "2"})),
            &opts,
        )
        .await
        .unwrap();
        assert_eq!(used(&r, "a")["count/resourcequotas"], 1, "it counts itself");
        r.delete::<ResourceQuota>("a", "q", &Default::default(), &opts)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn dry_runs_are_checked_against_quota_but_charge_nothing() {
        let (_d, r) = registry().await;
        let opts = WriteOptions::default();
        r.create(
            "a",
            quota(serde_json::json!({"requests.storage": "1Gi"})),
            &opts,
        )
        .await
        .unwrap();
        let dry = WriteOptions {
            dry_run: true,
            ..WriteOptions::default()
        };
        assert_eq!(
            r.create("a", claim("big", "2Gi"), &dry)
                .await
                .unwrap_err()
                .code,
            403
        );
        r.create("a", claim("small", "1Gi"), &dry).await.unwrap();
        assert_eq!(
            used(&r, "a").get("requests.storage").copied().unwrap_or(0),
            0
        );
    }
}
