"""Snapshots and clones through the official Python client (CustomObjectsApi, as tools that
speak snapshot.storage.k8s.io use it) and kubectl, unchanged, against the real local provider:
VolumeSnapshotClass, VolumeSnapshot and VolumeSnapshotContent from a dynamic snapshot to
Velero's retain-and-import path, restores and clones that carry the files."""

import os
import subprocess
import tempfile
import time

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from conftest import StowageServer
from test_kubectl import KUBECTL

LOCAL = "local.stowage.dev"
GROUP, VERSION = "snapshot.storage.k8s.io", "v1"


@pytest.fixture(scope="module")
def server():
    root = tempfile.mkdtemp(prefix="stowage-snapshots-")
    config_path = os.path.join(root, "config.yaml")
    with open(config_path, "w") as f:
        f.write("providers:\n  local:\n    node: py-node\n    capacity: 20Gi\n    root: %s\n"
                % os.path.join(root, "volumes"))
    s = StowageServer(["--config", config_path])
    yield s
    s.stop()


def eventually(what, f, timeout=20):
    deadline = time.time() + timeout
    while True:
        value = f()
        if value:
            return value
        assert time.time() < deadline, "not within %ss: %s" % (timeout, what)
        time.sleep(0.05)


def claim(name, size, data_source=None):
    return client.V1PersistentVolumeClaim(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PersistentVolumeClaimSpec(
            access_modes=["ReadWriteOnce"], storage_class_name="local-now",
            resources=client.V1VolumeResourceRequirements(requests={"storage": size}),
            data_source=data_source))


def bound(core, namespace, name):
    return eventually("%s bound" % name, lambda: (
        lambda c: c if c.status.phase == "Bound" else None)(
            core.read_namespaced_persistent_volume_claim(name, namespace)))


def volume_dir(core, c):
    pv = core.read_persistent_volume(c.spec.volume_name)
    return pv.spec.csi.volume_attributes["path"]


def ready(custom, namespace, name):
    return eventually("snapshot %s ready" % name, lambda: (
        lambda s: s if s.get("status", {}).get("readyToUse") else None)(
            custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "volumesnapshots", name)))


@pytest.fixture(scope="module")
def classes(api):
    storage = client.StorageV1Api(api)
    custom = client.CustomObjectsApi(api)
    storage.create_storage_class(client.V1StorageClass(
        metadata=client.V1ObjectMeta(name="local-now"), provisioner=LOCAL,
        volume_binding_mode="Immediate", allow_volume_expansion=True))
    custom.create_cluster_custom_object(GROUP, VERSION, "volumesnapshotclasses", {
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
        "metadata": {"name": "local-snaps",
                     "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"},
                     "labels": {"velero.io/csi-volumesnapshot-class": "true"}},
        "driver": LOCAL, "deletionPolicy": "Delete"})


def test_a_snapshot_restores_and_a_clone_copies_the_files(api, classes, namespace):
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    core.create_namespaced_persistent_volume_claim(namespace, claim("site", "1Gi"))
    site = bound(core, namespace, "site")
    path = volume_dir(core, site)
    os.makedirs(os.path.join(path, "www"))
    with open(os.path.join(path, "www", "index.html"), "w") as f:
        f.write("version 1")

    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "volumesnapshots", {
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "v1"}, "spec": {"source": {"persistentVolumeClaimName": "site"}}})
    snap = ready(custom, namespace, "v1")
    assert snap["spec"]["volumeSnapshotClassName"] == "local-snaps"
    assert snap["status"]["restoreSize"] == "1Gi"
    content = custom.get_cluster_custom_object(
        GROUP, VERSION, "volumesnapshotcontents", snap["status"]["boundVolumeSnapshotContentName"])
    assert content["spec"]["driver"] == LOCAL
    assert content["status"]["readyToUse"] is True
    with open(os.path.join(path, "www", "index.html"), "w") as f:
        f.write("version 2")

    core.create_namespaced_persistent_volume_claim(namespace, claim(
        "site-v1", "2Gi", client.V1TypedLocalObjectReference(
            api_group=GROUP, kind="VolumeSnapshot", name="v1")))
    core.create_namespaced_persistent_volume_claim(namespace, claim(
        "site-copy", "1Gi", client.V1TypedLocalObjectReference(kind="PersistentVolumeClaim", name="site")))
    with open(os.path.join(volume_dir(core, bound(core, namespace, "site-v1")), "www", "index.html")) as f:
        assert f.read() == "version 1"
    with open(os.path.join(volume_dir(core, bound(core, namespace, "site-copy")), "www", "index.html")) as f:
        assert f.read() == "version 2"
    restored = core.read_namespaced_persistent_volume_claim("site-v1", namespace)
    assert restored.status.capacity["storage"] == "2Gi"

    # Smaller than the source: refused, with the reason in an event.
    core.create_namespaced_persistent_volume_claim(namespace, claim(
        "too-small", "500Mi", client.V1TypedLocalObjectReference(kind="PersistentVolumeClaim", name="site")))
    event = eventually("a ProvisioningFailed event", lambda: next(
        (e for e in core.list_namespaced_event(namespace).items
         if e.involved_object.name == "too-small" and e.reason == "ProvisioningFailed"), None))
    assert "at least as large" in event.message


def test_velero_keeps_a_snapshot_and_imports_it_elsewhere(api, classes, namespace):
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    core.create_namespaced_persistent_volume_claim(namespace, claim("db", "1Gi"))
    path = volume_dir(core, bound(core, namespace, "db"))
    with open(os.path.join(path, "rows"), "w") as f:
        f.write("42")
    # Backup: a snapshot with the labelled class, its content set to Retain, the snapshot gone.
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "volumesnapshots", {
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "velero-db-x1", "labels": {"velero.io/backup-name": "nightly"}},
        "spec": {"source": {"persistentVolumeClaimName": "db"}, "volumeSnapshotClassName": "local-snaps"}})
    snap = ready(custom, namespace, "velero-db-x1")
    content_name = snap["status"]["boundVolumeSnapshotContentName"]
    custom.patch_cluster_custom_object(GROUP, VERSION, "volumesnapshotcontents", content_name,
                                       {"spec": {"deletionPolicy": "Retain"}})
    handle = custom.get_cluster_custom_object(
        GROUP, VERSION, "volumesnapshotcontents", content_name)["status"]["snapshotHandle"]
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "volumesnapshots", "velero-db-x1")

    def gone():
        try:
            custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "volumesnapshots", "velero-db-x1")
            return False
        except ApiException as e:
            return e.status == 404
    eventually("the snapshot gone", gone)
    custom.delete_cluster_custom_object(GROUP, VERSION, "volumesnapshotcontents", content_name)

    # Restore into another namespace: a pre-provisioned content, a snapshot naming it, a claim.
    target = namespace + "-r"
    custom.create_cluster_custom_object(GROUP, VERSION, "volumesnapshotcontents", {
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
        "metadata": {"name": "velero-restore-" + namespace},
        "spec": {"deletionPolicy": "Delete", "driver": LOCAL, "source": {"snapshotHandle": handle},
                 "volumeSnapshotRef": {"name": "db-restore", "namespace": target}}})
    custom.create_namespaced_custom_object(GROUP, VERSION, target, "volumesnapshots", {
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "db-restore"},
        "spec": {"source": {"volumeSnapshotContentName": "velero-restore-" + namespace}}})
    ready(custom, target, "db-restore")
    core.create_namespaced_persistent_volume_claim(target, claim(
        "db", "1Gi", client.V1TypedLocalObjectReference(api_group=GROUP, kind="VolumeSnapshot", name="db-restore")))
    with open(os.path.join(volume_dir(core, bound(core, target, "db")), "rows")) as f:
        assert f.read() == "42"


def test_kubectl_gets_the_snapshot_kinds(server, classes):
    def kubectl(*args):
        proc = subprocess.run([KUBECTL, "--kubeconfig", server.kubeconfig(), *args],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc.stdout

    out = kubectl("get", "vs,vsc,vsclass", "-A")
    assert "local-snaps" in out
    out = kubectl("get", "volumesnapshotclasses")
    assert "DELETIONPOLICY" in out and "local-snaps (default)" in out
    out = kubectl("get", "volumesnapshots", "-A")
    assert "READYTOUSE" in out and "SOURCEPVC" in out
    out = kubectl("get", "volumesnapshotcontents")
    assert "VOLUMESNAPSHOTNAMESPACE" in out
    resources = kubectl("api-resources", "--api-group=snapshot.storage.k8s.io")
    for kind in ("volumesnapshots", "volumesnapshotcontents", "volumesnapshotclasses"):
        assert kind in resources, kind
    for short in ("vs ", "vsc", "vsclass"):
        assert short in resources, short
