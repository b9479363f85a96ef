//! Property test: random sequences of creates and deletes of volumes, claims and pods, run
//! against the real store and the real controllers, never break the binding invariants:
//! - no volume is bound to two claims;
//! - a bound claim's request never exceeds its volume's capacity;
//! - once a claim is bound, its `volumeName` and the volume's `claimRef` agree;
//!
//! and, once the operations stop, liveness: every claim ends Bound if it can (a provisioned
//! class, or an Available volume that fits it). A binder that never binds fails this.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::controllers::{self, Context, Recorder, Settings};
use crate::metrics::Metrics;
use crate::providers::Providers;
use crate::registry::{DeletePreconditions, Registry, WriteOptions};
use crate::resources::{Kind, PersistentVolume, PersistentVolumeClaim, Pod, StorageClass, pv, pvc};
use crate::store::{Store, StoreOptions};

#[derive(Clone, Debug)]
enum Op {
    CreateVolume { id: u8, gib: u8, class: u8 },
    CreateClaim { id: u8, gib: u8, class: u8 },
    DeleteVolume { id: u8 },
    DeleteClaim { id: u8 },
    CreatePod { id: u8, claim: u8 },
    DeletePod { id: u8 },
}

/// Classes: "" (no class), "a" (static only), "dyn" (provisioned by the in-memory provider).
const CLASSES: [&str; 3] = ["", "a", "dyn"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..12, 1u8..6, 0u8..2).prop_map(|(id, gib, class)| Op::CreateVolume { id, gib, class }),
        3 => (0u8..12, 1u8..6, 0u8..3).prop_map(|(id, gib, class)| Op::CreateClaim { id, gib, class }),
        1 => (0u8..12).prop_map(|id| Op::DeleteVolume { id }),
        1 => (0u8..12).prop_map(|id| Op::DeleteClaim { id }),
        1 => (0u8..6, 0u8..12).prop_map(|(id, claim)| Op::CreatePod { id, claim }),
        1 => (0u8..6).prop_map(|id| Op::DeletePod { id }),
    ]
}

fn check_invariants(store: &Store) -> Result<(), String> {
    let (objects, _, _) =
        store.snapshot_and_watch(&[Kind::PersistentVolume, Kind::PersistentVolumeClaim]);
    let mut volumes = HashMap::new();
    let mut claims = Vec::new();
    for o in &objects {
        match o.kind {
            Kind::PersistentVolume => {
                volumes.insert(
                    o.key.name.to_string(),
                    o.typed::<PersistentVolume>().clone(),
                );
            }
            Kind::PersistentVolumeClaim => claims.push(o.typed::<PersistentVolumeClaim>().clone()),
            _ => {}
        }
    }
    let mut bound_to: HashMap<String, String> = HashMap::new();
    for c in claims.iter().filter(|c| pvc::is_bound(c)) {
        let name = c.metadata.name.clone().unwrap_or_default();
        let v = c
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .unwrap_or_default();
        if let Some(other) = bound_to.insert(v.clone(), name.clone()) {
            return Err(format!("volume {v} bound to both {other} and {name}"));
        }
        let Some(volume) = volumes.get(&v) else {
            return Err(format!("claim {name} is Bound to missing volume {v}"));
        };
        let r = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        if r.and_then(|r| r.uid.as_deref()) != c.metadata.uid.as_deref() {
            return Err(format!("claim {name} names {v}, whose claimRef is {r:?}"));
        }
        if pv::capacity_bytes(volume).unwrap_or(0) < pvc::request_bytes(c).unwrap_or(i64::MAX) {
            return Err(format!("claim {name} asks more than {v} holds"));
        }
    }
    for (name, v) in &volumes {
        if pv::phase(v) != Some(pv::Phase::Bound) {
            continue;
        }
        let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
            return Err(format!("volume {name} is Bound with no claimRef"));
        };
        if let Some(c) = claims.iter().find(|c| c.metadata.uid == r.uid)
            && c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) != Some(name)
        {
            return Err(format!(
                "volume {name} is Bound to a claim that names another volume"
            ));
        }
    }
    Ok(())
}

/// Liveness, once operations stop: no claim is left Pending that could be bound.
fn check_liveness(store: &Store) -> Result<(), String> {
    let (objects, _, _) =
        store.snapshot_and_watch(&[Kind::PersistentVolume, Kind::PersistentVolumeClaim]);
    let class_of = |c: Option<&String>| c.cloned().unwrap_or_default();
    let mut available = Vec::new();
    let mut pending = Vec::new();
    for o in &objects {
        match o.kind {
            Kind::PersistentVolume => {
                let v = o.typed::<PersistentVolume>();
                let spec = v.spec.clone().unwrap_or_default();
                if v.metadata.deletion_timestamp.is_none()
                    && spec.claim_ref.is_none()
                    && pv::phase(&v) == Some(pv::Phase::Available)
                {
                    available.push((
                        o.key.name.clone(),
                        class_of(spec.storage_class_name.as_ref()),
                        pv::capacity_bytes(&v).unwrap_or(0),
                    ));
                }
            }
            Kind::PersistentVolumeClaim => {
                let c = o.typed::<PersistentVolumeClaim>();
                // A claim that named a volume (and lost it) waits for that volume only.
                let named = c
                    .spec
                    .as_ref()
                    .and_then(|s| s.volume_name.as_deref())
                    .is_some_and(|n| !n.is_empty());
                if c.metadata.deletion_timestamp.is_none() && !pvc::is_bound(&c) && !named {
                    pending.push((
                        o.key.name.clone(),
                        class_of(c.spec.as_ref().and_then(|s| s.storage_class_name.as_ref())),
                        pvc::request_bytes(&c).unwrap_or(i64::MAX),
                    ));
                }
            }
            _ => {}
        }
    }
    for (claim, class, wants) in &pending {
        if class == "dyn" {
            return Err(format!("claim {claim} of a provisioned class is not bound"));
        }
        if let Some((volume, _, _)) = available
            .iter()
            .find(|(_, c, holds)| c == class && holds >= wants)
        {
            return Err(format!(
                "claim {claim} is not bound, though volume {volume} is Available and fits it"
            ));
        }
    }
    Ok(())
}

async fn apply(registry: &Registry, op: &Op) {
    let opts = WriteOptions::default();
    let pre = DeletePreconditions::default();
    // Outcomes do not matter (a duplicate create, a delete of nothing): the invariants do.
    match op {
        Op::CreateVolume { id, gib, class } => {
            let v: PersistentVolume = serde_json::from_value(json!({
                "metadata": {"name": format!("v{id}")},
                "spec": {"capacity": {"storage": format!("{gib}Gi")}, "accessModes": ["ReadWriteOnce"],
                         "storageClassName": CLASSES[*class as usize], "hostPath": {"path": "/x"}}
            }))
            .unwrap();
            let _ = registry.create("", v, &opts).await;
        }
        Op::CreateClaim { id, gib, class } => {
            let c: PersistentVolumeClaim = serde_json::from_value(json!({
                "metadata": {"name": format!("c{id}")},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": format!("{gib}Gi")}},
                         "storageClassName": CLASSES[*class as usize]}
            }))
            .unwrap();
            let _ = registry.create("p", c, &opts).await;
        }
        Op::DeleteVolume { id } => {
            let _ = registry
                .delete::<PersistentVolume>("", &format!("v{id}"), &pre, &opts)
                .await;
        }
        Op::DeleteClaim { id } => {
            let _ = registry
                .delete::<PersistentVolumeClaim>("p", &format!("c{id}"), &pre, &opts)
                .await;
        }
        Op::CreatePod { id, claim } => {
            let p: Pod = serde_json::from_value(json!({
                "metadata": {"name": format!("pod{id}")},
                "spec": {"nodeName": "n1", "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": format!("c{claim}")}}]}
            }))
            .unwrap();
            let _ = registry.create("p", p, &opts).await;
        }
        Op::DeletePod { id } => {
            let _ = registry
                .delete::<Pod>("p", &format!("pod{id}"), &pre, &opts)
                .await;
        }
    }
}

fn run_case(ops: Vec<Op>) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default())
            .await
            .unwrap();
        let registry = Registry::new(store.clone());
        let shutdown = CancellationToken::new();
        let mut providers = Providers::default();
        providers.insert(Arc::new(stowage_provider::memory::MemoryProvider::new(
            "memory.stowage.dev",
        )));
        for (name, provisioner) in [
            ("a", "example.com/static-only"),
            ("dyn", "memory.stowage.dev"),
        ] {
            let sc: StorageClass = serde_json::from_value(
                json!({"metadata": {"name": name}, "provisioner": provisioner}),
            )
            .unwrap();
            registry
                .create("", sc, &WriteOptions::default())
                .await
                .unwrap();
        }
        let ctx = Arc::new(Context {
            clock: crate::runtime::Clock::system(),
            registry: registry.clone(),
            store: store.clone(),
            providers,
            recorder: Recorder::start(registry.clone(), shutdown.clone()),
            metrics: Metrics::new(),
        });
        controllers::start(
            ctx,
            &Settings {
                resync: Duration::from_secs(1),
                max_wait_for_unmount: Duration::from_secs(60),
            },
            &shutdown,
        );
        let mut result = Ok(());
        for op in &ops {
            apply(&registry, op).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
            if let Err(e) = check_invariants(&store) {
                result = Err(format!("after {op:?}: {e}"));
                break;
            }
        }
        if result.is_ok() {
            // Let the controllers settle, checking safety all along, until every claim that
            // can be bound is (a resync is 1 s; 5 s is the limit).
            let mut live = Err(String::new());
            for _ in 0..500 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if let Err(e) = check_invariants(&store) {
                    result = Err(format!("while settling: {e}"));
                    break;
                }
                live = check_liveness(&store);
                if live.is_ok() {
                    break;
                }
            }
            if result.is_ok()
                && let Err(e) = live
            {
                result = Err(format!("after settling for 5 s: {e}"));
            }
        }
        shutdown.cancel();
        store.close().await;
        result
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn binding_invariants_hold_under_random_operations(ops in prop::collection::vec(op(), 1..60)) {
        if let Err(e) = run_case(ops) {
            prop_assert!(false, "{}", e);
        }
    }
}
