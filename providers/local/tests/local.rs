//! The local provider against a real directory tree: the SDK's conformance kit, and the
//! behaviours specific to local directories.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use stowage_provider::conformance::{Fixture, Probed, TopologyFixture, probe_with, run};
use stowage_provider::{
    AttachRequest, ClaimRef, CreateVolumeRequest, DeleteVolumeRequest, ErrorKind, NodeInfo,
    Provider, Topology, TopologyRequirement,
};
use stowage_provider_local::{Config, LocalProvider};

const GI: i64 = 1 << 30;

fn provider(root: &Path, capacity: &str) -> LocalProvider {
    let config = Config {
        root: Some(root.to_path_buf()),
        node: Some("node-a".into()),
        capacity: Some(capacity.into()),
    };
    LocalProvider::open(&config, root).unwrap()
}

fn request(name: &str, bytes: i64, params: &[(&str, &str)]) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_bytes: bytes,
        access_modes: vec![stowage_provider::AccessMode::ReadWriteOnce],
        block: false,
        parameters: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        mount_options: vec![],
        topology: TopologyRequirement::default(),
        claim: ClaimRef::default(),
        content_source: None,
        mutable_parameters: Default::default(),
    }
}

fn node(name: &str) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        labels: BTreeMap::from([("kubernetes.io/hostname".into(), name.into())]),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_local_provider_passes_the_conformance_kit() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let make = move || -> Arc<dyn Provider> { Arc::new(provider(&root, "20Gi")) };
    let mut fixture = Fixture::new(node("node-a"));
    fixture.too_large_bytes = Some(21 * GI);
    let params = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    fixture.bad_parameters = vec![
        params(&[("onDelete", "explode")]),
        params(&[("mountPermissions", "999")]),
        params(&[("colour", "blue")]),
    ];
    fixture.other_parameters = Some(params(&[("onDelete", "retain")]));
    let here = |n: &str| TopologyRequirement {
        requisite: vec![Topology::one("kubernetes.io/hostname", n)],
        preferred: vec![],
    };
    fixture.topology_fixture = Some(TopologyFixture {
        inside: here("node-a"),
        inside_node: node("node-a"),
        outside: here("node-b"),
        outside_node: node("node-b"),
    });
    // The backend is the directory tree: the probe looks for the volume's directory.
    fixture.probe = Some(probe_with(|v| async move {
        let path = v.attributes.get("path")?;
        Path::new(path).is_dir().then(Probed::default)
    }));
    fixture.skips = vec![(
        "attach_to_an_unknown_node_is_not_found",
        "a local provider serves one node; any other is outside its topology (InvalidArgument)",
    )];
    run(make, fixture).await.assert_passed();
}

#[tokio::test]
async fn over_commit_is_refused_and_freed_space_is_reusable() {
    let dir = tempfile::tempdir().unwrap();
    let p = provider(dir.path(), "10Gi");
    p.create_volume(&request("pvc-a", 6 * GI, &[]))
        .await
        .unwrap();
    let err = p
        .create_volume(&request("pvc-b", 5 * GI, &[]))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::ResourceExhausted);
    assert!(
        err.message.contains("4294967296 of 10737418240 bytes free"),
        "{err}"
    );
    assert!(
        !dir.path().join("pvc-b").exists(),
        "a refused volume leaves no directory"
    );
    p.delete_volume(&DeleteVolumeRequest {
        handle: "pvc-a".into(),
        attributes: BTreeMap::new(),
    })
    .await
    .unwrap();
    p.create_volume(&request("pvc-b", 5 * GI, &[]))
        .await
        .unwrap();
}

#[tokio::test]
async fn accounting_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    provider(dir.path(), "10Gi")
        .create_volume(&request("pvc-a", 8 * GI, &[]))
        .await
        .unwrap();
    let restarted = provider(dir.path(), "10Gi");
    let err = restarted
        .create_volume(&request("pvc-b", 3 * GI, &[]))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::ResourceExhausted);
}

#[tokio::test]
async fn delete_removes_archives_or_keeps_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let p = provider(dir.path(), "10Gi");
    for (name, on_delete) in [
        ("pvc-del", "delete"),
        ("pvc-arc", "archive"),
        ("pvc-keep", "retain"),
    ] {
        let v = p
            .create_volume(&request(name, GI, &[("onDelete", on_delete)]))
            .await
            .unwrap();
        std::fs::write(dir.path().join(name).join("data"), b"hello").unwrap();
        p.delete_volume(&DeleteVolumeRequest {
            handle: v.handle,
            attributes: v.attributes,
        })
        .await
        .unwrap();
    }
    assert!(!dir.path().join("pvc-del").exists());
    assert_eq!(
        std::fs::read(dir.path().join("archived-pvc-arc/data")).unwrap(),
        b"hello"
    );
    assert_eq!(
        std::fs::read(dir.path().join("pvc-keep/data")).unwrap(),
        b"hello"
    );
    // Archiving a second volume of the same name never overwrites the first archive.
    let v = p
        .create_volume(&request("pvc-arc", GI, &[("onDelete", "archive")]))
        .await
        .unwrap();
    p.delete_volume(&DeleteVolumeRequest {
        handle: v.handle,
        attributes: v.attributes,
    })
    .await
    .unwrap();
    assert!(
        dir.path().join("archived-pvc-arc").exists()
            && dir.path().join("archived-pvc-arc-1").exists()
    );
    // Deleted volumes no longer count against capacity.
    p.create_volume(&request("pvc-big", 10 * GI, &[]))
        .await
        .unwrap();
}

#[tokio::test]
async fn names_and_parameters_are_validated_before_touching_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let p = provider(dir.path(), "10Gi");
    for bad in ["../outside", "a/b", ".stowage", "PVC-1"] {
        let err = p.create_volume(&request(bad, GI, &[])).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{bad}");
        let err = p
            .delete_volume(&DeleteVolumeRequest {
                handle: bad.into(),
                attributes: BTreeMap::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{bad}");
    }
    for params in [
        vec![("onDelete", "shred")],
        vec![("mountPermissions", "999")],
        vec![("colour", "red")],
    ] {
        let err = p
            .create_volume(&request("pvc-p", GI, &params))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{params:?}");
    }
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, vec![".stowage"], "nothing created");
}

#[tokio::test]
async fn mount_permissions_set_the_directory_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let p = provider(dir.path(), "10Gi");
    p.create_volume(&request("pvc-mode", GI, &[("mountPermissions", "0750")]))
        .await
        .unwrap();
    let mode = std::fs::metadata(dir.path().join("pvc-mode"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o750);
}

#[tokio::test]
async fn volumes_are_pinned_to_their_node() {
    let dir = tempfile::tempdir().unwrap();
    let p = provider(dir.path(), "10Gi");
    let mut req = request("pvc-topo", GI, &[]);
    req.topology.requisite = vec![Topology::one("kubernetes.io/hostname", "node-b")];
    assert_eq!(
        p.create_volume(&req).await.unwrap_err().kind,
        ErrorKind::InvalidArgument
    );
    req.topology.requisite = vec![Topology::one("kubernetes.io/hostname", "node-a")];
    let v = p.create_volume(&req).await.unwrap();
    assert_eq!(
        v.accessible_topology,
        vec![Topology::one("kubernetes.io/hostname", "node-a")]
    );
    let attach = |n: &str| AttachRequest {
        handle: v.handle.clone(),
        attributes: v.attributes.clone(),
        node: node(n),
        read_only: false,
        access_modes: vec![],
        mount_options: vec!["noatime".into()],
        fs_type: None,
    };
    let info = p.attach(&attach("node-a")).await.unwrap();
    assert_eq!(info["type"], "local");
    assert_eq!(
        info["path"],
        dir.path()
            .canonicalize()
            .unwrap()
            .join("pvc-topo")
            .display()
            .to_string()
    );
    assert_eq!(info["mountOptions"], "noatime");
    assert_eq!(
        p.attach(&attach("node-b")).await.unwrap_err().kind,
        ErrorKind::InvalidArgument
    );
}

#[tokio::test]
async fn expansion_grows_the_reservation_within_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let p = provider(dir.path(), "10Gi");
    p.create_volume(&request("pvc-x", 4 * GI, &[]))
        .await
        .unwrap();
    p.create_volume(&request("pvc-y", 4 * GI, &[]))
        .await
        .unwrap();
    let req = |bytes| stowage_provider::ExpandRequest {
        handle: "pvc-x".into(),
        attributes: BTreeMap::new(),
        capacity_bytes: bytes,
    };
    assert_eq!(
        p.expand_volume(&req(6 * GI)).await.unwrap().capacity_bytes,
        6 * GI
    );
    assert_eq!(
        p.expand_volume(&req(7 * GI)).await.unwrap_err().kind,
        ErrorKind::ResourceExhausted
    );
}
