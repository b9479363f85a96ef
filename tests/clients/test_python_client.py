"""The official Kubernetes Python client (kubernetes==37.0.1), unchanged, against Stowage:
create, get, list, replace, patch, delete and watch on every kind."""

import functools
import threading
import time

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


@pytest.fixture(scope="module")
def api_client(server):
    return config.new_client_from_config(config_file=server.kubeconfig())


def meta(name):
    return client.V1ObjectMeta(name=name, labels={"suite": "python"})


def pvc_body(name, size="1Gi"):
    return client.V1PersistentVolumeClaim(
        metadata=meta(name),
        spec=client.V1PersistentVolumeClaimSpec(
            access_modes=["ReadWriteOnce"],
            resources=client.V1VolumeResourceRequirements(requests={"storage": size}),
            storage_class_name="",
        ),
    )


def kinds(api_client, ns):
    """(name, create, read, list, replace, patch, delete, body) per kind."""
    core = client.CoreV1Api(api_client)
    storage = client.StorageV1Api(api_client)
    coordination = client.CoordinationV1Api(api_client)

    def namespaced(fn):
        # wraps() keeps the docstring, from which watch.Watch learns the return type.
        @functools.wraps(fn)
        def call(*a, **kw):
            return fn(*a, namespace=ns, **kw)

        return call

    return [
        (
            "sc",
            storage.create_storage_class,
            storage.read_storage_class,
            storage.list_storage_class,
            storage.replace_storage_class,
            storage.patch_storage_class,
            storage.delete_storage_class,
            client.V1StorageClass(metadata=meta("py-" + ns), provisioner="example.com/python"),
        ),
        (
            "pv",
            core.create_persistent_volume,
            core.read_persistent_volume,
            core.list_persistent_volume,
            core.replace_persistent_volume,
            core.patch_persistent_volume,
            core.delete_persistent_volume,
            client.V1PersistentVolume(
                metadata=meta("py-" + ns),
                spec=client.V1PersistentVolumeSpec(
                    capacity={"storage": "1Gi"},
                    access_modes=["ReadWriteOnce"],
                    host_path=client.V1HostPathVolumeSource(path="/srv/py"),
                ),
            ),
        ),
        (
            "pvc",
            namespaced(core.create_namespaced_persistent_volume_claim),
            namespaced(core.read_namespaced_persistent_volume_claim),
            namespaced(core.list_namespaced_persistent_volume_claim),
            namespaced(core.replace_namespaced_persistent_volume_claim),
            namespaced(core.patch_namespaced_persistent_volume_claim),
            namespaced(core.delete_namespaced_persistent_volume_claim),
            pvc_body("py"),
        ),
        (
            "va",
            storage.create_volume_attachment,
            storage.read_volume_attachment,
            storage.list_volume_attachment,
            storage.replace_volume_attachment,
            storage.patch_volume_attachment,
            storage.delete_volume_attachment,
            client.V1VolumeAttachment(
                metadata=meta("py-" + ns),
                spec=client.V1VolumeAttachmentSpec(
                    attacher="example.com/python",
                    node_name="n1",
                    source=client.V1VolumeAttachmentSource(persistent_volume_name="pv1"),
                ),
            ),
        ),
        (
            "node",
            core.create_node,
            core.read_node,
            core.list_node,
            core.replace_node,
            core.patch_node,
            core.delete_node,
            client.V1Node(metadata=meta("py-" + ns)),
        ),
        (
            "pod",
            namespaced(core.create_namespaced_pod),
            namespaced(core.read_namespaced_pod),
            namespaced(core.list_namespaced_pod),
            namespaced(core.replace_namespaced_pod),
            namespaced(core.patch_namespaced_pod),
            namespaced(core.delete_namespaced_pod),
            client.V1Pod(
                metadata=meta("py"),
                spec=client.V1PodSpec(
                    containers=[client.V1Container(name="app", image="busybox")],
                    volumes=[
                        client.V1Volume(
                            name="data",
                            persistent_volume_claim=client.V1PersistentVolumeClaimVolumeSource(claim_name="py"),
                        )
                    ],
                ),
            ),
        ),
        (
            "event",
            namespaced(core.create_namespaced_event),
            namespaced(core.read_namespaced_event),
            namespaced(core.list_namespaced_event),
            namespaced(core.replace_namespaced_event),
            namespaced(core.patch_namespaced_event),
            namespaced(core.delete_namespaced_event),
            client.CoreV1Event(
                metadata=meta("py"),
                involved_object=client.V1ObjectReference(kind="Pod", name="py", namespace=ns),
                reason="Testing",
                message="from the python client",
                type="Normal",
            ),
        ),
        (
            "csidriver",
            storage.create_csi_driver,
            storage.read_csi_driver,
            storage.list_csi_driver,
            storage.replace_csi_driver,
            storage.patch_csi_driver,
            storage.delete_csi_driver,
            client.V1CSIDriver(
                metadata=meta("py-" + ns + ".example.com"),
                spec=client.V1CSIDriverSpec(attach_required=False),
            ),
        ),
        (
            "csinode",
            storage.create_csi_node,
            storage.read_csi_node,
            storage.list_csi_node,
            storage.replace_csi_node,
            storage.patch_csi_node,
            storage.delete_csi_node,
            client.V1CSINode(
                metadata=meta("py-" + ns),
                spec=client.V1CSINodeSpec(
                    drivers=[client.V1CSINodeDriver(name="py.example.com", node_id="py-node")]
                ),
            ),
        ),
        (
            "vac",
            storage.create_volume_attributes_class,
            storage.read_volume_attributes_class,
            storage.list_volume_attributes_class,
            storage.replace_volume_attributes_class,
            storage.patch_volume_attributes_class,
            storage.delete_volume_attributes_class,
            client.V1VolumeAttributesClass(
                metadata=meta("py-" + ns), driver_name="py.example.com", parameters={"iops": "3000"}
            ),
        ),
        (
            "lease",
            namespaced(coordination.create_namespaced_lease),
            namespaced(coordination.read_namespaced_lease),
            namespaced(coordination.list_namespaced_lease),
            namespaced(coordination.replace_namespaced_lease),
            namespaced(coordination.patch_namespaced_lease),
            namespaced(coordination.delete_namespaced_lease),
            client.V1Lease(
                metadata=meta("py"),
                spec=client.V1LeaseSpec(holder_identity="py", lease_duration_seconds=40),
            ),
        ),
    ]


def test_every_kind_round_trips_through_the_python_client(api_client, namespace):
    for name, create, read, list_, replace, patch, delete, body in kinds(api_client, namespace):
        created = create(body=body)
        obj_name = created.metadata.name
        assert created.metadata.uid, name
        assert created.metadata.resource_version, name

        got = read(name=obj_name)
        assert got.metadata.uid == created.metadata.uid, name

        listed = list_(label_selector="suite=python")
        assert obj_name in [i.metadata.name for i in listed.items], name

        # Watch from the list's resourceVersion: the next change arrives, typed.
        stream = watch.Watch().stream(
            list_, label_selector="suite=python", resource_version=listed.metadata.resource_version,
            timeout_seconds=5,
        )
        patch(name=obj_name, body={"metadata": {"annotations": {"watched": "yes"}}})
        # A controller may modify the object between the list and the patch (a new volume's
        # phase, say): the patch is the first change that carries the annotation.
        for event in stream:
            annotations = event["object"].metadata.annotations or {}
            if annotations.get("watched") == "yes":
                break
        else:
            raise AssertionError(f"{name}: the patch never arrived on the watch")
        assert event["type"] == "MODIFIED", name
        assert event["object"].metadata.annotations["watched"] == "yes", name
        stream.close()
        got = read(name=obj_name)

        got.metadata.labels["step"] = "replaced"
        replaced = replace(name=obj_name, body=got)
        assert replaced.metadata.labels["step"] == "replaced", name
        assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)

        patched = patch(name=obj_name, body={"metadata": {"labels": {"step": "patched"}}})
        assert patched.metadata.labels["step"] == "patched", name

        # A stale resourceVersion is a 409.
        got.metadata.labels["step"] = "stale"
        with pytest.raises(ApiException) as e:
            replace(name=obj_name, body=got)
        assert e.value.status == 409, name

        delete(name=obj_name)
        # Claims and volumes carry protection finalizers that a controller lifts: wait for it.
        deadline = time.time() + 10
        while True:
            try:
                read(name=obj_name)
            except ApiException as e:
                assert e.status == 404, name
                break
            assert time.time() < deadline, "%s %s was not deleted" % (name, obj_name)
            time.sleep(0.05)


def test_json_patch_and_status_subresource(api_client, namespace):
    core = client.CoreV1Api(api_client)
    core.create_namespaced_persistent_volume_claim(namespace, pvc_body("status"))
    patched = core.patch_namespaced_persistent_volume_claim(
        "status", namespace, [{"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}]
    )
    assert patched.metadata.annotations == {"a": "b"}
    status = core.patch_namespaced_persistent_volume_claim_status(
        "status", namespace, {"status": {"phase": "Lost"}}
    )
    assert status.status.phase == "Lost"
    assert core.read_namespaced_persistent_volume_claim_status("status", namespace).status.phase == "Lost"


def test_errors_arrive_as_status_objects(api_client, namespace):
    core = client.CoreV1Api(api_client)
    with pytest.raises(ApiException) as e:
        core.create_namespaced_persistent_volume_claim(namespace, pvc_body("Bad_Name"))
    assert e.value.status == 422
    assert '"reason":"Invalid"' in e.value.body.replace(" ", "")
    core.create_namespaced_persistent_volume_claim(namespace, pvc_body("dup"))
    with pytest.raises(ApiException) as e:
        core.create_namespaced_persistent_volume_claim(namespace, pvc_body("dup"))
    assert e.value.status == 409


def test_watch_streams_changes(api_client, namespace):
    core = client.CoreV1Api(api_client)
    core.create_namespaced_persistent_volume_claim(namespace, pvc_body("w0"))
    seen = []

    def writer():
        core.create_namespaced_persistent_volume_claim(namespace, pvc_body("w1"))
        core.patch_namespaced_persistent_volume_claim("w1", namespace, {"metadata": {"labels": {"x": "y"}}})
        core.delete_namespaced_persistent_volume_claim("w1", namespace)

    w = watch.Watch()
    started = False
    for event in w.stream(core.list_namespaced_persistent_volume_claim, namespace=namespace, timeout_seconds=10):
        seen.append((event["type"], event["object"].metadata.name))
        if not started:
            started = True
            threading.Thread(target=writer).start()
        if event["type"] == "DELETED":
            w.stop()
    # The delete of a claim is a MODIFIED (deletionTimestamp set, protection finalizer held)
    # followed by DELETED once the finalizer is lifted; collapse repeats.
    collapsed = [e for i, e in enumerate(seen) if i == 0 or seen[i - 1] != e]
    assert collapsed == [("ADDED", "w0"), ("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")]


def test_all_namespaces_list_and_pagination(api_client, namespace):
    core = client.CoreV1Api(api_client)
    for i in range(7):
        core.create_namespaced_persistent_volume_claim(namespace, pvc_body("page-%d" % i))
    names, token = [], None
    while True:
        page = core.list_persistent_volume_claim_for_all_namespaces(
            limit=3, _continue=token, field_selector="metadata.namespace=" + namespace
        )
        names += [p.metadata.name for p in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert sorted(names) == ["page-%d" % i for i in range(7)]
