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
    // A zone-only term: this provider cannot tell its node's zone, so it does not promise it.
    req.topology.requisite = vec![Topology::one("topology.kubernetes.io/zone", "zone-1")];
    assert_eq!(
        p.create_volume(&req).await.unwrap_err().kind,
        ErrorKind::InvalidArgument
    );
    // A selected node's topology carries its other labels too (a zone): its hostname decides.
    let zoned_node = |name: &str| {
        let mut t = Topology::one("kubernetes.io/hostname", name);
        t.0.insert("topology.kubernetes.io/zone".into(), "zone-1".into());
        t
    };
    req.topology.requisite = vec![zoned_node("node-b")];
    assert_eq!(
        p.create_volume(&req).await.unwrap_err().kind,
        ErrorKind::InvalidArgument
    );
    req.topology.requisite = vec![zoned_node("node-a")];
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

/// Writes a small tree: nested directories, files of several sizes, a symbolic link, modes.
fn fill(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir.join("a/b")).unwrap();
    std::fs::write(dir.join("a/b/big"), vec![3u8; 3 << 20]).unwrap();
    for i in 0..200 {
        std::fs::write(dir.join(format!("a/f{i}")), format!("file {i}")).unwrap();
    }
    std::fs::write(dir.join("secret"), b"only me").unwrap();
    std::fs::set_permissions(dir.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("a/b/big", dir.join("link")).unwrap();
}

/// Every path under `root` with its mode, link target or contents.
fn tree(root: &Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let what = if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_string()
            } else if meta.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&path).unwrap().display())
            } else {
                let data = std::fs::read(&path).unwrap();
                format!(
                    "{} bytes, sum {}",
                    data.len(),
                    data.iter().map(|b| *b as u64).sum::<u64>()
                )
            };
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            out.insert(rel, format!("{:o} {what}", meta.mode() & 0o7777));
        }
    }
    out
}

/// Asks for a copy until it is done, as the controllers do; returns how many answers said it
/// was still running.
async fn until_created(
    p: &LocalProvider,
    req: &CreateVolumeRequest,
) -> (stowage_provider::Volume, usize) {
    let mut in_progress = 0;
    loop {
        match p.create_volume(req).await {
            Ok(v) => return (v, in_progress),
            Err(e) if e.kind == ErrorKind::InProgress => {
                assert!(e.progress.is_some(), "{e}");
                in_progress += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("create {}: {e}", req.name),
        }
    }
}

fn snapshot_request(name: &str, source: &str) -> stowage_provider::SnapshotRequest {
    stowage_provider::SnapshotRequest {
        name: name.into(),
        source_handle: source.into(),
        source_attributes: BTreeMap::new(),
        parameters: BTreeMap::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_restores_and_clones_copy_the_tree_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let p = provider(dir.path(), "20Gi");
    p.create_volume(&request("pvc-origin", GI, &[]))
        .await
        .unwrap();
    fill(&p.root().join("pvc-origin"));
    let original = tree(&p.root().join("pvc-origin"));

    // A snapshot is not ready at first: the copy runs in the background, with progress.
    let first = p
        .create_snapshot(&snapshot_request("snapshot-1", "pvc-origin"))
        .await
        .unwrap();
    assert!(!first.ready);
    assert!(first.progress.is_some());
    let snapshot = loop {
        let s = p
            .create_snapshot(&snapshot_request("snapshot-1", "pvc-origin"))
            .await
            .unwrap();
        if s.ready {
            break s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(snapshot.size_bytes, GI, "restores need the source's size");
    assert_eq!(p.snapshot_info("snapshot-1").await.unwrap(), snapshot);
    // Later writes to the volume are not in the snapshot.
    std::fs::write(p.root().join("pvc-origin/after"), b"later").unwrap();

    // A restore into a bigger volume, answered InProgress until the copy is done.
    let mut restore = request("pvc-restored", 2 * GI, &[]);
    restore.content_source = Some(stowage_provider::ContentSource::Snapshot {
        snapshot_id: snapshot.id.clone(),
    });
    let (restored, waits) = until_created(&p, &restore).await;
    assert!(waits >= 1, "the first answer of a copy is InProgress");
    assert_eq!(restored.capacity_bytes, 2 * GI);
    assert_eq!(tree(&p.root().join("pvc-restored")), original);
    // Idempotent: asked again, the same volume, no second copy.
    assert_eq!(p.create_volume(&restore).await.unwrap(), restored);

    // A clone copies the volume as it is now.
    let mut clone = request("pvc-clone", GI, &[]);
    clone.content_source = Some(stowage_provider::ContentSource::Volume {
        handle: "pvc-origin".into(),
        attributes: BTreeMap::new(),
    });
    until_created(&p, &clone).await;
    let now = tree(&p.root().join("pvc-origin"));
    assert_eq!(tree(&p.root().join("pvc-clone")), now);
    assert!(now.contains_key("after"));

    // Smaller than the source: refused, nothing made or reserved.
    let mut small = request("pvc-small", GI / 2, &[]);
    small.content_source = restore.content_source.clone();
    let e = p.create_volume(&small).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    assert!(!p.root().join("pvc-small").exists());
    assert!(
        p.list_volumes()
            .await
            .unwrap()
            .iter()
            .all(|v| v.name != "pvc-small")
    );

    // Deleting the snapshot removes its copy; asking about it is then NotFound.
    p.delete_snapshot(&snapshot.id).await.unwrap();
    p.delete_snapshot(&snapshot.id).await.unwrap();
    assert_eq!(
        p.snapshot_info(&snapshot.id).await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert!(!p.root().join(".stowage/snapshots/snapshot-1").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_deleted_during_its_copy_leaves_nothing_and_a_restart_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let p = provider(dir.path(), "20Gi");
    p.create_volume(&request("pvc-origin", GI, &[]))
        .await
        .unwrap();
    fill(&p.root().join("pvc-origin"));
    let mut clone = request("pvc-clone", GI, &[]);
    clone.content_source = Some(stowage_provider::ContentSource::Volume {
        handle: "pvc-origin".into(),
        attributes: BTreeMap::new(),
    });
    assert_eq!(
        p.create_volume(&clone).await.unwrap_err().kind,
        ErrorKind::InProgress
    );
    p.delete_volume(&DeleteVolumeRequest {
        handle: "pvc-clone".into(),
        attributes: BTreeMap::new(),
    })
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!p.root().join("pvc-clone").exists());
    assert!(!p.root().join(".stowage/scratch/volumes/pvc-clone").exists());
    assert!(
        p.list_volumes()
            .await
            .unwrap()
            .iter()
            .all(|v| v.name != "pvc-clone")
    );

    // A half copy left by a crash is thrown away by the next instance, which copies again.
    let scratch = p.root().join(".stowage/scratch/volumes/pvc-again");
    std::fs::create_dir_all(scratch.join("junk")).unwrap();
    let restarted = provider(dir.path(), "20Gi");
    let mut again = clone.clone();
    again.name = "pvc-again".into();
    until_created(&restarted, &again).await;
    assert_eq!(
        tree(&p.root().join("pvc-again")),
        tree(&p.root().join("pvc-origin"))
    );
    assert!(!scratch.exists());
}
