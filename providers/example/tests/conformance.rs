//! The example provider against a real directory: the SDK's conformance kit.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use stowage_provider::conformance::{Fixture, Probed, probe_with, run};
use stowage_provider::{NodeInfo, Provider};
use stowage_provider_example::ExampleProvider;

#[tokio::test]
async fn the_example_provider_passes_the_conformance_kit() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    // A fresh instance per call: the kit uses a second one as "after a restart".
    let make = move || -> Arc<dyn Provider> { Arc::new(ExampleProvider::open(&root).unwrap()) };

    let mut fixture = Fixture::new(NodeInfo {
        name: "node-1".into(),
        ..Default::default()
    });
    fixture.bad_parameters = vec![
        BTreeMap::from([("preallocate".into(), "maybe".into())]),
        BTreeMap::from([("colour".into(), "blue".into())]),
    ];
    fixture.other_parameters = Some(BTreeMap::from([("preallocate".into(), "true".into())]));
    // The probe looks at the backend itself: the image file and its size.
    fixture.probe = Some(probe_with(|v| async move {
        let path = v.attributes.get("path")?;
        let meta = std::fs::metadata(Path::new(path)).ok()?;
        Some(Probed {
            size_bytes: Some(meta.len() as i64),
        })
    }));
    // What this provider cannot be checked for, and why: the report shows these, and a
    // skip not declared here fails the run.
    fixture.skips = vec![
        (
            "too_large_is_resource_exhausted_and_creates_nothing",
            "the example provider has no capacity limit",
        ),
        (
            "attach_to_an_unknown_node_is_not_found",
            "the example provider keeps no list of nodes",
        ),
    ];

    run(make, fixture).await.assert_passed();
}
