//! The NFS provider speaking NFSv3 to nfs-ganesha. NFSv3 needs rpcbind, which cannot be bound
//! to loopback only, so `scripts/test.sh` runs this test inside a private network namespace
//! (only `lo`) with rpcbind started there, and sets `STOWAGE_NFSV3_NAMESPACE=1`. Outside such a
//! namespace the test says it was skipped; the script's own run is what CI counts.

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

fn in_namespace() -> bool {
    if std::env::var("STOWAGE_NFSV3_NAMESPACE").is_ok_and(|v| v == "1") {
        return true;
    }
    eprintln!(
        "SKIPPED: NFSv3 runs in a private network namespace with rpcbind; scripts/test.sh runs it"
    );
    false
}

fn provider() -> NfsProvider {
    NfsProvider::new(
        Config {
            enabled: true,
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
async fn nfsv3_passes_the_conformance_kit_and_survives_a_server_restart() {
    if !in_namespace() {
        return;
    }
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
