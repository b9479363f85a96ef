//! The EBS provider against a real EC2 API (moto's server mode on loopback): the SDK's
//! conformance kit, and the EBS behaviours the emulator does not enforce by itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use stowage_provider::conformance::{Fixture, Probed, TopologyFixture, probe_with, run};
use stowage_provider::params::from_pairs as params;
use stowage_provider::{
    AccessMode, AttachRequest, ClaimRef, CreateVolumeRequest, DeleteVolumeRequest, DetachRequest,
    ErrorKind, ExpandRequest, ModifyRequest, NodeInfo, Provider, Topology, TopologyRequirement,
    Volume,
};
use stowage_provider_ebs::ec2::CallCounts;
use stowage_provider_ebs::testing::{Moto, REGION};
use stowage_provider_ebs::{Config, EbsProvider, ZONE_KEY};

const GI: i64 = 1 << 30;

macro_rules! moto {
    () => {
        match Moto::start_for_test() {
            Some(m) => m,
            None => return,
        }
    };
}

fn config(moto: &Moto) -> Config {
    Config {
        region: Some(REGION.into()),
        endpoint: Some(moto.endpoint()),
        default_zone: Some("us-east-1a".into()),
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        ..Config::default()
    }
}

async fn provider(moto: &Moto) -> EbsProvider {
    EbsProvider::new(config(moto), "test-installation").await
}

fn request(name: &str, bytes: i64, params: &[(&str, &str)]) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_bytes: bytes,
        access_modes: vec![AccessMode::ReadWriteOnce],
        block: false,
        parameters: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        mount_options: vec![],
        topology: TopologyRequirement::default(),
        claim: ClaimRef {
            namespace: "team-a".into(),
            name: format!("claim-{name}"),
            uid: "u".into(),
            annotations: BTreeMap::new(),
        },
        content_source: None,
        mutable_parameters: Default::default(),
    }
}

fn node(name: &str, zone: &str, instance: &str) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        labels: BTreeMap::from([
            ("kubernetes.io/hostname".to_string(), name.to_string()),
            (ZONE_KEY.to_string(), zone.to_string()),
        ]),
        provider_id: Some(format!("aws:///{zone}/{instance}")),
        max_attachments: None,
    }
}

fn attach_request(v: &Volume, node: &NodeInfo) -> AttachRequest {
    AttachRequest {
        handle: v.handle.clone(),
        attributes: v.attributes.clone(),
        node: node.clone(),
        read_only: false,
        access_modes: vec![AccessMode::ReadWriteOnce],
        mount_options: vec![],
        fs_type: None,
    }
}

fn detach_request(v: &Volume, node: &NodeInfo, force: bool) -> DetachRequest {
    DetachRequest {
        handle: v.handle.clone(),
        attributes: v.attributes.clone(),
        node: node.clone(),
        force,
    }
}

/// Every volume in the emulator, with its tags.
async fn ec2_volumes(moto: &Moto) -> Vec<aws_sdk_ec2::types::Volume> {
    moto.client()
        .describe_volumes()
        .send()
        .await
        .unwrap()
        .volumes()
        .to_vec()
}

fn tag<'a>(v: &'a aws_sdk_ec2::types::Volume, key: &str) -> Option<&'a str> {
    v.tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

#[tokio::test]
async fn the_ebs_provider_passes_the_conformance_kit() {
    let moto = moto!();
    let instance = moto.run_instance("us-east-1a").await;
    let counts = Arc::new(CallCounts::default());
    let client = stowage_provider_ebs::ec2::client(&config(&moto), counts.clone()).await;
    let cfg = config(&moto);
    let make = move || -> Arc<dyn Provider> {
        Arc::new(EbsProvider::with_client(
            client.clone(),
            counts.clone(),
            cfg.clone(),
            "conformance",
        ))
    };
    let mut fixture = Fixture::new(node("node-a", "us-east-1a", &instance));
    fixture.unknown_node = Some(node("ghost", "us-east-1a", "i-00000000deadbeef0"));
    fixture.topology = TopologyRequirement {
        requisite: vec![Topology::one(ZONE_KEY, "us-east-1a")],
        preferred: vec![Topology::one(ZONE_KEY, "us-east-1a")],
    };
    fixture.volume_bytes = GI;
    fixture.bad_parameters = vec![
        params(&[("type", "floppy")]),
        params(&[("type", "gp3"), ("iops", "-5")]),
        params(&[("type", "st1"), ("iops", "3000")]),
        params(&[("tagSpecification_1", "stowage.dev/volume-name=x")]),
        params(&[("colour", "blue")]),
    ];
    fixture.other_parameters = Some(params(&[("type", "gp2")]));
    fixture.skips = vec![(
        "too_large_is_resource_exhausted_and_creates_nothing",
        "EBS has no pool that fills up; a size beyond its type's limit is InvalidArgument",
    )];
    let zone = |z: &str| TopologyRequirement {
        requisite: vec![Topology::one(ZONE_KEY, z)],
        preferred: vec![],
    };
    let elsewhere = moto.run_instance("us-east-1b").await;
    fixture.topology_fixture = Some(TopologyFixture {
        inside: zone("us-east-1a"),
        inside_node: node("node-a", "us-east-1a", &instance),
        // Another region's zone cannot be reached; another zone's node cannot attach.
        outside: zone("eu-west-1a"),
        outside_node: node("node-b", "us-east-1b", &elsewhere),
    });
    // The backend is EC2: the probe describes the volume.
    let ec2 = moto.client();
    fixture.probe = Some(probe_with(move |v| {
        let ec2 = ec2.clone();
        async move {
            let found = ec2
                .describe_volumes()
                .volume_ids(&v.handle)
                .send()
                .await
                .ok()?;
            let volume = found
                .volumes()
                .iter()
                .find(|e| !matches!(e.state().map(|s| s.as_str()), Some("deleting" | "deleted")))?;
            Some(Probed {
                size_bytes: volume.size().map(|g| i64::from(g) * GI),
            })
        }
    }));
    run(make, fixture).await.assert_passed();
}

#[tokio::test]
async fn a_create_that_finds_its_name_taken_compares_every_parameter_and_returns_the_real_volume() {
    let moto = moto!();
    let p = provider(&moto).await;
    let v = p
        .create_volume(&request(
            "pvc-taken",
            GI,
            &[("type", "gp2"), ("fsType", "xfs")],
        ))
        .await
        .unwrap();
    assert_eq!(v.attributes["type"], "gp2");
    assert_eq!(v.attributes["fsType"], "xfs");
    for other in [
        &[("type", "gp3"), ("fsType", "xfs")][..],
        &[("type", "gp2"), ("fsType", "ext4")][..],
        &[("type", "gp2"), ("fsType", "xfs"), ("encrypted", "true")][..],
    ] {
        let err = p
            .create_volume(&request("pvc-taken", GI, other))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::AlreadyExists, "{other:?}: {err}");
    }
    // A restarted provider finds it by its tags and describes what EC2 has.
    let again = provider(&moto)
        .await
        .create_volume(&request(
            "pvc-taken",
            GI,
            &[("type", "gp2"), ("fsType", "xfs")],
        ))
        .await
        .unwrap();
    assert_eq!(again.handle, v.handle);
    assert_eq!(again.attributes, v.attributes);
}

#[tokio::test]
async fn volumes_get_the_class_type_size_zone_and_tags() {
    let moto = moto!();
    let p = provider(&moto).await;
    let mut req = request(
        "pvc-typed",
        10 * GI + 1,
        &[
            ("type", "io2"),
            ("iopsPerGB", "100"),
            ("encrypted", "true"),
            ("tagSpecification_1", "team={{ .PVCNamespace }}"),
            ("tagSpecification_2", "claim={{ .PVCName }}"),
        ],
    );
    // The node a WaitForFirstConsumer pod was scheduled to decides the zone.
    req.topology = TopologyRequirement {
        requisite: vec![Topology::one(ZONE_KEY, "us-east-1b")],
        preferred: vec![Topology::one(ZONE_KEY, "us-east-1b")],
    };
    let v = p.create_volume(&req).await.unwrap();
    assert_eq!(v.capacity_bytes, 11 * GI, "whole GiB, never smaller");
    assert_eq!(
        v.accessible_topology,
        vec![Topology::one(ZONE_KEY, "us-east-1b")]
    );
    let all = ec2_volumes(&moto).await;
    let made = all
        .iter()
        .find(|x| x.volume_id() == Some(&v.handle))
        .unwrap();
    assert_eq!(made.size(), Some(11));
    assert_eq!(made.availability_zone(), Some("us-east-1b"));
    assert_eq!(made.volume_type().map(|t| t.as_str()), Some("io2"));
    assert_eq!(made.iops(), Some(1100));
    assert_eq!(made.encrypted(), Some(true));
    assert_eq!(tag(made, "stowage.dev/volume-name"), Some("pvc-typed"));
    assert_eq!(
        tag(made, "stowage.dev/installation"),
        Some("test-installation")
    );
    assert_eq!(tag(made, "team"), Some("team-a"));
    assert_eq!(tag(made, "claim"), Some("claim-pvc-typed"));
    assert_eq!(
        tag(made, "kubernetes.io/created-for/pvc/namespace"),
        Some("team-a")
    );

    // Without a node or allowedTopologies, the configured default zone.
    let v = p
        .create_volume(&request("pvc-default", GI, &[]))
        .await
        .unwrap();
    assert_eq!(v.attributes["zone"], "us-east-1a");
    assert_eq!(v.attributes["type"], "gp3");
}

#[tokio::test]
async fn invalid_parameters_are_refused_before_any_ec2_call() {
    let moto = moto!();
    let p = provider(&moto).await;
    for params in [
        vec![("type", "gp9")],
        vec![("type", "io1")],
        vec![("type", "gp3"), ("iops", "100")],
        vec![("type", "gp3"), ("throughput", "5000")],
        vec![("type", "standard"), ("iops", "100")],
        vec![("encrypted", "maybe")],
        vec![("bogus", "1")],
    ] {
        let err = p
            .create_volume(&request("pvc-bad", GI, &params))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{params:?}: {err}");
    }
    let err = p
        .create_volume(&request("pvc-huge", 70_000 * GI, &[]))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
    let mut rwx = request("pvc-rwx", GI, &[]);
    rwx.access_modes = vec![AccessMode::ReadWriteMany];
    assert_eq!(
        p.create_volume(&rwx).await.unwrap_err().kind,
        ErrorKind::InvalidArgument
    );
    assert!(
        p.calls().snapshot().is_empty(),
        "no EC2 call was made: {:?}",
        p.calls().snapshot()
    );
    assert!(ec2_volumes(&moto).await.is_empty());
}

#[tokio::test]
async fn a_restarted_provider_finds_volumes_by_tag_instead_of_making_new_ones() {
    let moto = moto!();
    let first = provider(&moto).await;
    let a = first
        .create_volume(&request("pvc-once", GI, &[]))
        .await
        .unwrap();
    // A new process (empty memory) asked for the same claim's volume gets the same one.
    let second = provider(&moto).await;
    let b = second
        .create_volume(&request("pvc-once", GI, &[]))
        .await
        .unwrap();
    assert_eq!(a.handle, b.handle);
    let named: Vec<_> = ec2_volumes(&moto)
        .await
        .into_iter()
        .filter(|v| tag(v, "stowage.dev/volume-name") == Some("pvc-once"))
        .collect();
    assert_eq!(named.len(), 1, "one volume for one claim");
    // Other installations' volumes are not listed.
    let other = EbsProvider::new(config(&moto), "another-installation").await;
    other
        .create_volume(&request("pvc-theirs", GI, &[]))
        .await
        .unwrap();
    let listed: Vec<String> = second
        .list_volumes()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(listed, ["pvc-once"]);
}

#[tokio::test]
async fn racing_creators_of_one_name_settle_on_one_volume_even_without_client_tokens() {
    // moto ignores ClientToken, so four fresh providers (four servers) creating the same names
    // at once really do make several volumes; they must all answer with the same one, and the
    // others must be gone.
    let moto = moto!();
    let mut providers = Vec::new();
    for _ in 0..4 {
        providers.push(Arc::new(provider(&moto).await));
    }
    let names: Vec<String> = (0..10).map(|i| format!("pvc-race-{i}")).collect();
    let mut tasks = Vec::new();
    for name in &names {
        for p in &providers {
            let (p, name) = (p.clone(), name.clone());
            tasks.push(tokio::spawn(async move {
                let v = p.create_volume(&request(&name, GI, &[])).await.unwrap();
                (name, v.handle)
            }));
        }
    }
    let mut answers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in tasks {
        let (name, handle) = t.await.unwrap();
        answers.entry(name).or_default().push(handle);
    }
    let volumes = ec2_volumes(&moto).await;
    for (name, handles) in answers {
        assert!(
            handles.iter().all(|h| h == &handles[0]),
            "{name}: creators got {handles:?}"
        );
        let live: Vec<_> = volumes
            .iter()
            .filter(|v| tag(v, "stowage.dev/volume-name") == Some(name.as_str()))
            .filter(|v| v.state().map(|s| s.as_str()) != Some("deleted"))
            .map(|v| v.volume_id().unwrap_or_default())
            .collect();
        assert_eq!(live, [handles[0].as_str()], "{name}: one volume left");
    }
}

#[tokio::test]
async fn attach_allocates_devices_without_races_and_refuses_other_zones() {
    let moto = moto!();
    let p = Arc::new(provider(&moto).await);
    let instance = moto.run_instance("us-east-1a").await;
    let n = node("node-a", "us-east-1a", &instance);
    let mut volumes = Vec::new();
    for i in 0..6 {
        volumes.push(
            p.create_volume(&request(&format!("pvc-dev-{i}"), GI, &[]))
                .await
                .unwrap(),
        );
    }
    // Six concurrent attaches to one instance: six different device names.
    let tasks: Vec<_> = volumes
        .iter()
        .map(|v| {
            let (p, r) = (p.clone(), attach_request(v, &n));
            tokio::spawn(async move { p.attach(&r).await })
        })
        .collect();
    let mut devices = Vec::new();
    for t in tasks {
        let info = t.await.unwrap().unwrap();
        assert_eq!(info["type"], "block");
        assert!(
            info["devicePathHint"]
                .starts_with("/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol")
        );
        devices.push(info["devicePath"].clone());
    }
    devices.sort();
    devices.dedup();
    assert_eq!(devices.len(), 6, "{devices:?}");
    assert_eq!(
        p.calls().of("DescribeInstances"),
        1,
        "one lookup of the instance, however many attaches start at once"
    );
    let described = moto
        .client()
        .describe_volumes()
        .volume_ids(&volumes[0].handle)
        .send()
        .await
        .unwrap();
    let att = &described.volumes()[0].attachments()[0];
    assert_eq!(att.instance_id(), Some(instance.as_str()));

    // Attaching again is the same answer; a node in another zone is refused before AWS.
    let again = p.attach(&attach_request(&volumes[0], &n)).await.unwrap();
    assert!(devices.contains(&again["devicePath"]));
    let elsewhere = moto.run_instance("us-east-1b").await;
    let calls_before = p.calls().of("AttachVolume");
    let err = p
        .attach(&attach_request(
            &volumes[1],
            &node("node-b", "us-east-1b", &elsewhere),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
    assert_eq!(
        p.calls().of("AttachVolume"),
        calls_before,
        "AWS was not asked"
    );

    // A per-node limit holds (the controller passes admins' overrides in NodeInfo).
    let mut small = n.clone();
    small.max_attachments = Some(6);
    let extra = p
        .create_volume(&request("pvc-dev-extra", GI, &[]))
        .await
        .unwrap();
    let err = p.attach(&attach_request(&extra, &small)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::ResourceExhausted, "{err}");

    // Detach (always with the instance id), then delete; deleting an attached one waits.
    let err = p
        .delete_volume(&DeleteVolumeRequest {
            handle: volumes[0].handle.clone(),
            attributes: BTreeMap::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition, "{err}");
    for v in &volumes {
        p.detach(&detach_request(v, &n, false)).await.unwrap();
        p.detach(&detach_request(v, &n, false)).await.unwrap();
        p.delete_volume(&DeleteVolumeRequest {
            handle: v.handle.clone(),
            attributes: BTreeMap::new(),
        })
        .await
        .unwrap();
    }
    // A force detach (out-of-service node) works the same way.
    p.attach(&attach_request(&extra, &n)).await.unwrap();
    p.detach(&detach_request(&extra, &n, true)).await.unwrap();
}

#[tokio::test]
async fn expansion_grows_through_modify_volume() {
    let moto = moto!();
    let p = provider(&moto).await;
    let v = p
        .create_volume(&request("pvc-grow", 4 * GI, &[]))
        .await
        .unwrap();
    let grown = p
        .expand_volume(&ExpandRequest {
            handle: v.handle.clone(),
            attributes: v.attributes.clone(),
            capacity_bytes: 10 * GI,
        })
        .await
        .unwrap();
    assert_eq!(grown.capacity_bytes, 10 * GI);
    let size = moto
        .client()
        .describe_volumes()
        .volume_ids(&v.handle)
        .send()
        .await
        .unwrap()
        .volumes()[0]
        .size();
    assert_eq!(size, Some(10));
    let err = p
        .expand_volume(&ExpandRequest {
            handle: v.handle.clone(),
            attributes: v.attributes.clone(),
            capacity_bytes: 70_000 * GI,
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
}

fn modify(v: &Volume, params: &[(&str, &str)]) -> ModifyRequest {
    ModifyRequest {
        handle: v.handle.clone(),
        attributes: v.attributes.clone(),
        parameters: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// (type, iops, throughput) of a volume, as EC2 says.
async fn performance(moto: &Moto, id: &str) -> (String, Option<i32>, Option<i32>) {
    let out = moto
        .client()
        .describe_volumes()
        .volume_ids(id)
        .send()
        .await
        .unwrap();
    let v = &out.volumes()[0];
    (
        v.volume_type().unwrap().as_str().to_string(),
        v.iops(),
        v.throughput(),
    )
}

#[tokio::test]
async fn attributes_classes_create_and_modify_through_modify_volume_within_aws_limits() {
    let moto = moto!();
    let p = provider(&moto).await;
    assert!(p.capabilities().volume_modification);
    let mut req = request("pvc-vac", 100 * GI, &[("type", "gp3")]);
    req.mutable_parameters = params(&[("iops", "4000"), ("throughput", "250")]);
    let v = p.create_volume(&req).await.unwrap();
    assert_eq!(
        performance(&moto, &v.handle).await,
        ("gp3".into(), Some(4000), Some(250)),
        "created with the class's attributes"
    );

    p.modify_volume(&modify(&v, &[("iops", "6000"), ("throughput", "500")]))
        .await
        .unwrap();
    assert_eq!(
        performance(&moto, &v.handle).await,
        ("gp3".into(), Some(6000), Some(500))
    );
    p.modify_volume(&modify(&v, &[("type", "io2"), ("iops", "20000")]))
        .await
        .unwrap();
    assert_eq!(performance(&moto, &v.handle).await.0, "io2");

    // Outside AWS' limits for the type and this 100 GiB volume, or not modifiable at all:
    // refused before any ModifyVolume, the volume as it was.
    let before = p.calls().of("ModifyVolume");
    for bad in [
        vec![("iops", "200000")],               // io2: 1000 IOPS per GiB at most
        vec![("type", "gp3"), ("iops", "100")], // gp3: 3000 at least
        vec![("type", "gp3"), ("throughput", "3000")], // gp3: 2000 MiB/s at most
        vec![("type", "st1"), ("iops", "500")], // st1: no provisioned IOPS
        vec![("encrypted", "true")],            // not modifiable
    ] {
        let err = p.modify_volume(&modify(&v, &bad)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{bad:?}: {err}");
    }
    assert_eq!(
        p.calls().of("ModifyVolume"),
        before,
        "no ModifyVolume was sent"
    );
    let (kind, iops, _) = performance(&moto, &v.handle).await;
    assert_eq!((kind.as_str(), iops), ("io2", Some(20000)));
}

#[tokio::test]
async fn a_nodes_csinode_entry_names_its_instance_zone_key_and_type_limit() {
    let moto = moto!();
    let p = provider(&moto).await;
    let mut n = node("n1", "us-east-1a", "i-0abc");
    n.labels
        .insert("node.kubernetes.io/instance-type".into(), "m5.large".into());
    let info = p.node_driver_info(&n);
    assert_eq!(info.node_id, "i-0abc");
    assert_eq!(info.topology_keys, [ZONE_KEY]);
    assert_eq!(info.max_volumes, Some(26));
    n.max_attachments = Some(4);
    assert_eq!(p.node_driver_info(&n).max_volumes, Some(4));
}

#[tokio::test]
async fn waiting_is_batched_into_few_describe_calls() {
    let moto = moto!();
    let p = Arc::new(provider(&moto).await);
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let p = p.clone();
            tokio::spawn(async move {
                p.create_volume(&request(&format!("pvc-batch-{i}"), GI, &[]))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let describes = p.calls().of("DescribeVolumes");
    assert_eq!(p.calls().of("CreateVolume"), 40);
    assert!(
        describes <= 12,
        "{describes} DescribeVolumes for 40 creates: {:?}",
        p.calls().snapshot()
    );
}

#[tokio::test]
async fn a_clone_left_unfinished_is_listed_as_its_volume_and_deleted_with_it() {
    let moto = moto!();
    let p = provider(&moto).await;
    let source = p
        .create_volume(&request("pvc-origin", GI, &[]))
        .await
        .unwrap();
    let snapshot_of_source = |name: &'static str| {
        let (p, handle) = (&p, source.handle.clone());
        async move {
            p.create_snapshot(&stowage_provider::SnapshotRequest {
                name: name.into(),
                source_handle: handle,
                source_attributes: BTreeMap::new(),
                parameters: BTreeMap::new(),
            })
            .await
            .unwrap()
        }
    };
    // The temporary snapshot of a clone whose claim was deleted before its volume was made.
    let temp = snapshot_of_source("clone-pvc-gone").await;
    // A snapshot that is not a clone's is never taken for a volume.
    let kept = snapshot_of_source("snapshot-keep").await;
    let listed = p.list_volumes().await.unwrap();
    let unfinished = listed
        .iter()
        .find(|v| v.name == "pvc-gone")
        .expect("the unfinished clone is listed as its volume");
    assert_eq!(unfinished.handle, temp.id);
    assert_eq!(unfinished.capacity_bytes, GI);
    assert!(listed.iter().all(|v| v.handle != kept.id));

    let err = p
        .delete_volume(&DeleteVolumeRequest {
            handle: kept.id.clone(),
            attributes: BTreeMap::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
    p.delete_volume(&DeleteVolumeRequest {
        handle: temp.id.clone(),
        attributes: BTreeMap::new(),
    })
    .await
    .unwrap();
    let left: Vec<String> = moto
        .client()
        .describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .unwrap()
        .snapshots()
        .iter()
        .filter_map(|s| s.snapshot_id().map(str::to_string))
        .collect();
    assert!(left.contains(&kept.id));
    assert!(!left.contains(&temp.id), "the clone snapshot is gone");
    assert!(
        p.list_volumes()
            .await
            .unwrap()
            .iter()
            .all(|v| v.name != "pvc-gone")
    );

    // A clone snapshot whose volume exists is the volume's business, not listed twice.
    snapshot_of_source("clone-pvc-origin").await;
    let listed = p.list_volumes().await.unwrap();
    let origin: Vec<_> = listed.iter().filter(|v| v.name == "pvc-origin").collect();
    assert_eq!(origin.len(), 1);
    assert_eq!(origin[0].handle, source.handle);
}
