//! The NFS provider against a real NFS server (nfs-ganesha on loopback, NFSv4.1): the SDK's
//! conformance kit, and the behaviours specific to NFS shares (snapshots, restores and clones
//! included). What the provider did is checked in the export's backing directory.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use stowage_provider::conformance::{Fixture, Probed, probe_with, run};
use stowage_provider::{
    AccessMode, AttachRequest, ClaimRef, ContentSource, CreateVolumeRequest, DeleteVolumeRequest,
    ErrorKind, ExpandRequest, NodeInfo, Progress, Provider, Snapshot, SnapshotRequest,
    TopologyRequirement, Volume,
};
use stowage_provider_nfs::testing::Ganesha;
use stowage_provider_nfs::{Config, NfsProvider};

const GI: i64 = 1 << 30;
const MIB: usize = 1 << 20;

fn provider(timeout: Duration) -> NfsProvider {
    NfsProvider::new(
        Config {
            call_timeout: timeout,
        },
        "test-installation",
    )
}

fn class(g: &Ganesha, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut p = BTreeMap::from([
        ("server".to_string(), g.server()),
        ("share".to_string(), g.share()),
    ]);
    for (k, v) in extra {
        p.insert(k.to_string(), v.to_string());
    }
    p
}

fn request(name: &str, bytes: i64, parameters: BTreeMap<String, String>) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_bytes: bytes,
        access_modes: vec![AccessMode::ReadWriteMany],
        block: false,
        parameters,
        mount_options: vec![],
        topology: TopologyRequirement::default(),
        claim: ClaimRef {
            namespace: "team-a".into(),
            name: format!("claim-of-{name}"),
            uid: "u".into(),
            annotations: BTreeMap::new(),
        },
        content_source: None,
        mutable_parameters: Default::default(),
    }
}

fn node() -> NodeInfo {
    NodeInfo {
        name: "node-1".into(),
        labels: BTreeMap::from([("kubernetes.io/hostname".into(), "node-1".into())]),
        ..Default::default()
    }
}

async fn delete(p: &NfsProvider, v: &Volume) {
    p.delete_volume(&DeleteVolumeRequest {
        handle: v.handle.clone(),
        attributes: v.attributes.clone(),
    })
    .await
    .unwrap();
}

macro_rules! ganesha {
    ($dir:expr) => {
        match Ganesha::start_for_test($dir) {
            Some(g) => g,
            None => return,
        }
    };
}

#[tokio::test]
async fn the_nfs_provider_passes_the_conformance_kit() {
    let dir = tempfile::tempdir().unwrap();
    let g = ganesha!(dir.path());
    let make = || -> Arc<dyn Provider> { Arc::new(provider(Duration::from_secs(10))) };
    let mut fixture = Fixture::new(node());
    fixture.parameters = class(&g, &[("capacity", "20Gi")]);
    fixture.too_large_bytes = Some(21 * GI);
    fixture.bad_parameters = vec![
        class(&g, &[("nfsvers", "2")]),
        class(&g, &[("onDelete", "explode")]),
        class(&g, &[("subDir", "../escape")]),
        class(&g, &[("colour", "blue")]),
        BTreeMap::from([("share".to_string(), g.share())]),
    ];
    fixture.other_parameters = Some(class(&g, &[("capacity", "20Gi"), ("onDelete", "retain")]));
    // The backend is the export's directory: the probe looks for the volume's directory.
    let export = g.export_dir();
    fixture.probe = Some(probe_with(move |v| {
        let export = export.clone();
        async move {
            let sub_dir = v.attributes.get("subDir")?;
            export.join(sub_dir).is_dir().then(Probed::default)
        }
    }));
    fixture.skips = vec![(
        "attach_to_an_unknown_node_is_not_found",
        "every node mounts NFS itself; the provider keeps no list of nodes",
    )];
    run(make, fixture).await.assert_passed();
}

#[tokio::test]
async fn volumes_are_directories_placed_by_the_template_with_the_class_mode() {
    let dir = tempfile::tempdir().unwrap();
    let g = ganesha!(dir.path());
    let p = provider(Duration::from_secs(10));
    let params = class(
        &g,
        &[
            ("subDir", "${pvc.metadata.namespace}/${pvc.metadata.name}"),
            ("mountPermissions", "0750"),
        ],
    );
    let v = p
        .create_volume(&request("pvc-tmpl", GI, params))
        .await
        .unwrap();
    let made = g.export_dir().join("team-a/claim-of-pvc-tmpl");
    assert!(made.is_dir(), "{} exists", made.display());
    assert_eq!(
        std::fs::metadata(&made).unwrap().permissions().mode() & 0o7777,
        0o750
    );
    assert_eq!(
        v.handle,
        format!(
            "{}#{}#team-a/claim-of-pvc-tmpl#pvc-tmpl",
            g.server(),
            g.share()
        )
    );
    assert_eq!(v.attributes["nfsvers"], "4.1");

    // Attach says how to mount it; there is nothing to attach.
    let info = p
        .attach(&AttachRequest {
            handle: v.handle.clone(),
            attributes: v.attributes.clone(),
            node: node(),
            read_only: false,
            access_modes: vec![AccessMode::ReadWriteMany],
            mount_options: vec!["hard".into()],
            fs_type: None,
        })
        .await
        .unwrap();
    assert_eq!(info["type"], "nfs");
    assert_eq!(info["server"], "127.0.0.1");
    assert_eq!(
        info["share"],
        format!("{}/team-a/claim-of-pvc-tmpl", g.share())
    );
    assert_eq!(
        info["source"],
        format!("127.0.0.1:{}/team-a/claim-of-pvc-tmpl", g.share())
    );
    assert_eq!(
        info["mountOptions"],
        format!("nfsvers=4.1,port={},hard", g.port())
    );

    // The parent directory made for the template stays when the volume goes.
    delete(&p, &v).await;
    assert!(!made.exists());
    assert!(
        g.export_dir().join("team-a").is_dir(),
        "parents are never removed"
    );
    let err = p
        .attach(&AttachRequest {
            handle: v.handle.clone(),
            attributes: v.attributes.clone(),
            node: node(),
            read_only: false,
            access_modes: vec![],
            mount_options: vec![],
            fs_type: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
}

#[tokio::test]
async fn delete_removes_only_the_volume_and_never_follows_links() {
    let dir = tempfile::tempdir().unwrap();
    let g = ganesha!(dir.path());
    let p = provider(Duration::from_secs(10));
    let v = p
        .create_volume(&request("pvc-tree", GI, class(&g, &[])))
        .await
        .unwrap();
    let neighbour = p
        .create_volume(&request("pvc-next", GI, class(&g, &[])))
        .await
        .unwrap();
    let root = g.export_dir().join("pvc-tree");
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    std::fs::write(root.join("a/b/c/file"), "data").unwrap();
    std::fs::write(root.join("top"), "data").unwrap();
    // Links out of the volume: to a neighbour's data, and to a directory outside the export.
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("precious"), "keep").unwrap();
    std::fs::write(g.export_dir().join("pvc-next/precious"), "keep").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
    std::os::unix::fs::symlink("../pvc-next", root.join("a/neighbour")).unwrap();

    delete(&p, &v).await;
    assert!(!root.exists(), "the volume's tree is gone");
    assert!(outside.join("precious").exists(), "links are not followed");
    assert!(g.export_dir().join("pvc-next/precious").exists());
    delete(&p, &v).await; // again: nothing to do
    delete(&p, &neighbour).await;
}

#[tokio::test]
async fn on_delete_retain_keeps_and_archive_renames_without_collisions() {
    let dir = tempfile::tempdir().unwrap();
    let g = ganesha!(dir.path());
    let p = provider(Duration::from_secs(10));
    let keep = p
        .create_volume(&request(
            "pvc-keep",
            GI,
            class(&g, &[("onDelete", "retain")]),
        ))
        .await
        .unwrap();
    std::fs::write(g.export_dir().join("pvc-keep/data"), "x").unwrap();
    delete(&p, &keep).await;
    assert!(g.export_dir().join("pvc-keep/data").exists());
    assert!(
        p.list_volumes()
            .await
            .unwrap()
            .iter()
            .all(|v| v.name != "pvc-keep"),
        "a retained directory is no longer a volume"
    );

    // Two volumes in turn with the same directory, both archived.
    let archive = class(
        &g,
        &[
            ("onDelete", "archive"),
            ("subDir", "shared/${pvc.metadata.name}"),
        ],
    );
    for (i, name) in ["pvc-arch-a", "pvc-arch-b"].into_iter().enumerate() {
        let mut req = request(name, GI, archive.clone());
        req.claim.name = "same".into();
        let v = p.create_volume(&req).await.unwrap();
        std::fs::write(g.export_dir().join("shared/same/gen"), i.to_string()).unwrap();
        delete(&p, &v).await;
    }
    let shared = g.export_dir().join("shared");
    assert!(!shared.join("same").exists());
    assert_eq!(
        std::fs::read_to_string(shared.join("archived-same/gen")).unwrap(),
        "0"
    );
    assert_eq!(
        std::fs::read_to_string(shared.join("archived-same-1/gen")).unwrap(),
        "1",
        "the second archive does not replace the first"
    );
}

#[tokio::test]
async fn paths_that_would_escape_the_share_are_refused_and_make_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let g = ganesha!(dir.path());
    let p = provider(Duration::from_secs(10));
    let before = std::fs::read_dir(g.export_dir()).unwrap().count();
    for template in [
        "../${pv.metadata.name}",
        "/etc/${pv.metadata.name}",
        "${nope}",
    ] {
        let err = p
            .create_volume(&request("pvc-esc", GI, class(&g, &[("subDir", template)])))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{template}: {err}");
    }
    for value in ["../../etc", "..", "a/../../b", "/abs", ".stowage/volumes"] {
        let mut req = request(
            "pvc-esc",
            GI,
            class(&g, &[("subDir", "${pvc.metadata.annotations['path']}")]),
        );
        req.claim.annotations.insert("path".into(), value.into());
        let err = p.create_volume(&req).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{value}: {err}");
    }
    // A safe annotation works.
    let mut req = request(
        "pvc-ann",
        GI,
        class(&g, &[("subDir", "${pvc.metadata.annotations['path']}")]),
    );
    req.claim
        .annotations
        .insert("path".into(), "projects/x".into());
    let v = p.create_volume(&req).await.unwrap();
    assert!(g.export_dir().join("projects/x").is_dir());
    delete(&p, &v).await;
    // Only what the successful create made (its parent, and Stowage's records) is new.
    let after: Vec<String> = std::fs::read_dir(g.export_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(after.len(), before + 2, "{after:?}");
    assert!(!dir.path().join("etc").exists());
}

#[tokio::test]
async fn capacity_is_accounted_per_share_and_expansion_grows_it() {
    let dir = tempfile::tempdir().unwrap();
    let g = ganesha!(dir.path());
    let p = provider(Duration::from_secs(10));
    let capped = class(&g, &[("capacity", "10Gi")]);
    let a = p
        .create_volume(&request("pvc-cap-a", 6 * GI, capped.clone()))
        .await
        .unwrap();
    let err = p
        .create_volume(&request("pvc-cap-b", 5 * GI, capped.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::ResourceExhausted, "{err}");
    assert!(
        err.message.contains("4294967296 of 10737418240 bytes free"),
        "{err}"
    );
    assert!(!g.export_dir().join("pvc-cap-b").exists());

    // Growing counts against the same cap, and is remembered across restarts.
    let grow = |bytes| ExpandRequest {
        handle: a.handle.clone(),
        attributes: a.attributes.clone(),
        capacity_bytes: bytes,
    };
    assert_eq!(
        p.expand_volume(&grow(8 * GI)).await.unwrap().capacity_bytes,
        8 * GI
    );
    assert_eq!(
        p.expand_volume(&grow(GI)).await.unwrap().capacity_bytes,
        8 * GI,
        "never shrinks"
    );
    let err = p.expand_volume(&grow(11 * GI)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::ResourceExhausted, "{err}");
    let restarted = provider(Duration::from_secs(10));
    let err = restarted
        .create_volume(&request("pvc-cap-c", 3 * GI, capped.clone()))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::ResourceExhausted,
        "8 GiB of 10 are in use: {err}"
    );
    restarted
        .create_volume(&request("pvc-cap-c", 2 * GI, capped.clone()))
        .await
        .unwrap();
    assert_eq!(
        restarted
            .list_volumes()
            .await
            .unwrap()
            .iter()
            .find(|v| v.name == "pvc-cap-a")
            .map(|v| v.capacity_bytes),
        Some(8 * GI)
    );

    // Without a cap, the share's own size (FSSTAT) is the limit.
    let err = p
        .create_volume(&request("pvc-huge", i64::MAX / 2, class(&g, &[])))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::ResourceExhausted, "{err}");
}

fn in_namespace(mut req: CreateVolumeRequest, namespace: &str, claim: &str) -> CreateVolumeRequest {
    req.claim.namespace = namespace.into();
    req.claim.name = claim.into();
    req
}

#[tokio::test]
async fn only_a_retained_record_of_the_same_namespace_hands_a_directory_over() {
    let dir = tempfile::tempdir().unwrap();
    let g = ganesha!(dir.path());
    let p = provider(Duration::from_secs(10));
    let by_claim = class(
        &g,
        &[
            ("subDir", "${pvc.metadata.namespace}-${pvc.metadata.name}"),
            ("onDelete", "retain"),
        ],
    );

    // A directory nobody recorded (put there by hand, or by something else) is never handed
    // out, and the refused create leaves no record behind.
    std::fs::create_dir(g.export_dir().join("team-a-stray")).unwrap();
    std::fs::write(g.export_dir().join("team-a-stray/secret"), "x").unwrap();
    let err = p
        .create_volume(&in_namespace(
            request("pvc-stray", GI, by_claim.clone()),
            "team-a",
            "stray",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition, "{err}");
    assert!(err.message.contains("no volume record"), "{err}");
    assert!(
        p.list_volumes()
            .await
            .unwrap()
            .iter()
            .all(|v| v.name != "pvc-stray")
    );
    assert!(!g.export_dir().join(".stowage/volumes/pvc-stray").exists());

    // A retained volume's directory goes to the next claim of its namespace that renders to it.
    let first = p
        .create_volume(&in_namespace(
            request("pvc-old", GI, by_claim.clone()),
            "team-a",
            "data",
        ))
        .await
        .unwrap();
    std::fs::write(g.export_dir().join("team-a-data/kept"), "x").unwrap();
    delete(&p, &first).await;
    assert!(g.export_dir().join("team-a-data/kept").exists(), "retained");

    // ...but not to another namespace's claim that an annotation template points there.
    let by_annotation = class(&g, &[("subDir", "${pvc.metadata.annotations['path']}")]);
    let mut thief = in_namespace(request("pvc-thief", GI, by_annotation), "team-b", "x");
    thief.claim.annotations = BTreeMap::from([("path".into(), "team-a-data".into())]);
    let err = p.create_volume(&thief).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition, "{err}");
    assert!(err.message.contains("retained data"), "{err}");

    let again = p
        .create_volume(&in_namespace(
            request("pvc-new", GI, by_claim.clone()),
            "team-a",
            "data",
        ))
        .await
        .unwrap();
    assert!(
        g.export_dir().join("team-a-data/kept").exists(),
        "adopted with its data"
    );

    // A live volume's directory is never shared, whichever class asks.
    let other = in_namespace(request("pvc-other", GI, by_claim.clone()), "team-a", "data");
    let err = p.create_volume(&other).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition, "{err}");
    delete(&p, &again).await;
}

#[tokio::test]
async fn no_volume_directory_may_contain_or_lie_inside_another_across_classes_and_installations() {
    let dir = tempfile::tempdir().unwrap();
    let g = ganesha!(dir.path());
    let p = provider(Duration::from_secs(10));
    // Another Stowage installation on the same export.
    let elsewhere = NfsProvider::new(
        Config {
            call_timeout: Duration::from_secs(10),
        },
        "another-installation",
    );
    let per_namespace = class(&g, &[("subDir", "${pvc.metadata.namespace}")]);
    let per_claim = class(
        &g,
        &[("subDir", "${pvc.metadata.namespace}/${pvc.metadata.name}")],
    );
    let inner = p
        .create_volume(&in_namespace(
            request("pvc-inner", GI, per_claim.clone()),
            "team-a",
            "data",
        ))
        .await
        .unwrap();
    std::fs::write(g.export_dir().join("team-a/data/private"), "x").unwrap();

    // The parent of a live volume's directory, by another class of the same installation, and
    // by another installation that has never seen the first volume.
    for (who, provider) in [
        ("same installation", &p),
        ("another installation", &elsewhere),
    ] {
        let err = provider
            .create_volume(&in_namespace(
                request("pvc-outer", GI, per_namespace.clone()),
                "team-a",
                "x",
            ))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::FailedPrecondition, "{who}: {err}");
        assert!(err.message.contains("overlap"), "{who}: {err}");
    }
    // A directory inside a live volume's.
    let mut nested = in_namespace(request("pvc-nested", GI, per_claim.clone()), "team-a", "x");
    nested
        .parameters
        .insert("subDir".into(), "team-a/data/${pvc.metadata.name}".into());
    let err = elsewhere.create_volume(&nested).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition, "{err}");
    assert!(
        !g.export_dir().join("team-a/data/x").exists(),
        "nothing was made inside the other volume"
    );
    for name in ["pvc-outer", "pvc-nested"] {
        assert!(
            !g.export_dir()
                .join(format!(".stowage/volumes/{name}"))
                .exists(),
            "{name}"
        );
    }

    // Siblings are fine, and deleting one leaves the other's data alone.
    let sibling = elsewhere
        .create_volume(&in_namespace(
            request("pvc-sibling", GI, per_claim.clone()),
            "team-a",
            "logs",
        ))
        .await
        .unwrap();
    delete(&elsewhere, &sibling).await;
    assert!(g.export_dir().join("team-a/data/private").exists());
    delete(&p, &inner).await;
}

#[tokio::test]
async fn a_dead_server_is_a_temporary_failure_and_provisioning_resumes_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = ganesha!(dir.path());
    let p = provider(Duration::from_secs(2));
    let first = p
        .create_volume(&request("pvc-before", GI, class(&g, &[])))
        .await
        .unwrap();
    g.kill();
    let err = p
        .create_volume(&request("pvc-during", GI, class(&g, &[])))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Temporary, "{err}");
    assert!(
        err.message.contains(&g.server()),
        "the message names the server: {err}"
    );
    g.start_again().unwrap();
    // The NFSv4.1 session did not survive the restart; the provider mounts again.
    let during = p
        .create_volume(&request("pvc-during", GI, class(&g, &[])))
        .await
        .unwrap();
    assert!(g.export_dir().join("pvc-during").is_dir());
    delete(&p, &during).await;
    delete(&p, &first).await;
}

#[tokio::test]
async fn a_hung_server_costs_one_timeout_and_does_not_hold_up_other_servers() {
    let dir = tempfile::tempdir().unwrap();
    let hung = ganesha!(&dir.path().join("a"));
    let healthy = ganesha!(&dir.path().join("b"));
    let p = Arc::new(provider(Duration::from_secs(1)));
    p.create_volume(&request("pvc-warm", GI, class(&hung, &[])))
        .await
        .unwrap();
    hung.pause();
    let stuck = {
        let p = p.clone();
        let params = class(&hung, &[]);
        tokio::spawn(async move {
            let started = Instant::now();
            let r = p.create_volume(&request("pvc-stuck", GI, params)).await;
            (r, started.elapsed())
        })
    };
    // Meanwhile the other server's volumes come at once.
    let started = Instant::now();
    let v = p
        .create_volume(&request("pvc-fine", GI, class(&healthy, &[])))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let (r, took) = stuck.await.unwrap();
    let err = r.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Temporary, "{err}");
    assert!(
        took < Duration::from_secs(4),
        "bounded by the call timeout: {took:?}"
    );
    hung.resume();
    p.create_volume(&request("pvc-stuck", GI, class(&hung, &[])))
        .await
        .unwrap();
    delete(&p, &v).await;
}

#[tokio::test]
async fn records_are_listed_only_for_their_own_installation() {
    let dir = tempfile::tempdir().unwrap();
    let g = ganesha!(dir.path());
    let ours = provider(Duration::from_secs(10));
    let theirs = NfsProvider::new(Config::default(), "another-installation");
    let a = ours
        .create_volume(&request("pvc-ours", GI, class(&g, &[])))
        .await
        .unwrap();
    let b = theirs
        .create_volume(&request("pvc-theirs", GI, class(&g, &[])))
        .await
        .unwrap();
    let listed: Vec<String> = ours
        .list_volumes()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(listed, ["pvc-ours"]);
    // Records are on the share, readable by an admin.
    let record = std::fs::read_link(g.export_dir().join(".stowage/volumes/pvc-ours")).unwrap();
    assert!(
        record.to_string_lossy().contains(r#""subDir":"pvc-ours""#),
        "{}",
        record.display()
    );
    delete(&ours, &a).await;
    delete(&theirs, &b).await;
    let requests = ours.backend_requests();
    let ok = |op: &str| requests.get(&(op.to_string(), "ok".to_string())).copied();
    assert!(
        ok("MKDIR") >= Some(1) && ok("SYMLINK") >= Some(1),
        "{requests:?}"
    );
}

#[tokio::test]
async fn bad_classes_are_invalid_before_anything_is_made() {
    let p = provider(Duration::from_secs(1));
    for params in [
        vec![("share", "/export")],
        vec![("server", "127.0.0.1"), ("share", "relative")],
        vec![("server", "127.0.0.1"), ("share", "/e"), ("nfsvers", "2")],
        vec![("server", "127.0.0.1"), ("share", "/e"), ("typo", "x")],
    ] {
        let params = params
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let err = p
            .create_volume(&request("pvc-bad", GI, params))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
    }
    let mut block = request("pvc-block", GI, BTreeMap::new());
    block.block = true;
    assert_eq!(
        p.create_volume(&block).await.unwrap_err().kind,
        ErrorKind::InvalidArgument
    );
}

/// Leaves what a create interrupted right after writing its record leaves: a pending record.
fn interrupted_create(g: &Ganesha, name: &str, sub_dir: &str) {
    let records = g.export_dir().join(".stowage/volumes");
    std::fs::create_dir_all(&records).unwrap();
    let target = format!(
        r#"{{"subDir":"{sub_dir}","bytes":{GI},"onDelete":"delete","owner":"test-installation","claimNamespace":"team-a","pending":true}}"#
    );
    std::os::unix::fs::symlink(target, records.join(name)).unwrap();
}

#[tokio::test]
async fn a_pending_record_proves_nothing_and_never_hands_out_data() {
    let dir = tempfile::tempdir().unwrap();
    let g = ganesha!(dir.path());
    let by_claim = class(&g, &[("subDir", "${pvc.metadata.name}")]);

    // An interrupted create, and then someone's data at that path: the retry must not take it.
    interrupted_create(&g, "pvc-cut", "claim-of-pvc-cut");
    std::fs::create_dir(g.export_dir().join("claim-of-pvc-cut")).unwrap();
    std::fs::write(g.export_dir().join("claim-of-pvc-cut/theirs"), "x").unwrap();
    let p = provider(Duration::from_secs(10));
    let err = p
        .create_volume(&request("pvc-cut", GI, by_claim.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition, "{err}");
    assert!(g.export_dir().join("claim-of-pvc-cut/theirs").exists());

    // An interrupted create that had made its (empty) directory finishes on the retry.
    interrupted_create(&g, "pvc-resume", "claim-of-pvc-resume");
    std::fs::create_dir(g.export_dir().join("claim-of-pvc-resume")).unwrap();
    let v = p
        .create_volume(&request("pvc-resume", GI, by_claim.clone()))
        .await
        .unwrap();
    let again = p
        .create_volume(&request("pvc-resume", GI, by_claim.clone()))
        .await
        .unwrap();
    assert_eq!(v.handle, again.handle);

    // A pending record left alone is an orphan: deleting it never touches data in its path.
    interrupted_create(&g, "pvc-left", "claim-of-pvc-left");
    std::fs::create_dir(g.export_dir().join("claim-of-pvc-left")).unwrap();
    std::fs::write(g.export_dir().join("claim-of-pvc-left/keep"), "x").unwrap();
    let orphan = p
        .list_volumes()
        .await
        .unwrap()
        .into_iter()
        .find(|v| v.name == "pvc-left")
        .expect("a pending record of this installation is listed, for the orphan sweep");
    p.delete_volume(&DeleteVolumeRequest {
        handle: orphan.handle,
        attributes: BTreeMap::new(),
    })
    .await
    .unwrap();
    assert!(g.export_dir().join("claim-of-pvc-left/keep").exists());
    assert!(!g.export_dir().join(".stowage/volumes/pvc-left").exists());
    delete(&p, &v).await;
}

#[tokio::test]
async fn retained_data_is_never_adopted_across_installations() {
    let dir = tempfile::tempdir().unwrap();
    let g = ganesha!(dir.path());
    let retain = class(
        &g,
        &[
            ("subDir", "${pvc.metadata.namespace}-${pvc.metadata.name}"),
            ("onDelete", "retain"),
        ],
    );
    let p = provider(Duration::from_secs(10));
    let v = p
        .create_volume(&in_namespace(
            request("pvc-a", GI, retain.clone()),
            "team-a",
            "data",
        ))
        .await
        .unwrap();
    std::fs::write(g.export_dir().join("team-a-data/kept"), "x").unwrap();
    delete(&p, &v).await;
    let elsewhere = NfsProvider::new(
        Config {
            call_timeout: Duration::from_secs(10),
        },
        "another-installation",
    );
    let err = elsewhere
        .create_volume(&in_namespace(
            request("pvc-b", GI, retain),
            "team-a",
            "data",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition, "{err}");
    assert!(g.export_dir().join("team-a-data/kept").exists());
}

// --- Snapshots, restores and clones ---

/// Bytes that differ from chunk to chunk and are never all zeros.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Sets a file's or directory's modification time.
fn touch(path: &Path, secs: u64, nanos: u32) {
    std::fs::File::open(path)
        .unwrap()
        .set_modified(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
        .unwrap();
}

/// A tree with everything a copy must keep: files of several sizes (one of several MiB, one
/// with runs of zeros), nested directories, links, modes (set-id, read-only directory), owners
/// and times.
fn write_tree(root: &Path) {
    use std::os::unix::fs::{chown, symlink};
    let fs_write = |rel: &str, data: &[u8]| std::fs::write(root.join(rel), data).unwrap();
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    std::fs::create_dir(root.join("read-only")).unwrap();
    fs_write("empty", b"");
    fs_write("small.txt", b"hello\n");
    fs_write("a/medium.bin", &pattern(100_003, 1));
    fs_write("a/b/c/large.bin", &pattern(5 * MIB + 12_345, 2));
    let mut sparse = pattern(MIB, 3);
    sparse.extend(vec![0; 2 * MIB]);
    sparse.extend(pattern(1000, 4));
    sparse.extend(vec![0; MIB + 7]);
    fs_write("a/sparse.img", &sparse);
    fs_write("setuid", b"#!/bin/sh\n");
    fs_write("read-only/inside", b"x");
    symlink("b/c/large.bin", root.join("a/link")).unwrap();
    symlink("../nowhere", root.join("dangling")).unwrap();
    chmod(&root.join("small.txt"), 0o640);
    chmod(&root.join("a/b/c/large.bin"), 0o755);
    chmod(&root.join("setuid"), 0o4755);
    chmod(&root.join("a/b/c"), 0o750);
    chown(root.join("small.txt"), Some(1234), Some(5678)).unwrap();
    chown(root.join("a/b"), Some(1234), Some(5678)).unwrap();
    chmod(&root.join("read-only"), 0o555);
    touch(&root.join("small.txt"), 1_000_000_000, 123_456_789);
    touch(&root.join("a/b/c"), 1_100_000_000, 0);
    touch(&root.join("read-only"), 1_200_000_000, 5);
}

/// Asserts that `copy` holds the same tree as `original`: names, types, contents, link
/// targets, modes, owners, and modification times.
fn assert_same_tree(original: &Path, copy: &Path) {
    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        n.sort();
        n
    }
    fn compare(a: &Path, b: &Path, rel: &str) {
        let (ma, mb) = (
            std::fs::symlink_metadata(a).unwrap(),
            std::fs::symlink_metadata(b)
                .unwrap_or_else(|e| panic!("{rel:?} is not in the copy: {e}")),
        );
        assert_eq!(ma.file_type(), mb.file_type(), "type of {rel:?}");
        assert_eq!(
            (ma.uid(), ma.gid()),
            (mb.uid(), mb.gid()),
            "owner of {rel:?}"
        );
        if ma.file_type().is_symlink() {
            assert_eq!(
                std::fs::read_link(a).unwrap(),
                std::fs::read_link(b).unwrap(),
                "target of {rel:?}"
            );
            return;
        }
        assert_eq!(
            format!("{:o}", ma.mode() & 0o7777),
            format!("{:o}", mb.mode() & 0o7777),
            "mode of {rel:?}"
        );
        assert_eq!(
            (ma.mtime(), ma.mtime_nsec()),
            (mb.mtime(), mb.mtime_nsec()),
            "modification time of {rel:?}"
        );
        if ma.is_dir() {
            assert_eq!(names(a), names(b), "entries of {rel:?}");
            for name in names(a) {
                let child = if rel.is_empty() {
                    name.clone()
                } else {
                    format!("{rel}/{name}")
                };
                compare(&a.join(&name), &b.join(&name), &child);
            }
        } else {
            assert_eq!(ma.len(), mb.len(), "size of {rel:?}");
            assert!(
                std::fs::read(a).unwrap() == std::fs::read(b).unwrap(),
                "contents of {rel:?} differ"
            );
        }
    }
    compare(original, copy, "");
}

fn snapshot_request(name: &str, of: &Volume) -> SnapshotRequest {
    SnapshotRequest {
        name: name.into(),
        source_handle: of.handle.clone(),
        source_attributes: of.attributes.clone(),
        parameters: BTreeMap::new(),
    }
}

/// Asks for a snapshot until it is ready; returns it and every progress report seen on the way.
async fn ready_snapshot(p: &NfsProvider, req: &SnapshotRequest) -> (Snapshot, Vec<Progress>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let s = p.create_snapshot(req).await.unwrap();
        if s.ready {
            assert_eq!(s.progress, None, "a ready snapshot has no progress");
            return (s, seen);
        }
        seen.push(
            s.progress
                .expect("a snapshot being copied reports progress"),
        );
        assert!(Instant::now() < deadline, "not ready in time: {s:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Creates a volume from a content source, asking again while it answers InProgress; returns
/// it and how many times it answered InProgress.
async fn created(p: &NfsProvider, req: &CreateVolumeRequest) -> (Volume, usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut in_progress = 0;
    loop {
        match p.create_volume(req).await {
            Ok(v) => return (v, in_progress),
            Err(e) if e.kind == ErrorKind::InProgress => {
                assert!(e.progress.is_some(), "says how far: {e}");
                in_progress += 1;
                assert!(Instant::now() < deadline, "not done in time: {e}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("create_volume({}) failed: {e}", req.name),
        }
    }
}

/// Nothing of volume `name` anywhere on the share: no directory, no record, no copy.
async fn assert_no_volume(p: &NfsProvider, g: &Ganesha, name: &str) {
    let export = g.export_dir();
    for left in [
        export.join(name),
        export.join(".stowage/volumes").join(name),
        export.join(".stowage/scratch/volumes").join(name),
    ] {
        assert!(
            std::fs::symlink_metadata(&left).is_err(),
            "{} was left",
            left.display()
        );
    }
    assert!(
        p.list_volumes()
            .await
            .unwrap()
            .iter()
            .all(|v| v.name != name),
        "{name} is listed"
    );
}

fn from_snapshot(mut req: CreateVolumeRequest, id: &str) -> CreateVolumeRequest {
    req.content_source = Some(ContentSource::Snapshot {
        snapshot_id: id.into(),
    });
    req
}

fn from_volume(mut req: CreateVolumeRequest, of: &Volume) -> CreateVolumeRequest {
    req.content_source = Some(ContentSource::Volume {
        handle: of.handle.clone(),
        attributes: of.attributes.clone(),
    });
    req
}

#[tokio::test]
async fn snapshots_restores_and_clones_keep_the_tree_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let g = ganesha!(dir.path());
    let export = g.export_dir();
    let p = provider(Duration::from_secs(10));
    let params = class(&g, &[("capacity", "10Gi")]);
    let src = p
        .create_volume(&request("pvc-src", GI, params.clone()))
        .await
        .unwrap();
    let root = export.join("pvc-src");
    write_tree(&root);

    // Unknown class parameters, and a volume that does not exist.
    let mut odd = snapshot_request("snapshot-odd", &src);
    odd.parameters.insert("colour".into(), "blue".into());
    let err = p.create_snapshot(&odd).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
    let mut gone = snapshot_request("snapshot-gone", &src);
    gone.source_handle = src.handle.replace("pvc-src", "pvc-nope");
    let err = p.create_snapshot(&gone).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");

    let req = snapshot_request("snapshot-one", &src);
    let first = p.create_snapshot(&req).await.unwrap();
    assert!(!first.ready && first.progress.is_some(), "{first:?}");
    let (snap, _) = ready_snapshot(&p, &req).await;
    assert_eq!(
        snap.id,
        format!("{}#{}#snapshot#4.1#snapshot-one", g.server(), g.share())
    );
    assert_eq!((snap.size_bytes, &snap.source_handle), (GI, &src.handle));
    assert_eq!(first.id, snap.id);
    assert_same_tree(&root, &export.join(".stowage/snapshots/snapshot-one/data"));
    // Idempotent, and the id alone finds it, also for a provider that never saw it made.
    assert_eq!(p.create_snapshot(&req).await.unwrap(), snap);
    let restarted = provider(Duration::from_secs(10));
    assert_eq!(restarted.snapshot_info(&snap.id).await.unwrap(), snap);
    let other = p
        .create_volume(&request("pvc-other", GI, params.clone()))
        .await
        .unwrap();
    let err = p
        .create_snapshot(&snapshot_request("snapshot-one", &other))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::AlreadyExists, "{err}");

    // A restore into a bigger volume, and a clone, each a copy of the tree.
    let restore = from_snapshot(request("pvc-restored", 2 * GI, params.clone()), &snap.id);
    let (restored, waits) = created(&p, &restore).await;
    assert!(waits >= 1, "the first answer to a copy is InProgress");
    assert_eq!(restored.capacity_bytes, 2 * GI);
    assert_same_tree(&root, &export.join("pvc-restored"));
    let sparse = |v: &str| {
        std::fs::metadata(export.join(v).join("a/sparse.img"))
            .unwrap()
            .blocks()
    };
    assert!(
        sparse("pvc-restored") < sparse("pvc-src"),
        "runs of zeros stay holes"
    );
    let record = std::fs::read_link(export.join(".stowage/volumes/pvc-restored")).unwrap();
    let record = record.to_string_lossy();
    assert!(
        record.contains(&format!(r#""source":"snapshot:{}""#, snap.id))
            && !record.contains("filling"),
        "{record}"
    );
    assert_eq!(
        created(&p, &restore).await,
        (restored.clone(), 0),
        "a restore is idempotent"
    );
    let clone = from_volume(request("pvc-clone", 3 * GI, params.clone()), &src);
    let (cloned, _) = created(&p, &clone).await;
    assert_same_tree(&root, &export.join("pvc-clone"));
    assert_eq!(created(&p, &clone).await.0, cloned);
    // The same name from another source is another volume.
    let err = p
        .create_volume(&from_volume(
            request("pvc-clone", 3 * GI, params.clone()),
            &other,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::AlreadyExists, "{err}");

    // Copies are independent of their source.
    std::fs::write(export.join("pvc-restored/small.txt"), "changed").unwrap();
    assert_eq!(
        std::fs::read(export.join(".stowage/snapshots/snapshot-one/data/small.txt")).unwrap(),
        b"hello\n"
    );
    // Their sizes are accounted like any volume's: 1 + 1 + 2 + 3 of 10 GiB.
    let room = p.capacity(&params).await.unwrap();
    assert_eq!(room[0].available_bytes, 3 * GI);

    // Smaller than the source: refused before anything is made.
    let small = from_snapshot(request("pvc-small", GI / 2, params.clone()), &snap.id);
    let err = p.create_volume(&small).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
    assert_no_volume(&p, &g, "pvc-small").await;
    let small = from_volume(request("pvc-small", GI / 2, params.clone()), &src);
    let err = p.create_volume(&small).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
    assert_no_volume(&p, &g, "pvc-small").await;

    // Deleting the snapshot removes it; restoring from it is then NotFound.
    p.delete_snapshot(&snap.id).await.unwrap();
    assert!(!export.join(".stowage/snapshots/snapshot-one").exists());
    let err = p.snapshot_info(&snap.id).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    p.delete_snapshot(&snap.id).await.unwrap();
    p.delete_snapshot("not-an-nfs-snapshot").await.unwrap();
    let late = from_snapshot(request("pvc-late", GI, params.clone()), &snap.id);
    let err = p.create_volume(&late).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    assert_no_volume(&p, &g, "pvc-late").await;

    for v in [&restored, &cloned, &other, &src] {
        delete(&p, v).await;
    }
    for v in ["pvc-restored", "pvc-clone", "pvc-src"] {
        assert_no_volume(&p, &g, v).await;
    }
    for scratch in ["snapshots", "volumes"] {
        let left = std::fs::read_dir(export.join(".stowage/scratch").join(scratch))
            .unwrap()
            .count();
        assert_eq!(left, 0, "scratch/{scratch} is empty");
    }
}

#[tokio::test]
async fn a_long_copy_reports_progress_and_a_delete_during_a_restore_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let g = ganesha!(dir.path());
    let export = g.export_dir();
    let p = provider(Duration::from_secs(10));
    let params = class(&g, &[]);
    let big = p
        .create_volume(&request("pvc-big", GI, params.clone()))
        .await
        .unwrap();
    const FILES: usize = 48;
    for i in 0..FILES {
        let sub = export.join(format!("pvc-big/d{}", i % 4));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("f{i}")), pattern(MIB, i as u64 + 10)).unwrap();
    }
    // And a tree wider than the walkers a copy may use at once: 4 × 4 × 4 directories.
    for i in 0..64 {
        let leaf = export.join(format!(
            "pvc-big/wide/a{}/b{}/c{}",
            i / 16,
            i / 4 % 4,
            i % 4
        ));
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(leaf.join("f"), format!("leaf {i}")).unwrap();
    }
    let total = (FILES * MIB) as i64
        + (0..64)
            .map(|i| format!("leaf {i}").len() as i64)
            .sum::<i64>();

    let started = Instant::now();
    let (snap, seen) = ready_snapshot(&p, &snapshot_request("snapshot-big", &big)).await;
    let took = started.elapsed();
    eprintln!(
        "snapshot of {} MiB in {FILES} files and 85 small directories: {took:?}, {:.0} MB/s, {} progress reports",
        total >> 20,
        total as f64 / 1e6 / took.as_secs_f64(),
        seen.len()
    );
    assert_eq!(snap.size_bytes, GI);
    for pair in seen.windows(2) {
        assert!(pair[0].done_bytes <= pair[1].done_bytes, "{seen:?}");
    }
    for progress in &seen {
        assert!(
            progress.total_bytes == 0 || progress.total_bytes == total,
            "the total is the tree's: {progress:?}"
        );
        assert!(progress.done_bytes <= progress.total_bytes, "{progress:?}");
    }
    assert!(
        seen.iter()
            .any(|p| p.total_bytes == total && p.done_bytes > 0 && p.done_bytes < total),
        "a copy of {} MiB shows it half done at some call: {seen:?}",
        total >> 20
    );
    assert_same_tree(
        &export.join("pvc-big"),
        &export.join(".stowage/snapshots/snapshot-big/data"),
    );

    // A restore deleted while it copies: the copy stops, and nothing of it stays, also later.
    let restore = from_snapshot(request("pvc-cut", GI, params.clone()), &snap.id);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let err = p.create_volume(&restore).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::InProgress, "{err}");
        let progress = err.progress.expect("a copy under way says how far it got");
        if progress.done_bytes > 0 {
            assert!(progress.done_bytes < total, "{err}");
            break;
        }
        assert!(Instant::now() < deadline, "{err}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let record = std::fs::read_link(export.join(".stowage/volumes/pvc-cut")).unwrap();
    assert!(
        record.to_string_lossy().contains(r#""filling":true"#),
        "{}",
        record.display()
    );
    p.delete_volume(&DeleteVolumeRequest {
        handle: format!("{}#{}#pvc-cut#pvc-cut", g.server(), g.share()),
        attributes: BTreeMap::new(),
    })
    .await
    .unwrap();
    assert_no_volume(&p, &g, "pvc-cut").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_no_volume(&p, &g, "pvc-cut").await;

    // Asked again, it starts over and completes.
    let (again, _) = created(&p, &restore).await;
    assert_same_tree(&export.join("pvc-big"), &export.join("pvc-cut"));
    delete(&p, &again).await;
    p.delete_snapshot(&snap.id).await.unwrap();
    delete(&p, &big).await;
}

#[tokio::test]
async fn restores_and_clones_across_shares_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = ganesha!(&dir.path().join("a"));
    let b = ganesha!(&dir.path().join("b"));
    let p = provider(Duration::from_secs(10));
    let src = p
        .create_volume(&request("pvc-on-a", GI, class(&a, &[])))
        .await
        .unwrap();
    std::fs::write(a.export_dir().join("pvc-on-a/data"), "x").unwrap();
    let (snap, _) = ready_snapshot(&p, &snapshot_request("snapshot-on-a", &src)).await;
    for req in [
        from_snapshot(request("pvc-on-b", GI, class(&b, &[])), &snap.id),
        from_volume(request("pvc-on-b", GI, class(&b, &[])), &src),
    ] {
        let err = p.create_volume(&req).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
        assert!(err.message.contains("within one share"), "{err}");
        assert_no_volume(&p, &b, "pvc-on-b").await;
    }
    p.delete_snapshot(&snap.id).await.unwrap();
    delete(&p, &src).await;
}

/// Leaves what a restart leaves of a restore under way: a record saying the copy is filling
/// the volume's directory.
fn interrupted_restore(g: &Ganesha, name: &str, snapshot_id: &str) {
    let target = format!(
        r#"{{"subDir":"{name}","bytes":{GI},"onDelete":"delete","owner":"test-installation","claimNamespace":"team-a","source":"snapshot:{snapshot_id}","filling":true}}"#
    );
    std::os::unix::fs::symlink(target, g.export_dir().join(".stowage/volumes").join(name)).unwrap();
}

#[tokio::test]
async fn copies_cut_by_a_restart_start_again_from_an_empty_scratch() {
    let dir = tempfile::tempdir().unwrap();
    let g = ganesha!(dir.path());
    let export = g.export_dir();
    let params = class(&g, &[]);
    let before = provider(Duration::from_secs(10));
    let src = before
        .create_volume(&request("pvc-src", GI, params.clone()))
        .await
        .unwrap();
    std::fs::create_dir(export.join("pvc-src/dir")).unwrap();
    std::fs::write(export.join("pvc-src/dir/file"), pattern(300_000, 9)).unwrap();
    // A snapshot copy cut short: its scratch holds a partial (here: wrong) tree.
    let cut = export.join(".stowage/scratch/snapshots/snapshot-cut/data");
    std::fs::create_dir_all(&cut).unwrap();
    std::fs::write(cut.join("junk"), "left by the copy a restart cut").unwrap();

    let p = provider(Duration::from_secs(10));
    let (snap, _) = ready_snapshot(&p, &snapshot_request("snapshot-cut", &src)).await;
    assert_same_tree(
        &export.join("pvc-src"),
        &export.join(".stowage/snapshots/snapshot-cut/data"),
    );
    assert!(
        !export
            .join(".stowage/scratch/snapshots/snapshot-cut")
            .exists()
    );

    // A restore cut short, with a partial copy in its scratch: asked again, it copies anew.
    interrupted_restore(&g, "pvc-again", &snap.id);
    let scratch = export.join(".stowage/scratch/volumes/pvc-again");
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::write(scratch.join("junk"), "partial").unwrap();
    // A restore whose copy was moved into place just before the restart: it is done.
    interrupted_restore(&g, "pvc-placed", &snap.id);
    std::fs::create_dir(export.join("pvc-placed")).unwrap();
    std::fs::write(export.join("pvc-placed/finished"), "the copy").unwrap();

    let restarted = provider(Duration::from_secs(10));
    let again = from_snapshot(request("pvc-again", GI, params.clone()), &snap.id);
    let (v, waits) = created(&restarted, &again).await;
    assert!(waits >= 1, "the copy ran again");
    assert_same_tree(&export.join("pvc-src"), &export.join("pvc-again"));
    assert!(!scratch.exists());
    let placed = from_snapshot(request("pvc-placed", GI, params.clone()), &snap.id);
    let (w, waits) = created(&restarted, &placed).await;
    assert_eq!(waits, 0, "nothing left to copy");
    assert_eq!(
        std::fs::read(export.join("pvc-placed/finished")).unwrap(),
        b"the copy"
    );
    for name in ["pvc-again", "pvc-placed"] {
        let record = std::fs::read_link(export.join(".stowage/volumes").join(name)).unwrap();
        assert!(
            !record.to_string_lossy().contains("filling"),
            "{name}: {}",
            record.display()
        );
    }
    for v in [&v, &w, &src] {
        delete(&restarted, v).await;
    }
    restarted.delete_snapshot(&snap.id).await.unwrap();
}
