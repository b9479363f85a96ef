//! The NFS provider speaking NFSv3 to nfs-ganesha. NFSv3 needs rpcbind, which cannot be bound
//! to loopback only, so `scripts/test.sh` runs this test inside a private network namespace
//! (only `lo`) with rpcbind started there. The test is `#[ignore]`d so that a plain `cargo test`
//! reports it as not run (rather than passing it); the script runs it with `--ignored`, and a
//! run outside such a namespace fails.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use stowage_provider::conformance::{Fixture, run};
use stowage_provider::{
    AccessMode, ClaimRef, CreateVolumeRequest, DeleteVolumeRequest, NodeInfo, Provider,
    TopologyRequirement,
};
use stowage_provider_nfs::testing::{Ganesha, GaneshaOptions};
use stowage_provider_nfs::{Config, NfsProvider};

/// The script sets this inside the namespace it made for this test.
fn in_namespace() -> bool {
    std::env::var("STOWAGE_NFSV3_NAMESPACE").is_ok_and(|v| v == "1")
}

fn provider() -> NfsProvider {
    NfsProvider::new(
        Config {
            call_timeout: Duration::from_secs(5),
        },
        "v3-test",
    )
}

fn v3_class(g: &Ganesha) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("server".to_string(), "127.0.0.1".to_string()),
        ("share".to_string(), g.share()),
        ("nfsvers".to_string(), "3".to_string()),
        (
            "subDir".to_string(),
            "${pvc.metadata.namespace}/${pv.metadata.name}".to_string(),
        ),
    ])
}

#[tokio::test]
#[ignore = "needs a private network namespace with rpcbind: ./scripts/test.sh runs it"]
async fn nfsv3_passes_the_conformance_kit_and_survives_a_server_restart() {
    assert!(
        in_namespace(),
        "run in a private network namespace with rpcbind (as ./scripts/test.sh does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut g = Ganesha::start_with(
        dir.path(),
        GaneshaOptions {
            v3: true,
            port: Some(2049),
        },
    )
    .expect("nfs-ganesha with NFSv3");
    let make = || -> Arc<dyn Provider> { Arc::new(provider()) };
    let mut fixture = Fixture::new(NodeInfo {
        name: "node-1".into(),
        ..Default::default()
    });
    fixture.parameters = v3_class(&g);
    let mut retained = v3_class(&g);
    retained.insert("onDelete".into(), "retain".into());
    fixture.other_parameters = Some(retained);
    let mut bad = v3_class(&g);
    bad.insert("nfsvers".into(), "2".into());
    fixture.bad_parameters = vec![bad];
    fixture.skips = vec![
        (
            "attach_to_an_unknown_node_is_not_found",
            "every node mounts NFS itself; the provider keeps no list of nodes",
        ),
        (
            "too_large_is_resource_exhausted_and_creates_nothing",
            "the NFSv3 run checks the protocol; capacity is checked over NFSv4.1",
        ),
    ];
    run(make, fixture).await.assert_passed();

    let p = provider();
    let class = v3_class(&g);
    let request = |name: &str| CreateVolumeRequest {
        name: name.into(),
        capacity_bytes: 1 << 30,
        access_modes: vec![AccessMode::ReadWriteMany],
        block: false,
        parameters: class.clone(),
        mount_options: vec![],
        topology: TopologyRequirement::default(),
        claim: ClaimRef {
            namespace: "v3".into(),
            name: name.into(),
            uid: "u".into(),
            annotations: BTreeMap::new(),
        },
        content_source: None,
        mutable_parameters: Default::default(),
    };
    let a = p.create_volume(&request("pvc-v3-a")).await.unwrap();
    assert!(g.export_dir().join("v3/pvc-v3-a").is_dir());
    assert_eq!(a.attributes["nfsvers"], "3");
    g.kill();
    g.start_again().unwrap();
    // The first request after the restart may fail as Temporary (the connection was lost
    // with a non-idempotent request in flight); the controllers retry, and so does this.
    let mut attempts = 0;
    let b = loop {
        attempts += 1;
        match p.create_volume(&request("pvc-v3-b")).await {
            Ok(v) => break v,
            Err(e) if e.is_temporary() && attempts < 5 => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("after {attempts} attempts: {e}"),
        }
    };
    assert!(g.export_dir().join("v3/pvc-v3-b").is_dir());
    for v in [a, b] {
        p.delete_volume(&DeleteVolumeRequest {
            handle: v.handle,
            attributes: v.attributes,
        })
        .await
        .unwrap();
    }
    assert!(!g.export_dir().join("v3/pvc-v3-a").exists());
}
