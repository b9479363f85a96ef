//! The snapshot controllers with the provisioner, in virtual time, against the in-memory
//! provider: classes, contents, restores, clones, copies that take a while, and the bounded
//! protection of claims being copied.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ObjectReference, PersistentVolumeClaimSpec, TypedLocalObjectReference,
    VolumeResourceRequirements,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use stowage_provider::faults::{Fault, Faulty};
use stowage_provider::memory::{self, MemoryProvider};
use stowage_provider::{Provider, SnapshotRequest};

use crate::controllers::testing::{Harness, settings};
use crate::resources::names::finalizers::{PVC_AS_SNAPSHOT_SOURCE, PVC_CLONE_SOURCE};
use crate::resources::volumesnapshot::{VolumeSnapshotSource, VolumeSnapshotSpec};
use crate::resources::volumesnapshotclass::DEFAULT_ANNOTATION;
use crate::resources::volumesnapshotcontent::{
    VolumeSnapshotContentSource, VolumeSnapshotContentSpec,
};
use crate::resources::{
    PersistentVolumeClaim, VolumeSnapshot, VolumeSnapshotClass, VolumeSnapshotContent, pvc,
};

const MINUTE: Duration = Duration::from_secs(60);

fn meta(namespace: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(str::to_string),
        ..Default::default()
    }
}

fn claim(name: &str, size: &str, source: Option<(&str, &str, &str)>) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: meta(Some("default"), name),
        spec: Some(PersistentVolumeClaimSpec {
            storage_class_name: Some("mem".into()),
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".into(), Quantity(size.into()))])),
                ..Default::default()
            }),
            data_source: source.map(|(group, kind, name)| TypedLocalObjectReference {
                api_group: (!group.is_empty()).then(|| group.to_string()),
                kind: kind.into(),
                name: name.into(),
            }),
            ..Default::default()
        }),
        status: None,
    }
}

fn snapshot(name: &str, claim: Option<&str>, content: Option<&str>) -> VolumeSnapshot {
    VolumeSnapshot {
        metadata: meta(Some("default"), name),
        spec: VolumeSnapshotSpec {
            source: VolumeSnapshotSource {
                persistent_volume_claim_name: claim.map(str::to_string),
                volume_snapshot_content_name: content.map(str::to_string),
            },
            volume_snapshot_class_name: None,
        },
        status: None,
    }
}

async fn harness(memory: MemoryProvider, providers: Vec<Arc<dyn Provider>>) -> Harness {
    let h = Harness::with_providers(memory, providers).await;
    h.start(settings());
    h.create(StorageClass {
        metadata: meta(None, "mem"),
        provisioner: memory::NAME.into(),
        volume_binding_mode: Some("Immediate".into()),
        ..Default::default()
    })
    .await;
    h
}

async fn plain() -> Harness {
    let memory = MemoryProvider::new(memory::NAME).with_capacity(64 << 30);
    harness(memory.clone(), vec![Arc::new(memory)]).await
}

fn bound(h: &Harness, name: &str) -> Option<PersistentVolumeClaim> {
    h.get::<PersistentVolumeClaim>("default", name)
        .filter(pvc::is_bound)
}

fn ready(h: &Harness, name: &str) -> Option<VolumeSnapshot> {
    h.get::<VolumeSnapshot>("default", name)
        .filter(crate::resources::volumesnapshot::is_ready)
}

fn has_finalizer(c: &PersistentVolumeClaim, f: &str) -> bool {
    c.metadata.finalizers.iter().flatten().any(|x| x == f)
}

fn content_of(h: &Harness, s: &VolumeSnapshot) -> VolumeSnapshotContent {
    let name = s
        .status
        .as_ref()
        .and_then(|st| st.bound_volume_snapshot_content_name.clone())
        .expect("bound");
    h.get::<VolumeSnapshotContent>("", &name).expect("content")
}

fn volume_name(c: &PersistentVolumeClaim) -> String {
    c.spec.as_ref().unwrap().volume_name.clone().unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_takes_the_default_class_and_claims_restore_and_clone_from_it() {
    let h = plain().await;
    let mut class = VolumeSnapshotClass::new("tagged", memory::NAME, "Retain");
    class.parameters = Some(BTreeMap::from([("tag".into(), "nightly".into())]));
    class.metadata.annotations = Some(BTreeMap::from([(DEFAULT_ANNOTATION.into(), "true".into())]));
    h.create(class).await;
    h.create(VolumeSnapshotClass::new(
        "other-driver",
        "ebs.stowage.dev",
        "Delete",
    ))
    .await;
    h.create(claim("data", "1Gi", None)).await;
    h.create(snapshot("snap", Some("data"), None)).await;
    let s = h
        .eventually("the snapshot is ready", MINUTE, |h| ready(h, "snap"))
        .await;
    // The default class of the claim's driver is written down, and decides the content.
    assert_eq!(s.spec.volume_snapshot_class_name.as_deref(), Some("tagged"));
    let c = content_of(&h, &s);
    assert_eq!(
        c.metadata.name,
        Some(super::content_name(&s.metadata.uid.clone().unwrap()))
    );
    assert_eq!(c.spec.deletion_policy, "Retain");
    assert_eq!(c.spec.driver, memory::NAME);
    assert_eq!(c.spec.volume_snapshot_ref.uid, s.metadata.uid);
    let handle = c.status.as_ref().unwrap().snapshot_handle.clone().unwrap();
    assert_eq!(
        h.memory.state().lock().snapshot_parameters(&handle),
        Some(BTreeMap::from([("tag".into(), "nightly".into())])),
        "the class's parameters reach the provider"
    );
    let status = s.status.clone().unwrap();
    assert_eq!(status.restore_size.unwrap().0, "1Gi");
    assert!(status.creation_time.is_some());

    // A restore into a bigger claim, and a clone.
    h.create(claim(
        "restored",
        "2Gi",
        Some(("snapshot.storage.k8s.io", "VolumeSnapshot", "snap")),
    ))
    .await;
    h.create(claim(
        "clone",
        "1Gi",
        Some(("", "PersistentVolumeClaim", "data")),
    ))
    .await;
    let restored = h
        .eventually("the restore binds", MINUTE, |h| bound(h, "restored"))
        .await;
    let clone = h
        .eventually("the clone binds", MINUTE, |h| bound(h, "clone"))
        .await;
    let state = h.memory.state();
    assert_eq!(
        state.lock().copied_from(&volume_name(&restored)),
        Some(format!("snapshot:{handle}"))
    );
    let source_volume = volume_name(&bound(&h, "data").unwrap());
    assert_eq!(
        state.lock().copied_from(&volume_name(&clone)),
        Some(format!("volume:mem-{source_volume}"))
    );
    // The protections of the source claim are gone once nothing copies from it.
    h.eventually("the source claim is released", MINUTE, |h| {
        let c = h.get::<PersistentVolumeClaim>("default", "data")?;
        (!has_finalizer(&c, PVC_AS_SNAPSHOT_SOURCE) && !has_finalizer(&c, PVC_CLONE_SOURCE))
            .then_some(())
    })
    .await;

    // Smaller than the source: refused with a clear event, never bound.
    h.create(claim(
        "tiny-clone",
        "512Mi",
        Some(("", "PersistentVolumeClaim", "data")),
    ))
    .await;
    h.eventually_event("tiny-clone", "ProvisioningFailed", MINUTE)
        .await;
    assert!(bound(&h, "tiny-clone").is_none());

    // Deleting a Retain snapshot keeps its content and the provider's snapshot.
    h.ctx
        .registry
        .delete::<VolumeSnapshot>("default", "snap", &Default::default(), &Default::default())
        .await
        .unwrap();
    h.eventually("the snapshot goes", MINUTE, |h| {
        h.get::<VolumeSnapshot>("default", "snap")
            .is_none()
            .then_some(())
    })
    .await;
    let kept = h
        .eventually("the content is let go", MINUTE, |h| {
            let c = h.get::<VolumeSnapshotContent>("", c.metadata.name.as_deref()?)?;
            c.metadata
                .finalizers
                .clone()
                .unwrap_or_default()
                .is_empty()
                .then_some(c)
        })
        .await;
    assert_eq!(kept.status.unwrap().snapshot_handle, Some(handle.clone()));
    assert!(state.lock().snapshot_ids().contains(&handle));
}

/// A clone of a claim that is not bound yet waits; the source binding lets it go ahead at once
/// (the waiting claim is found by its data source, not by a retry, which comes after 30 s).
#[tokio::test(start_paused = true)]
async fn a_clone_goes_ahead_when_its_source_binds() {
    let h = plain().await;
    h.create(claim(
        "copy",
        "1Gi",
        Some(("", "PersistentVolumeClaim", "late")),
    ))
    .await;
    h.eventually_event("copy", "WaitingForDataSource", MINUTE)
        .await;
    h.create(claim("late", "1Gi", None)).await;
    h.eventually("the source binds", MINUTE, |h| bound(h, "late"))
        .await;
    h.eventually("the clone binds", Duration::from_secs(5), |h| {
        bound(h, "copy")
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn long_copies_report_progress_and_finish() {
    let memory = MemoryProvider::new(memory::NAME)
        .with_capacity(64 << 30)
        .with_copy_rounds(20);
    let h = harness(memory.clone(), vec![Arc::new(memory)]).await;
    h.create(claim("data", "1Gi", None)).await;
    h.create(snapshot("snap", Some("data"), None)).await;
    h.eventually("the snapshot is ready", 5 * MINUTE, |h| ready(h, "snap"))
        .await;
    let copying = h
        .event_reasons("snap")
        .iter()
        .filter(|r| *r == "SnapshotCopying")
        .count();
    assert!(
        (2..=11).contains(&copying),
        "one report per tenth: {copying}"
    );
    h.create(claim(
        "restored",
        "1Gi",
        Some(("snapshot.storage.k8s.io", "VolumeSnapshot", "snap")),
    ))
    .await;
    h.eventually("the restore binds", 5 * MINUTE, |h| bound(h, "restored"))
        .await;
    h.eventually("its progress was reported", MINUTE, |h| {
        let n = h
            .event_reasons("restored")
            .iter()
            .filter(|r| *r == "Provisioning")
            .count();
        (2..=11).contains(&n).then_some(())
    })
    .await;
    assert!(
        !h.event_reasons("restored")
            .contains(&"ProvisioningFailed".to_string()),
        "a copy under way is not a failure"
    );
    // A clone's source is protected while the copy runs, and released after.
    h.create(claim(
        "clone",
        "1Gi",
        Some(("", "PersistentVolumeClaim", "data")),
    ))
    .await;
    h.eventually("the source is protected", MINUTE, |h| {
        let c = h.get::<PersistentVolumeClaim>("default", "data")?;
        has_finalizer(&c, PVC_CLONE_SOURCE).then_some(())
    })
    .await;
    assert!(bound(&h, "clone").is_none(), "still copying");
    h.eventually("the clone binds", 5 * MINUTE, |h| bound(h, "clone"))
        .await;
    h.eventually("the source is released", MINUTE, |h| {
        let c = h.get::<PersistentVolumeClaim>("default", "data")?;
        (!has_finalizer(&c, PVC_CLONE_SOURCE)).then_some(())
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_claim_being_snapshotted_waits_for_it_but_not_for_ever() {
    // Snapshots that never finish in this test's time.
    let memory = MemoryProvider::new(memory::NAME)
        .with_capacity(64 << 30)
        .with_copy_rounds(100_000);
    let h = harness(memory.clone(), vec![Arc::new(memory)]).await;
    h.create(claim("data", "1Gi", None)).await;
    h.eventually("the claim binds", MINUTE, |h| bound(h, "data"))
        .await;
    h.create(snapshot("slow", Some("data"), None)).await;
    h.eventually("the claim is protected", MINUTE, |h| {
        let c = h.get::<PersistentVolumeClaim>("default", "data")?;
        has_finalizer(&c, PVC_AS_SNAPSHOT_SOURCE).then_some(())
    })
    .await;
    h.ctx
        .registry
        .delete::<PersistentVolumeClaim>(
            "default",
            "data",
            &Default::default(),
            &Default::default(),
        )
        .await
        .unwrap();
    // Held while the copy progresses...
    tokio::time::sleep(2 * MINUTE).await;
    let held = h.get::<PersistentVolumeClaim>("default", "data").unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    assert!(has_finalizer(&held, PVC_AS_SNAPSHOT_SOURCE));
    // ...but not past the limit: then the claim goes, and the snapshot says why.
    h.eventually("the claim goes after the limit", 5 * MINUTE, |h| {
        h.get::<PersistentVolumeClaim>("default", "data")
            .is_none()
            .then_some(())
    })
    .await;
    h.eventually_event("slow", "SourceClaimDeleted", MINUTE)
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_snapshot_does_not_hold_its_claim() {
    let memory = MemoryProvider::new(memory::NAME).with_capacity(64 << 30);
    // Every snapshot call fails, for longer than the test.
    let faulty = (1..=200).fold(Faulty::new(Arc::new(memory.clone())), |f, n| {
        f.on_call(
            "create_snapshot",
            n,
            Fault::Fail(stowage_provider::ErrorKind::Temporary),
        )
    });
    let faulty = Arc::new(faulty);
    let h = harness(memory, vec![faulty.clone() as Arc<dyn Provider>]).await;
    h.create(claim("data", "1Gi", None)).await;
    h.eventually("the claim binds", MINUTE, |h| bound(h, "data"))
        .await;
    h.create(snapshot("broken", Some("data"), None)).await;
    h.eventually("the snapshot fails", MINUTE, |h| {
        let s = h.get::<VolumeSnapshot>("default", "broken")?;
        s.status?.error.map(|_| ())
    })
    .await;
    h.ctx
        .registry
        .delete::<PersistentVolumeClaim>(
            "default",
            "data",
            &Default::default(),
            &Default::default(),
        )
        .await
        .unwrap();
    h.eventually("the claim goes at once", 10 * Duration::from_secs(1), |h| {
        h.get::<PersistentVolumeClaim>("default", "data")
            .is_none()
            .then_some(())
    })
    .await;
    // Failures back off: writing the error (whose message changes with every call here) does
    // not bring the next call at once.
    tokio::time::sleep(MINUTE).await;
    let calls = faulty.calls("create_snapshot");
    assert!((3..=20).contains(&calls), "{calls} calls in a minute");
}

#[tokio::test(start_paused = true)]
async fn a_pre_provisioned_content_binds_only_the_snapshot_it_names() {
    let h = plain().await;
    h.create(claim("data", "1Gi", None)).await;
    let data = h
        .eventually("the claim binds", MINUTE, |h| bound(h, "data"))
        .await;
    // A snapshot made outside the API, say by a backup tool.
    let outside = h
        .memory
        .create_snapshot(&SnapshotRequest {
            name: "snapshot-from-backup".into(),
            source_handle: format!("mem-{}", volume_name(&data)),
            source_attributes: BTreeMap::new(),
            parameters: BTreeMap::new(),
        })
        .await
        .unwrap();
    h.create(VolumeSnapshotContent {
        metadata: meta(None, "imported"),
        spec: VolumeSnapshotContentSpec {
            volume_snapshot_ref: ObjectReference {
                namespace: Some("default".into()),
                name: Some("restored-snap".into()),
                ..Default::default()
            },
            deletion_policy: "Delete".into(),
            driver: memory::NAME.into(),
            volume_snapshot_class_name: None,
            source: VolumeSnapshotContentSource {
                volume_handle: None,
                snapshot_handle: Some(outside.id.clone()),
            },
            source_volume_mode: None,
        },
        status: None,
    })
    .await;
    // Another name cannot take it.
    h.create(snapshot("thief", None, Some("imported"))).await;
    h.create(snapshot("restored-snap", None, Some("imported")))
        .await;
    let s = h
        .eventually("the named snapshot binds and is ready", MINUTE, |h| {
            ready(h, "restored-snap")
        })
        .await;
    let c = content_of(&h, &s);
    assert_eq!(c.spec.volume_snapshot_ref.uid, s.metadata.uid);
    let thief = h.get::<VolumeSnapshot>("default", "thief").unwrap();
    let why = thief.status.unwrap().error.unwrap().message.unwrap();
    assert!(why.contains("bound to another"), "{why}");
    // A claim restores from it.
    h.create(claim(
        "back",
        "1Gi",
        Some(("snapshot.storage.k8s.io", "VolumeSnapshot", "restored-snap")),
    ))
    .await;
    h.eventually("the restore binds", MINUTE, |h| bound(h, "back"))
        .await;
    // Deleting the snapshot deletes the content (Delete) and the provider's snapshot.
    h.ctx
        .registry
        .delete::<VolumeSnapshot>(
            "default",
            "restored-snap",
            &Default::default(),
            &Default::default(),
        )
        .await
        .unwrap();
    h.eventually("content and provider snapshot go", MINUTE, |h| {
        (h.get::<VolumeSnapshotContent>("", "imported").is_none()
            && !h.memory.state().lock().snapshot_ids().contains(&outside.id))
        .then_some(())
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_restore_keeps_the_volume_mode_unless_the_content_allows_a_change() {
    let h = plain().await;
    h.create(claim("data", "1Gi", None)).await;
    h.create(snapshot("snap", Some("data"), None)).await;
    let s = h
        .eventually("the snapshot is ready", MINUTE, |h| ready(h, "snap"))
        .await;
    let mut block = claim(
        "as-block",
        "1Gi",
        Some(("snapshot.storage.k8s.io", "VolumeSnapshot", "snap")),
    );
    block.spec.as_mut().unwrap().volume_mode = Some("Block".into());
    h.create(block).await;
    h.eventually_event("as-block", "ProvisioningFailed", MINUTE)
        .await;
    assert!(bound(&h, "as-block").is_none());
    // An admin allows it on the content: the claim goes ahead.
    let content = content_of(&h, &s).metadata.name.unwrap();
    h.update::<VolumeSnapshotContent>("", &content, crate::resources::Subresource::Main, |c| {
        c.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(
                crate::controllers::provisioner::restore::ALLOW_VOLUME_MODE_CHANGE.into(),
                "true".into(),
            );
    })
    .await;
    h.eventually("the restore binds", MINUTE, |h| bound(h, "as-block"))
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_being_deleted_serves_the_restore_under_way_and_no_new_one() {
    // Copies that take a while, so that the restore is still running when the snapshot is
    // deleted.
    let memory = MemoryProvider::new(memory::NAME)
        .with_capacity(64 << 30)
        .with_copy_rounds(3);
    let h = harness(memory.clone(), vec![Arc::new(memory)]).await;
    h.create(claim("data", "1Gi", None)).await;
    h.create(snapshot("snap", Some("data"), None)).await;
    h.eventually("the snapshot is ready", MINUTE, |h| ready(h, "snap"))
        .await;
    h.create(claim(
        "restoring",
        "1Gi",
        Some(("snapshot.storage.k8s.io", "VolumeSnapshot", "snap")),
    ))
    .await;
    h.eventually_event("restoring", "Provisioning", MINUTE)
        .await;
    h.ctx
        .registry
        .delete::<VolumeSnapshot>("default", "snap", &Default::default(), &Default::default())
        .await
        .unwrap();
    // A new restore from it is refused...
    h.create(claim(
        "too-late",
        "1Gi",
        Some(("snapshot.storage.k8s.io", "VolumeSnapshot", "snap")),
    ))
    .await;
    h.eventually_event("too-late", "ProvisioningFailed", MINUTE)
        .await;
    // ...while the running one holds the snapshot until it is done.
    h.eventually("the restore binds", MINUTE, |h| bound(h, "restoring"))
        .await;
    h.eventually("then the snapshot goes", MINUTE, |h| {
        h.get::<VolumeSnapshot>("default", "snap")
            .is_none()
            .then_some(())
    })
    .await;
}
