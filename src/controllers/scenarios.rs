//! The controllers together, in virtual time (see [`super::testing`]): what a claim, a node's
//! lease or a provider failure leads to, and when. Each test runs minutes or hours of
//! controller life in milliseconds, the same way every run.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::api::core::v1::{
    NodeStatus, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PodSpec,
    Volume as PodVolume, VolumeResourceRequirements,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use stowage_provider::faults::{Fault, Faulty};
use stowage_provider::memory::{self, MemoryProvider};
use stowage_provider::{ErrorKind, Provider};

use super::testing::{Harness, settings};
use crate::controllers::attach::unique_volume_name;
use crate::resources::names::LEASE_NAMESPACE;
use crate::resources::{
    Lease, Node, PersistentVolume, PersistentVolumeClaim, Pod, Subresource, VolumeAttachment,
    VolumeAttributesClass, pvc,
};

const SECOND: Duration = Duration::from_secs(1);

fn meta(namespace: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(str::to_string),
        ..Default::default()
    }
}

fn memory_class() -> StorageClass {
    StorageClass {
        metadata: meta(None, "mem"),
        provisioner: memory::NAME.into(),
        volume_binding_mode: Some("Immediate".into()),
        ..Default::default()
    }
}

fn claim(name: &str) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: meta(Some("default"), name),
        spec: Some(PersistentVolumeClaimSpec {
            storage_class_name: Some("mem".into()),
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".into(), Quantity("1Gi".into()))])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

fn bound(h: &Harness, name: &str) -> Option<PersistentVolumeClaim> {
    h.get::<PersistentVolumeClaim>("default", name)
        .filter(pvc::is_bound)
}

/// A harness whose provider is the in-memory one behind `faults`, a plan for its creates.
async fn with_faults(plan: &[(usize, Fault)]) -> (Harness, Arc<Faulty>) {
    let memory = MemoryProvider::new(memory::NAME).with_capacity(64 << 30);
    let mut faulty = Faulty::new(Arc::new(memory.clone()));
    for (n, f) in plan {
        faulty = faulty.on_call("create_volume", *n, *f);
    }
    let faulty = Arc::new(faulty);
    let h = Harness::with_providers(memory, vec![faulty.clone() as Arc<dyn Provider>]).await;
    (h, faulty)
}

#[tokio::test(start_paused = true)]
async fn a_claim_of_an_immediate_class_is_provisioned_and_bound() {
    let h = Harness::new().await;
    h.start(settings());
    h.create(memory_class()).await;
    h.create(claim("data")).await;
    let c = h
        .eventually("the claim is bound", SECOND, |h| bound(h, "data"))
        .await;
    let volume = c.spec.unwrap().volume_name.unwrap();
    let pv = h
        .get::<PersistentVolume>("", &volume)
        .expect("the volume object");
    assert_eq!(
        pv.spec.unwrap().claim_ref.unwrap().name.as_deref(),
        Some("data")
    );
    assert!(
        h.event_reasons("data")
            .contains(&"ProvisioningSucceeded".to_string())
    );
}

#[tokio::test(start_paused = true)]
async fn temporary_failures_back_off_and_final_ones_wait_five_seconds() {
    // Temporary: retried after 5 ms, 10 ms, 20 ms: bound well within a second.
    let plan: Vec<_> = (1..=3)
        .map(|n| (n, Fault::Fail(ErrorKind::Temporary)))
        .collect();
    let (h, calls) = with_faults(&plan).await;
    h.start(settings());
    h.create(memory_class()).await;
    h.create(claim("soon")).await;
    h.eventually("bound after temporary failures", SECOND, |h| {
        bound(h, "soon")
    })
    .await;
    assert_eq!(
        calls.calls("create_volume"),
        4,
        "three failures, then the create that worked"
    );

    // Final (bad parameters): not retried for five seconds, then retried.
    let (h, calls) = with_faults(&[(1, Fault::Fail(ErrorKind::InvalidArgument))]).await;
    h.start(settings());
    h.create(memory_class()).await;
    h.create(claim("later")).await;
    h.eventually("the first create failed", SECOND, |_| {
        (calls.calls("create_volume") == 1).then_some(())
    })
    .await;
    tokio::time::sleep(4 * SECOND).await;
    assert_eq!(
        calls.calls("create_volume"),
        1,
        "an InvalidArgument was retried like a temporary failure"
    );
    assert!(bound(&h, "later").is_none());
    h.eventually("bound once the retry came", 3 * SECOND, |h| {
        bound(h, "later")
    })
    .await;
    assert!(
        h.event_reasons("later")
            .contains(&"ProvisioningFailed".to_string())
    );
}

fn node(name: &str) -> Node {
    Node {
        metadata: meta(None, name),
        ..Default::default()
    }
}

fn lease(node: &str, renewed: jiff::Timestamp) -> Lease {
    Lease {
        metadata: meta(Some(LEASE_NAMESPACE), node),
        spec: Some(LeaseSpec {
            holder_identity: Some(node.into()),
            lease_duration_seconds: Some(40),
            renew_time: Some(MicroTime(renewed)),
            ..Default::default()
        }),
    }
}

fn ready(h: &Harness, name: &str) -> Option<String> {
    h.get::<Node>("", name)?
        .status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status)
}

#[tokio::test(start_paused = true)]
async fn an_expired_lease_makes_the_node_not_ready_and_a_renewal_ready_again() {
    let h = Harness::new().await;
    h.start(settings());
    h.create(node("n1")).await;
    let l = h.create(lease("n1", h.ctx.clock.now())).await;
    h.eventually("ready while the lease is fresh", SECOND, |h| {
        (ready(h, "n1").as_deref() == Some("True")).then_some(())
    })
    .await;
    tokio::time::sleep(30 * SECOND).await;
    assert_eq!(ready(&h, "n1").as_deref(), Some("True"), "expired early");
    h.eventually("not ready once the lease expired", 11 * SECOND, |h| {
        (ready(h, "n1").as_deref() == Some("Unknown")).then_some(())
    })
    .await;
    let now = h.ctx.clock.now();
    h.ctx
        .change::<Lease>(&l, Subresource::Main, |l| {
            l.spec.as_mut().unwrap().renew_time = Some(MicroTime(now));
        })
        .await
        .unwrap();
    h.eventually("ready again after a renewal", SECOND, |h| {
        (ready(h, "n1").as_deref() == Some("True")).then_some(())
    })
    .await;
    assert!(h.event_reasons("n1").contains(&"NodeNotReady".to_string()));
}

#[tokio::test(start_paused = true)]
async fn a_volume_in_use_on_an_unhealthy_node_is_force_detached_after_max_wait() {
    let h = Harness::new().await;
    h.start(settings()); // max-wait-for-unmount: 6 minutes
    h.create(memory_class()).await;
    h.create(claim("data")).await;
    let c = h.eventually("bound", SECOND, |h| bound(h, "data")).await;
    let volume = c.spec.unwrap().volume_name.unwrap();
    let handle = h
        .get::<PersistentVolume>("", &volume)
        .and_then(|v| v.spec?.csi)
        .map(|csi| csi.volume_handle)
        .unwrap();
    h.create(node("n1")).await;
    let l = h.create(lease("n1", h.ctx.clock.now())).await;
    h.create(Pod {
        metadata: meta(Some("default"), "app"),
        spec: Some(PodSpec {
            node_name: Some("n1".into()),
            volumes: Some(vec![PodVolume {
                name: "data".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: "data".into(),
                    read_only: None,
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    })
    .await;
    let attached = |h: &Harness| {
        let (vas, _) = h
            .ctx
            .store
            .list(crate::resources::Kind::VolumeAttachment, None);
        vas.iter()
            .map(|s| s.typed::<VolumeAttachment>().clone())
            .find(|va| va.status.as_ref().is_some_and(|s| s.attached))
    };
    h.eventually("attached to n1", SECOND, |h| attached(h).map(|_| ()))
        .await;
    assert_eq!(h.memory.attached_nodes(&handle), vec!["n1".to_string()]);

    // The node reports the volume in use, then its pod finishes and its lease stops.
    // (The node-health controller writes the Node's status too: `update` retries conflicts.)
    let in_use = unique_volume_name(memory::NAME, &handle);
    h.update::<Node>("", "n1", Subresource::Status, |n| {
        n.status
            .get_or_insert_with(NodeStatus::default)
            .volumes_in_use = Some(vec![in_use.clone()]);
    })
    .await;
    h.update::<Pod>("default", "app", Subresource::Status, |p| {
        p.status.get_or_insert_with(Default::default).phase = Some("Succeeded".into());
    })
    .await;
    drop(l);
    tokio::time::sleep(60 * SECOND).await;
    assert!(
        attached(&h).is_some(),
        "detached from a node that still uses it"
    );
    assert_eq!(ready(&h, "n1").as_deref(), Some("Unknown"));
    // Unhealthy since the lease expired (~40 s in): not detached before that + 6 minutes.
    let node = h.get::<Node>("", "n1").unwrap();
    let since = crate::controllers::attach::unhealthy_since(&node, h.ctx.clock.now()).unwrap();
    let unhealthy_for = h.ctx.clock.now().duration_since(since).unsigned_abs();
    tokio::time::sleep(360 * SECOND - unhealthy_for - 2 * SECOND).await;
    assert!(
        attached(&h).is_some(),
        "force-detached before max-wait-for-unmount"
    );
    h.eventually(
        "force-detached after max-wait-for-unmount",
        30 * SECOND,
        |h| h.memory.attached_nodes(&handle).is_empty().then_some(()),
    )
    .await;
    assert!(h.event_reasons_of_kind("ForceDetach"));
}

fn attributes_class(name: &str, params: &[(&str, &str)]) -> VolumeAttributesClass {
    VolumeAttributesClass {
        metadata: meta(None, name),
        driver_name: memory::NAME.into(),
        parameters: Some(
            params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
    }
}

fn claim_with_class(name: &str, class: &str) -> PersistentVolumeClaim {
    let mut c = claim(name);
    c.spec.as_mut().unwrap().volume_attributes_class_name = Some(class.into());
    c
}

/// (current class, modifyVolumeStatus as (target, status)) of a claim.
fn attributes_state(h: &Harness, name: &str) -> (Option<String>, Option<(String, String)>) {
    let status = h
        .get::<PersistentVolumeClaim>("default", name)
        .and_then(|c| c.status)
        .unwrap_or_default();
    (
        status.current_volume_attributes_class_name,
        status.modify_volume_status.map(|m| {
            (
                m.target_volume_attributes_class_name.unwrap_or_default(),
                m.status,
            )
        }),
    )
}

fn volume_handle(h: &Harness, claim: &str) -> String {
    let c = h.get::<PersistentVolumeClaim>("default", claim).unwrap();
    let pv = h
        .get::<PersistentVolume>("", &c.spec.unwrap().volume_name.unwrap())
        .unwrap();
    pv.spec.unwrap().csi.unwrap().volume_handle
}

fn target_class(h: &Harness, claim: &str, class: &str) -> impl Future<Output = ()> {
    h.update::<PersistentVolumeClaim>("default", claim, Subresource::Main, |c| {
        c.spec.as_mut().unwrap().volume_attributes_class_name = Some(class.to_string());
    })
}

#[tokio::test(start_paused = true)]
async fn a_claims_attributes_class_is_created_with_then_modified_and_an_impossible_one_leaves_the_volume_alone()
 {
    let h = Harness::new().await;
    h.start(settings());
    h.create(memory_class()).await;
    h.create(attributes_class("gold", &[("iops", "4000")]))
        .await;
    h.create(claim_with_class("data", "gold")).await;
    h.eventually("bound with gold current", SECOND, |h| {
        (attributes_state(h, "data").0.as_deref() == Some("gold")).then_some(())
    })
    .await;
    let handle = volume_handle(&h, "data");
    let attrs = |h: &Harness| h.memory.mutable_attributes(&handle).unwrap();
    assert_eq!(
        attrs(&h)["iops"],
        "4000",
        "created with the class's parameters"
    );

    // A new class: the provider modifies the live volume; status follows.
    h.create(attributes_class(
        "platinum",
        &[("iops", "20000"), ("tier", "fast")],
    ))
    .await;
    target_class(&h, "data", "platinum").await;
    h.eventually("platinum reached", SECOND, |h| {
        (attributes_state(h, "data") == (Some("platinum".into()), None)).then_some(())
    })
    .await;
    assert_eq!(attrs(&h)["tier"], "fast");
    let c = h.get::<PersistentVolumeClaim>("default", "data").unwrap();
    let pv = h
        .get::<PersistentVolume>("", &c.spec.unwrap().volume_name.unwrap())
        .unwrap();
    assert_eq!(
        pv.spec.unwrap().volume_attributes_class_name.as_deref(),
        Some("platinum")
    );

    // Beyond the provider's limits: Infeasible, the volume untouched, a warning says why.
    h.create(attributes_class("absurd", &[("iops", "9999999")]))
        .await;
    target_class(&h, "data", "absurd").await;
    h.eventually("absurd infeasible", SECOND, |h| {
        (attributes_state(h, "data")
            == (
                Some("platinum".into()),
                Some(("absurd".into(), "Infeasible".into())),
            ))
            .then_some(())
    })
    .await;
    assert_eq!(attrs(&h)["iops"], "20000");
    // Events are recorded apart from the writes they are about.
    h.eventually_event("data", "VolumeModifyFailed", SECOND)
        .await;

    // Asked back to where it is: nothing is in progress any more.
    target_class(&h, "data", "platinum").await;
    h.eventually("status cleared", SECOND, |h| {
        (attributes_state(h, "data") == (Some("platinum".into()), None)).then_some(())
    })
    .await;

    // A class that does not exist yet: Pending, until it is made.
    target_class(&h, "data", "later").await;
    h.eventually("pending", SECOND, |h| {
        (attributes_state(h, "data").1 == Some(("later".into(), "Pending".into()))).then_some(())
    })
    .await;
    h.create(attributes_class("later", &[("iops", "500")]))
        .await;
    h.eventually("later reached", SECOND, |h| {
        (attributes_state(h, "data") == (Some("later".into()), None)).then_some(())
    })
    .await;
    assert_eq!(attrs(&h)["iops"], "500");
}

#[tokio::test(start_paused = true)]
async fn a_temporary_modify_failure_is_retried_in_progress() {
    let memory = MemoryProvider::new(memory::NAME).with_capacity(64 << 30);
    let faulty = Arc::new(
        Faulty::new(Arc::new(memory.clone()))
            .on_call("modify_volume", 1, Fault::Fail(ErrorKind::Temporary))
            .on_call("modify_volume", 2, Fault::Fail(ErrorKind::Temporary))
            .on_call("modify_volume", 3, Fault::Fail(ErrorKind::Temporary))
            .on_call("modify_volume", 4, Fault::Fail(ErrorKind::Temporary))
            .on_call("modify_volume", 5, Fault::Fail(ErrorKind::Temporary)),
    );
    let h = Harness::with_providers(memory, vec![faulty.clone() as Arc<dyn Provider>]).await;
    h.start(settings());
    h.create(memory_class()).await;
    h.create(attributes_class("gold", &[("iops", "4000")]))
        .await;
    h.create(attributes_class("silver", &[("iops", "1000")]))
        .await;
    h.create(claim_with_class("data", "gold")).await;
    h.eventually("gold", SECOND, |h| {
        (attributes_state(h, "data").0.as_deref() == Some("gold")).then_some(())
    })
    .await;
    target_class(&h, "data", "silver").await;
    h.eventually("in progress while the provider fails", SECOND, |h| {
        (attributes_state(h, "data")
            == (
                Some("gold".into()),
                Some(("silver".into(), "InProgress".into())),
            ))
            .then_some(())
    })
    .await;
    h.eventually("silver after five temporary failures", SECOND, |h| {
        (attributes_state(h, "data") == (Some("silver".into()), None)).then_some(())
    })
    .await;
    assert_eq!(faulty.calls("modify_volume"), 6);
    assert_eq!(
        h.memory
            .mutable_attributes(&volume_handle(&h, "data"))
            .unwrap()["iops"],
        "1000"
    );
}

#[tokio::test(start_paused = true)]
async fn a_class_another_driver_owns_is_infeasible_and_a_missing_one_holds_provisioning() {
    let h = Harness::new().await;
    h.start(settings());
    h.create(memory_class()).await;
    h.create(claim_with_class("data", "gold")).await;
    h.eventually_event("data", "WaitingForVolumeAttributesClass", SECOND)
        .await;
    assert!(bound(&h, "data").is_none());
    h.create(attributes_class("gold", &[("iops", "4000")]))
        .await;
    h.eventually("bound once the class exists", SECOND, |h| bound(h, "data"))
        .await;

    let mut other = attributes_class("other", &[("iops", "4000")]);
    other.driver_name = "ebs.stowage.dev".into();
    h.create(other).await;
    target_class(&h, "data", "other").await;
    h.eventually("infeasible", SECOND, |h| {
        (attributes_state(h, "data").1 == Some(("other".into(), "Infeasible".into()))).then_some(())
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_named_attributes_class_is_kept_until_nothing_names_it() {
    let h = Harness::new().await;
    h.start(settings());
    h.create(memory_class()).await;
    h.create(attributes_class("gold", &[("iops", "4000")]))
        .await;
    h.create(claim_with_class("data", "gold")).await;
    h.eventually("bound", SECOND, |h| bound(h, "data")).await;
    let class = h
        .get::<VolumeAttributesClass>("", "gold")
        .expect("the class");
    assert_eq!(
        class.metadata.finalizers.as_deref(),
        Some(&["kubernetes.io/vac-protection".to_string()][..])
    );
    // Taken off by a careless replace: put back.
    h.update::<VolumeAttributesClass>("", "gold", Subresource::Main, |c| {
        c.metadata.finalizers = None;
    })
    .await;
    h.eventually("the finalizer is back", SECOND, |h| {
        h.get::<VolumeAttributesClass>("", "gold")?
            .metadata
            .finalizers
            .filter(|f| f.len() == 1)
    })
    .await;
    h.ctx
        .registry
        .delete::<VolumeAttributesClass>("", "gold", &Default::default(), &Default::default())
        .await
        .unwrap();
    tokio::time::sleep(30 * SECOND).await;
    assert!(
        h.get::<VolumeAttributesClass>("", "gold").is_some(),
        "kept while the claim and its volume name it"
    );
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
    h.eventually("the class goes with its last user", 30 * SECOND, |h| {
        h.get::<VolumeAttributesClass>("", "gold")
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn an_infeasible_target_is_tried_again_only_every_five_minutes() {
    let memory = MemoryProvider::new(memory::NAME).with_capacity(64 << 30);
    let counted = Arc::new(Faulty::new(Arc::new(memory.clone())));
    let h = Harness::with_providers(memory, vec![counted.clone() as Arc<dyn Provider>]).await;
    h.start(settings());
    h.create(memory_class()).await;
    h.create(claim("data")).await;
    h.eventually("bound", SECOND, |h| bound(h, "data")).await;
    h.create(attributes_class("absurd", &[("iops", "1")])).await;
    target_class(&h, "data", "absurd").await;
    h.eventually("infeasible", SECOND, |h| {
        (attributes_state(h, "data").1 == Some(("absurd".into(), "Infeasible".into())))
            .then_some(())
    })
    .await;
    assert_eq!(counted.calls("modify_volume"), 1);
    tokio::time::sleep(240 * SECOND).await;
    assert_eq!(counted.calls("modify_volume"), 1, "not before five minutes");
    tokio::time::sleep(70 * SECOND).await;
    assert_eq!(counted.calls("modify_volume"), 2, "once after five minutes");
    assert_eq!(
        attributes_state(&h, "data").1,
        Some(("absurd".into(), "Infeasible".into()))
    );
}

/// The in-memory provider, but naming nodes by their providerID once they have one, as EBS
/// names them by instance id: what makes a CSINode entry change its fixed parts.
struct NamedByProviderId(MemoryProvider);

#[async_trait::async_trait]
impl Provider for NamedByProviderId {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn capabilities(&self) -> stowage_provider::Capabilities {
        self.0.capabilities()
    }
    async fn create_volume(
        &self,
        req: &stowage_provider::CreateVolumeRequest,
    ) -> stowage_provider::Result<stowage_provider::Volume> {
        self.0.create_volume(req).await
    }
    async fn delete_volume(
        &self,
        req: &stowage_provider::DeleteVolumeRequest,
    ) -> stowage_provider::Result<()> {
        self.0.delete_volume(req).await
    }
    async fn attach(
        &self,
        req: &stowage_provider::AttachRequest,
    ) -> stowage_provider::Result<stowage_provider::PublishInfo> {
        self.0.attach(req).await
    }
    async fn detach(&self, req: &stowage_provider::DetachRequest) -> stowage_provider::Result<()> {
        self.0.detach(req).await
    }
    async fn list_volumes(&self) -> stowage_provider::Result<Vec<stowage_provider::VolumeInfo>> {
        self.0.list_volumes().await
    }
    fn node_driver_info(
        &self,
        node: &stowage_provider::NodeInfo,
    ) -> stowage_provider::NodeDriverInfo {
        stowage_provider::NodeDriverInfo {
            node_id: node
                .provider_id
                .clone()
                .unwrap_or_else(|| node.name.clone()),
            topology_keys: vec!["kubernetes.io/hostname".into()],
            max_volumes: node.max_attachments,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_csinode_follows_its_node_and_keeps_other_drivers_entries() {
    use k8s_openapi::api::core::v1::NodeSpec;
    use k8s_openapi::api::storage::v1::{CSINodeDriver, VolumeNodeResources};

    use crate::resources::CSINode;

    let memory = MemoryProvider::new(memory::NAME);
    let h = Harness::with_providers(
        memory.clone(),
        vec![Arc::new(NamedByProviderId(memory)) as Arc<dyn Provider>],
    )
    .await;
    h.start(settings());
    h.create(Node {
        metadata: meta(None, "n1"),
        ..Default::default()
    })
    .await;
    let ours = |h: &Harness| -> Option<CSINodeDriver> {
        h.get::<CSINode>("", "n1")?
            .spec
            .drivers
            .into_iter()
            .find(|d| d.name == memory::NAME)
    };
    let entry = h.eventually("n1's CSINode", SECOND, ours).await;
    assert_eq!(entry.node_id, "n1");
    assert_eq!(entry.allocatable, None, "no limit set");

    // Another registrar's entry stays; the node's new id and limit reach ours.
    h.update::<CSINode>("", "n1", Subresource::Main, |n| {
        n.spec.drivers.insert(
            0,
            CSINodeDriver {
                name: "other.example.com".into(),
                node_id: "x-1".into(),
                ..Default::default()
            },
        );
    })
    .await;
    h.update::<Node>("", "n1", Subresource::Main, |n| {
        n.spec = Some(NodeSpec {
            provider_id: Some("aws:///us-east-1a/i-0abc".into()),
            ..Default::default()
        });
        n.metadata.annotations = Some(BTreeMap::from([(
            crate::resources::names::node::MAX_ATTACHMENTS_ANNOTATION.to_string(),
            "4".to_string(),
        )]));
    })
    .await;
    let entry = h
        .eventually("the new node id and limit", SECOND, |h| {
            ours(h).filter(|d| d.node_id == "aws:///us-east-1a/i-0abc")
        })
        .await;
    assert_eq!(
        entry.allocatable,
        Some(VolumeNodeResources { count: Some(4) })
    );
    let names: Vec<String> = h
        .get::<CSINode>("", "n1")
        .unwrap()
        .spec
        .drivers
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["other.example.com", memory::NAME]);

    h.ctx
        .registry
        .delete::<Node>("", "n1", &Default::default(), &Default::default())
        .await
        .unwrap();
    h.eventually("the CSINode goes with its Node", SECOND, |h| {
        h.get::<CSINode>("", "n1").is_none().then_some(())
    })
    .await;
}

/// (request, capacity, allocatedResources, allocatedResourceStatuses) of a claim's storage.
fn expansion_state(h: &Harness, name: &str) -> (String, String, String, Option<String>) {
    let c = h.get::<PersistentVolumeClaim>("default", name).unwrap();
    let storage = |m: Option<&BTreeMap<String, Quantity>>| {
        m.and_then(|m| m.get("storage"))
            .map(|q| q.0.clone())
            .unwrap_or_default()
    };
    let spec = c.spec.unwrap_or_default();
    let status = c.status.unwrap_or_default();
    (
        storage(spec.resources.as_ref().and_then(|r| r.requests.as_ref())),
        storage(status.capacity.as_ref()),
        storage(status.allocated_resources.as_ref()),
        status
            .allocated_resource_statuses
            .and_then(|s| s.get("storage").cloned()),
    )
}

fn request(h: &Harness, name: &str, size: &str) -> impl Future<Output = ()> {
    h.update::<PersistentVolumeClaim>("default", name, Subresource::Main, move |c| {
        c.spec
            .as_mut()
            .unwrap()
            .resources
            .as_mut()
            .unwrap()
            .requests = Some(BTreeMap::from([(
            "storage".into(),
            Quantity(size.to_string()),
        )]));
    })
}

#[tokio::test(start_paused = true)]
async fn an_infeasible_expansion_is_recovered_by_asking_for_less() {
    let h = Harness::new().await; // 64 GiB in all
    h.start(settings());
    let mut class = memory_class();
    class.allow_volume_expansion = Some(true);
    h.create(class).await;
    h.create(claim("data")).await;
    h.eventually("bound", SECOND, |h| bound(h, "data")).await;

    request(&h, "data", "100Gi").await;
    let state = h
        .eventually("infeasible", SECOND, |h| {
            let s = expansion_state(h, "data");
            (s.3.as_deref() == Some("ControllerResizeInfeasible")).then_some(s)
        })
        .await;
    assert_eq!((state.1.as_str(), state.2.as_str()), ("1Gi", "100Gi"));
    h.eventually_event("data", "VolumeResizeFailed", SECOND)
        .await;

    // Back down, above the capacity: the claim recovers, and allocatedResources follows.
    request(&h, "data", "2Gi").await;
    h.eventually("recovered at 2Gi", SECOND, |h| {
        (expansion_state(h, "data") == ("2Gi".into(), "2Gi".into(), "2Gi".into(), None))
            .then_some(())
    })
    .await;
    h.eventually_event("data", "VolumeResizeSuccessful", SECOND)
        .await;
}

#[tokio::test(start_paused = true)]
async fn capacity_follows_provisions_within_a_second_and_goes_with_its_class() {
    use crate::resources::{CSIStorageCapacity, Kind, StorageClass};

    let h = Harness::new().await; // 64 GiB in all
    h.start(settings());
    h.create(memory_class()).await;
    let room = |h: &Harness| -> Option<String> {
        let (list, _) = h.ctx.store.list(Kind::CSIStorageCapacity, None);
        let c: CSIStorageCapacity = list.first()?.typed();
        (c.storage_class_name == "mem").then(|| c.capacity.map(|q| q.0).unwrap_or_default())
    };
    h.eventually("published", SECOND, |h| room(h).filter(|r| r == "64Gi"))
        .await;
    for i in 0..5 {
        h.create(claim(&format!("c{i}"))).await;
    }
    h.eventually("59Gi left within a second or two", 2 * SECOND, |h| {
        room(h).filter(|r| r == "59Gi")
    })
    .await;
    // Deleted by hand: put back.
    let name = h.ctx.store.list(Kind::CSIStorageCapacity, None).0[0]
        .key
        .name
        .clone();
    h.ctx
        .registry
        .delete::<CSIStorageCapacity>(
            crate::resources::names::SYSTEM_NAMESPACE,
            &name,
            &Default::default(),
            &Default::default(),
        )
        .await
        .unwrap();
    h.eventually("put back", 2 * SECOND, |h| room(h).filter(|r| r == "59Gi"))
        .await;
    // A class name longer than a label value may be is published too.
    let long = "c".repeat(100);
    let mut class = memory_class();
    class.metadata.name = Some(long.clone());
    h.create(class).await;
    h.eventually("the long class's capacity", 2 * SECOND, |h| {
        let (list, _) = h.ctx.store.list(Kind::CSIStorageCapacity, None);
        list.iter()
            .any(|c| c.typed::<CSIStorageCapacity>().storage_class_name == long)
            .then_some(())
    })
    .await;
    h.ctx
        .registry
        .delete::<StorageClass>("", &long, &Default::default(), &Default::default())
        .await
        .unwrap();
    h.ctx
        .registry
        .delete::<StorageClass>("", "mem", &Default::default(), &Default::default())
        .await
        .unwrap();
    h.eventually("gone with its class", 2 * SECOND, |h| {
        h.ctx
            .store
            .list(Kind::CSIStorageCapacity, None)
            .0
            .is_empty()
            .then_some(())
    })
    .await;
}
