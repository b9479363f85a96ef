//! Create, read, update, patch and delete, with the API machinery Kubernetes clients rely on.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn every_kind_supports_the_full_object_lifecycle() {
    let s = Server::start().await;
    let cases = [
        (SC.to_string(), storage_class("sc1", "example.com/x")),
        (PV.to_string(), host_path_pv("pv1", "1Gi")),
        (pvcs("ns1"), pvc("c1", "1Gi")),
        (
            VA.to_string(),
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment",
                   "metadata": {"name": "va1"},
                   "spec": {"attacher": "example.com/x", "nodeName": "n1", "source": {"persistentVolumeName": "pv1"}}}),
        ),
        (
            NODES.to_string(),
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}),
        ),
        (
            pods("ns1"),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1"},
                   "spec": {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "c1"}}]}}),
        ),
        (
            events("ns1"),
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"},
                   "involvedObject": {"kind": "Pod", "name": "p1", "namespace": "ns1"},
                   "reason": "Test", "message": "hello", "type": "Normal"}),
        ),
        (
            leases("stowage-node-lease"),
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "n1"},
                   "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40}}),
        ),
    ];
    for (collection, body) in cases {
        let name = body["metadata"]["name"].as_str().unwrap().to_string();
        let item = format!("{collection}/{name}");
        let (code, created) = s.post(&collection, &body).await;
        assert_eq!(code, StatusCode::CREATED, "create {collection}: {created}");
        assert!(
            created["metadata"]["uid"]
                .as_str()
                .is_some_and(|u| u.len() == 36)
        );
        assert!(created["metadata"]["creationTimestamp"].is_string());
        assert_eq!(created["metadata"]["generation"], 1);
        let rv = rv_of(&created);

        let (code, got) = s.get(&item).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(got["metadata"]["uid"], created["metadata"]["uid"]);
        assert_eq!(
            got["metadata"]["creationTimestamp"],
            created["metadata"]["creationTimestamp"]
        );

        let (code, list) = s.get(&collection).await;
        assert_eq!(code, StatusCode::OK);
        // Controllers may have added objects of their own (events), so look for ours.
        assert!(
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["metadata"]["name"] == name.as_str()),
            "{collection}"
        );
        assert!(list["kind"].as_str().unwrap().ends_with("List"));

        // Controllers may update the object meanwhile (a volume's phase), so this update does
        // not name a resourceVersion; conflicts have their own test.
        let mut changed = got.clone();
        changed["metadata"]["labels"] = json!({"touched": "yes"});
        changed["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        let (code, updated) = s.put(&item, &changed).await;
        assert_eq!(code, StatusCode::OK, "update {item}: {updated}");
        assert!(rv_of(&updated) > rv, "resourceVersion grows");
        assert_eq!(updated["metadata"]["labels"]["touched"], "yes");

        let (code, patched) = s
            .patch(
                &item,
                "application/merge-patch+json",
                &json!({"metadata": {"annotations": {"a": "b"}}}),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "patch {item}: {patched}");
        assert_eq!(patched["metadata"]["annotations"]["a"], "b");
        assert_eq!(patched["metadata"]["labels"]["touched"], "yes");

        let (code, _) = s.delete(&item).await;
        assert_eq!(code, StatusCode::OK);
        // Claims and volumes carry protection finalizers; their controller lifts them.
        let gone = s
            .eventually(
                Duration::from_secs(10),
                &format!("{item} to go"),
                || async {
                    let (code, v) = s.get(&item).await;
                    (code == StatusCode::NOT_FOUND).then_some(v)
                },
            )
            .await;
        assert_eq!(gone["reason"], "NotFound");
    }
}

#[tokio::test]
async fn a_stale_resource_version_is_a_conflict() {
    let s = Server::start().await;
    let (_, created) = s.post(&pvcs("a"), &pvc("c", "1Gi")).await;
    let mut first = created.clone();
    first["metadata"]["labels"] = json!({"v": "1"});
    let (code, _) = s.put(&format!("{}/c", pvcs("a")), &first).await;
    assert_eq!(code, StatusCode::OK);
    // A second writer still holding the old version loses.
    let mut second = created.clone();
    second["metadata"]["labels"] = json!({"v": "2"});
    let (code, status) = s.put(&format!("{}/c", pvcs("a")), &second).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert_eq!(status["reason"], "Conflict");
    // The same through a patch that names the version.
    let (code, _) = s
        .patch(
            &format!("{}/c", pvcs("a")),
            "application/merge-patch+json",
            &json!({"metadata": {"resourceVersion": created["metadata"]["resourceVersion"], "labels": {"v": "3"}}}),
        )
        .await;
    assert_eq!(code, StatusCode::CONFLICT);
    // Without a version, the write applies to the newest object.
    let mut blind = second.clone();
    blind["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let (code, v) = s.put(&format!("{}/c", pvcs("a")), &blind).await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["metadata"]["labels"]["v"], "2");
}

#[tokio::test]
async fn an_unchanged_write_keeps_its_resource_version() {
    let s = Server::start().await;
    let (_, created) = s.post(SC, &storage_class("same", "example.com/x")).await;
    let (code, again) = s.put(&format!("{SC}/same"), &created).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(rv_of(&again), rv_of(&created));
}

#[tokio::test]
async fn generation_counts_spec_changes_only() {
    let s = Server::start().await;
    let (_, pv) = s.post(PV, &host_path_pv("g", "1Gi")).await;
    let item = format!("{PV}/g");
    let (_, labelled) = s
        .patch(
            &item,
            "application/merge-patch+json",
            &json!({"metadata": {"labels": {"a": "b"}}}),
        )
        .await;
    assert_eq!(labelled["metadata"]["generation"], 1);
    let (_, resized) = s
        .patch(
            &item,
            "application/merge-patch+json",
            &json!({"spec": {"capacity": {"storage": "2Gi"}}}),
        )
        .await;
    assert_eq!(resized["metadata"]["generation"], 2);
    assert!(rv_of(&resized) > rv_of(&pv));
}

#[tokio::test]
async fn finalizers_hold_a_deleted_object_until_removed() {
    let s = Server::start().await;
    let mut body = pvc("held", "1Gi");
    body["metadata"]["finalizers"] = json!(["example.com/hold"]);
    s.post(&pvcs("f"), &body).await;
    let item = format!("{}/held", pvcs("f"));
    let (code, marked) = s.delete(&item).await;
    assert_eq!(code, StatusCode::OK);
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    let (code, still) = s.get(&item).await;
    assert_eq!(code, StatusCode::OK);
    assert!(still["metadata"]["deletionTimestamp"].is_string());
    // No new finalizer while deleting.
    let (code, refused) = s
        .patch(
            &item,
            "application/json-patch+json",
            &json!([{"op": "add", "path": "/metadata/finalizers/-", "value": "example.com/another"}]),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    // Removing the last finalizer completes the delete.
    let (code, _) = s
        .patch(
            &item,
            "application/merge-patch+json",
            &json!({"metadata": {"finalizers": null}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let (code, _) = s.get(&item).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn generate_name_makes_unique_names() {
    let s = Server::start().await;
    let mut names = std::collections::HashSet::new();
    for _ in 0..20 {
        let body = json!({"metadata": {"generateName": "claim-"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
        let (code, v) = s.post(&pvcs("g"), &body).await;
        assert_eq!(code, StatusCode::CREATED, "{v}");
        let name = v["metadata"]["name"].as_str().unwrap().to_string();
        assert!(
            name.starts_with("claim-") && name.len() == "claim-".len() + 5,
            "{name}"
        );
        assert!(names.insert(name));
    }
}

#[tokio::test]
async fn status_and_spec_are_written_through_separate_doors() {
    let s = Server::start().await;
    s.post(&pvcs("st"), &pvc("c", "1Gi")).await;
    let item = format!("{}/c", pvcs("st"));
    // The main resource ignores status.
    let (_, v) = s
        .patch(
            &item,
            "application/merge-patch+json",
            &json!({"status": {"phase": "Bound"}}),
        )
        .await;
    assert_eq!(v["status"]["phase"], "Pending");
    // /status ignores spec and metadata, and writes status.
    let (code, v) = s
        .patch(
            &format!("{item}/status"),
            "application/merge-patch+json",
            &json!({"status": {"phase": "Lost"}, "spec": {"volumeName": "sneaky"}, "metadata": {"labels": {"x": "y"}}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["status"]["phase"], "Lost");
    assert!(v["spec"]["volumeName"].is_null());
    assert!(v["metadata"]["labels"].is_null());
    let (code, got) = s.get(&format!("{item}/status")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(got["status"]["phase"], "Lost");
    // Kinds without a status subresource have no /status.
    s.post(SC, &storage_class("x", "a.b/c")).await;
    let (code, _) = s.get(&format!("{SC}/x/status")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn immutable_fields_cannot_change() {
    let s = Server::start().await;
    let mut sc = storage_class("fixed", "example.com/x");
    sc["parameters"] = json!({"type": "ssd"});
    s.post(SC, &sc).await;
    for patch in [
        json!({"parameters": {"type": "hdd"}}),
        json!({"provisioner": "example.com/y"}),
        json!({"reclaimPolicy": "Retain"}),
    ] {
        let (code, v) = s
            .patch(
                &format!("{SC}/fixed"),
                "application/merge-patch+json",
                &patch,
            )
            .await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{patch}: {v}");
        assert_eq!(v["reason"], "Invalid");
    }
    let (code, _) = s
        .patch(
            &format!("{SC}/fixed"),
            "application/merge-patch+json",
            &json!({"allowVolumeExpansion": true}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "allowVolumeExpansion is mutable");

    // Claims of a class that allows expansion may grow.
    let mut grow = storage_class("grow", "example.com/elsewhere");
    grow["allowVolumeExpansion"] = json!(true);
    s.post(SC, &grow).await;
    let mut pv = host_path_pv("pv-a", "1Gi");
    pv["spec"]["storageClassName"] = json!("grow");
    s.post(PV, &pv).await;
    let mut claim = pvc("c", "1Gi");
    claim["spec"]["storageClassName"] = json!("grow");
    s.post(&pvcs("im"), &claim).await;
    let item = format!("{}/c", pvcs("im"));
    let (code, v) = s
        .patch(
            &item,
            "application/merge-patch+json",
            &json!({"spec": {"accessModes": ["ReadWriteMany"]}}),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    // volumeName may be set while unset (pre-binding), once.
    let (code, _) = s
        .patch(
            &item,
            "application/merge-patch+json",
            &json!({"spec": {"volumeName": "pv-a"}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let (code, _) = s
        .patch(
            &item,
            "application/merge-patch+json",
            &json!({"spec": {"volumeName": "pv-b"}}),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    // Requests can grow only for bound claims (the binder binds it to pv-a), and never shrink.
    s.eventually(Duration::from_secs(10), "the claim to bind", || async {
        let (_, v) = s.get(&item).await;
        (v["status"]["phase"] == "Bound").then_some(())
    })
    .await;
    let (code, grown) = s
        .patch(
            &item,
            "application/merge-patch+json",
            &json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{grown}");
    let (code, _) = s
        .patch(
            &item,
            "application/merge-patch+json",
            &json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}}}),
        )
        .await;
    assert_eq!(
        code,
        StatusCode::UNPROCESSABLE_ENTITY,
        "claims never shrink"
    );
    // An unbound claim of the same class passes admission but fails validation: there is no
    // volume to grow yet.
    let mut unbound = pvc("unbound", "1Gi");
    unbound["spec"]["storageClassName"] = json!("grow");
    s.post(&pvcs("im"), &unbound).await;
    let (code, _) = s
        .patch(
            &format!("{}/unbound", pvcs("im")),
            "application/merge-patch+json",
            &json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}}),
        )
        .await;
    assert_eq!(
        code,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unbound claims cannot grow"
    );
}

#[tokio::test]
async fn defaults_are_filled_in() {
    let s = Server::start().await;
    let (_, sc) = s.post(SC, &storage_class("plain", "example.com/x")).await;
    assert_eq!(sc["reclaimPolicy"], "Delete");
    assert_eq!(sc["volumeBindingMode"], "Immediate");
    let (_, pv) = s.post(PV, &host_path_pv("d", "1Gi")).await;
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(pv["status"]["phase"], "Pending");
    let (_, c) = s.post(&pvcs("d"), &pvc("c", "1Gi")).await;
    assert_eq!(c["spec"]["volumeMode"], "Filesystem");
    assert_eq!(c["status"]["phase"], "Pending");
    assert_eq!(c["spec"]["resources"]["requests"]["storage"], "1Gi");
}

#[tokio::test]
async fn claims_without_a_class_get_the_single_default_class() {
    let s = Server::start_with(&["--no-default-class"]).await;
    let no_class = json!({"metadata": {"name": "x"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
    let (_, c) = s.post(&pvcs("d"), &no_class).await;
    assert!(
        c["spec"]["storageClassName"].is_null(),
        "no default class yet"
    );

    let mut gold = storage_class("gold", "example.com/x");
    gold["metadata"]["annotations"] =
        json!({"storageclass.kubernetes.io/is-default-class": "true"});
    s.post(SC, &gold).await;
    let mut body = no_class.clone();
    body["metadata"]["name"] = json!("y");
    let (_, c) = s.post(&pvcs("d"), &body).await;
    assert_eq!(c["spec"]["storageClassName"], "gold");
    // An explicit "" means no class, default or not.
    let (_, c) = s.post(&pvcs("d"), &pvc("z", "1Gi")).await;
    assert_eq!(c["spec"]["storageClassName"], "");
    // Two defaults: ambiguous, so none is chosen.
    let mut silver = storage_class("silver", "example.com/x");
    silver["metadata"]["annotations"] =
        json!({"storageclass.kubernetes.io/is-default-class": "true"});
    s.post(SC, &silver).await;
    body["metadata"]["name"] = json!("w");
    let (_, c) = s.post(&pvcs("d"), &body).await;
    assert!(c["spec"]["storageClassName"].is_null());
}

#[tokio::test]
async fn patch_formats_all_work() {
    let s = Server::start().await;
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "finalizers": ["a.io/x"]},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    s.post(&pods("pf"), &pod).await;
    let item = format!("{}/p", pods("pf"));
    let (code, v) = s
        .patch(
            &item,
            "application/json-patch+json",
            &json!([{"op": "add", "path": "/metadata/labels", "value": {"a": "1"}}]),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    let (code, v) = s
        .patch(&item, "application/strategic-merge-patch+json",
            &json!({"metadata": {"finalizers": ["a.io/y"]}, "spec": {"containers": [{"name": "c", "image": "alpine"}]}}))
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(
        v["metadata"]["finalizers"],
        json!(["a.io/x", "a.io/y"]),
        "finalizers merge as a set"
    );
    assert_eq!(v["spec"]["containers"][0]["image"], "alpine");
    assert_eq!(v["metadata"]["labels"]["a"], "1");
    // A failing test operation is refused and changes nothing.
    let (code, _) = s
        .patch(
            &item,
            "application/json-patch+json",
            &json!([{"op": "test", "path": "/metadata/labels/a", "value": "2"}]),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    let (code, _) = s.patch(&item, "text/plain", &json!({})).await;
    assert_eq!(code, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn server_side_apply_creates_merges_and_prunes_its_own_fields() {
    let s = Server::start().await;
    let item = format!("{}/applied", pvcs("ssa"));
    let apply = |labels: serde_json::Value| {
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": "applied", "labels": labels},
               "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, "storageClassName": ""}})
    };
    let url = format!("{item}?fieldManager=tester");
    let (code, v) = s
        .patch(
            &url,
            "application/apply-patch+yaml",
            &apply(json!({"a": "1", "b": "2"})),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    assert_eq!(v["metadata"]["managedFields"][0]["manager"], "tester");
    // Another writer adds its own label.
    s.patch(
        &item,
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"other": "x"}}}),
    )
    .await;
    // Re-applying without `b` removes `b` (ours) but keeps `other` (not ours).
    let (code, v) = s
        .patch(
            &url,
            "application/apply-patch+yaml",
            &apply(json!({"a": "1"})),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["metadata"]["labels"], json!({"a": "1", "other": "x"}));
    // Apply needs a field manager.
    let (code, _) = s
        .patch(&item, "application/apply-patch+yaml", &apply(json!({})))
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn dry_run_validates_without_storing() {
    let s = Server::start().await;
    let (code, v) = s
        .post(&format!("{}?dryRun=All", pvcs("dr")), &pvc("ghost", "1Gi"))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let (code, _) = s.get(&format!("{}/ghost", pvcs("dr"))).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _) = s
        .post(
            &format!("{}?dryRun=All", pvcs("dr")),
            &pvc("Bad_Name", "1Gi"),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn put_creates_leases_and_events_but_not_claims() {
    let s = Server::start().await;
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "n9"},
        "spec": {"holderIdentity": "n9", "leaseDurationSeconds": 40}});
    let (code, _) = s
        .put(&format!("{}/n9", leases("stowage-node-lease")), &lease)
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, _) = s.put(&format!("{}/c", pvcs("p")), &pvc("c", "1Gi")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn delete_preconditions_are_honoured() {
    let s = Server::start().await;
    let (_, v) = s.post(SC, &storage_class("pre", "example.com/x")).await;
    let resp = s
        .client
        .delete(s.url(&format!("{SC}/pre")))
        .json(&json!({"preconditions": {"uid": "not-the-uid"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let resp = s
        .client
        .delete(s.url(&format!("{SC}/pre")))
        .json(&json!({"preconditions": {"uid": v["metadata"]["uid"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn namespaces_need_no_object() {
    let s = Server::start().await;
    let (code, _) = s.post(&pvcs("brand-new-ns"), &pvc("c", "1Gi")).await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, ns) = s.get("/api/v1/namespaces/brand-new-ns").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(ns["status"]["phase"], "Active");
    let (_, list) = s.get("/api/v1/namespaces").await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"brand-new-ns") && names.contains(&"default"));
    let (code, _) = s.post(&pvcs("Not_Valid"), &pvc("c", "1Gi")).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
}
