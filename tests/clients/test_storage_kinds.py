"""Kubernetes 1.35 storage kinds and behaviours through the official Python client and kubectl,
unchanged: CSIDriver and CSINode kept by the server, VolumeAttributesClass from creation to a
live modification of a volume, and recovery from a failed expansion (the in-memory provider:
20 GiB in all, volumes that take `iops` and `tier`)."""

import subprocess
import time

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from conftest import memory_server
from test_kubectl import KUBECTL

MEMORY = "memory.stowage.dev"


@pytest.fixture(scope="module")
def server():
    s = memory_server("storage-kinds")
    yield s
    s.stop()


def eventually(what, f, timeout=15):
    deadline = time.time() + timeout
    while True:
        value = f()
        if value:
            return value
        assert time.time() < deadline, "not within %ss: %s" % (timeout, what)
        time.sleep(0.05)


def test_every_provider_has_a_csidriver_and_edits_are_put_back(api):
    storage = client.StorageV1Api(api)
    driver = eventually("the memory provider's CSIDriver", lambda: next(
        (d for d in storage.list_csi_driver().items if d.metadata.name == MEMORY), None))
    assert driver.spec.attach_required is True
    assert driver.spec.pod_info_on_mount is False
    assert driver.spec.storage_capacity is True, "its capacity is set, so it is published"
    assert driver.spec.fs_group_policy == "None"
    assert driver.spec.volume_lifecycle_modes == ["Persistent"]
    patched = storage.patch_csi_driver(MEMORY, {"spec": {"storageCapacity": False}})
    assert patched.spec.storage_capacity is False
    eventually("storageCapacity put back", lambda: storage.read_csi_driver(MEMORY).spec.storage_capacity is True)
    with pytest.raises(ApiException) as e:
        storage.patch_csi_driver(MEMORY, {"spec": {"attachRequired": False}})
    assert e.value.status == 422
    storage.delete_csi_driver(MEMORY)
    eventually("made again", lambda: any(d.metadata.name == MEMORY for d in storage.list_csi_driver().items))


def test_every_node_has_a_csinode_with_its_attach_limit(api):
    core = client.CoreV1Api(api)
    storage = client.StorageV1Api(api)
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(
        name="py-node", annotations={"stowage.dev/max-volume-attachments": "5"})))
    node = eventually("py-node's CSINode", lambda: next(
        (n for n in storage.list_csi_node().items if n.metadata.name == "py-node"), None))
    (entry,) = [d for d in node.spec.drivers if d.name == MEMORY]
    assert entry.node_id == "py-node"
    assert entry.allocatable.count == 5
    assert node.metadata.owner_references[0].kind == "Node"
    core.patch_node("py-node", {"metadata": {"annotations": {"stowage.dev/max-volume-attachments": "9"}}})
    eventually("the new limit", lambda: [
        d.allocatable.count for d in storage.read_csi_node("py-node").spec.drivers if d.name == MEMORY] == [9])
    core.delete_node("py-node")

    def gone():
        try:
            storage.read_csi_node("py-node")
            return False
        except ApiException as e:
            return e.status == 404
    eventually("the CSINode goes with its Node", gone)


def test_a_claims_attributes_class_is_applied_then_modified_and_an_impossible_one_is_infeasible(api, namespace):
    core = client.CoreV1Api(api)
    storage = client.StorageV1Api(api)
    storage.create_storage_class(client.V1StorageClass(
        metadata=client.V1ObjectMeta(name="mem-" + namespace), provisioner=MEMORY))
    for name, params in (("gold", {"iops": "4000"}), ("platinum", {"iops": "20000", "tier": "fast"}),
                         ("absurd", {"iops": "9999999"})):
        storage.create_volume_attributes_class(client.V1VolumeAttributesClass(
            metadata=client.V1ObjectMeta(name="%s-%s" % (name, namespace)), driver_name=MEMORY,
            parameters=params))
    gold, platinum, absurd = ("%s-%s" % (n, namespace) for n in ("gold", "platinum", "absurd"))

    # Immutable, as in Kubernetes.
    with pytest.raises(ApiException) as e:
        storage.patch_volume_attributes_class(gold, {"parameters": {"iops": "5000"}})
    assert e.value.status == 422

    core.create_namespaced_persistent_volume_claim(namespace, client.V1PersistentVolumeClaim(
        metadata=client.V1ObjectMeta(name="data"),
        spec=client.V1PersistentVolumeClaimSpec(
            access_modes=["ReadWriteOnce"], storage_class_name="mem-" + namespace,
            volume_attributes_class_name=gold,
            resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}))))

    def status():
        return core.read_namespaced_persistent_volume_claim("data", namespace).status

    eventually("bound with gold", lambda: status().phase == "Bound"
               and status().current_volume_attributes_class_name == gold)
    volume = core.read_persistent_volume(
        core.read_namespaced_persistent_volume_claim("data", namespace).spec.volume_name)
    assert volume.spec.volume_attributes_class_name == gold

    core.patch_namespaced_persistent_volume_claim("data", namespace, {"spec": {"volumeAttributesClassName": platinum}})
    eventually("platinum", lambda: status().current_volume_attributes_class_name == platinum
               and status().modify_volume_status is None)
    assert core.read_persistent_volume(volume.metadata.name).spec.volume_attributes_class_name == platinum

    core.patch_namespaced_persistent_volume_claim("data", namespace, {"spec": {"volumeAttributesClassName": absurd}})
    m = eventually("infeasible", lambda: (status().modify_volume_status
                   if status().modify_volume_status and status().modify_volume_status.status == "Infeasible" else None))
    assert m.target_volume_attributes_class_name == absurd
    assert status().current_volume_attributes_class_name == platinum
    reasons = [e.reason for e in core.list_namespaced_event(namespace).items]
    assert "VolumeModifyFailed" in reasons

    # A claim that had a class cannot go back to none.
    with pytest.raises(ApiException) as e:
        core.patch_namespaced_persistent_volume_claim("data", namespace, {"spec": {"volumeAttributesClassName": None}})
    assert e.value.status == 422

    # A class in use stays until nothing names it.
    storage.delete_volume_attributes_class(platinum)
    time.sleep(1)
    assert storage.read_volume_attributes_class(platinum).metadata.deletion_timestamp is not None
    core.delete_namespaced_persistent_volume_claim("data", namespace)

    def gone():
        try:
            storage.read_volume_attributes_class(platinum)
            return False
        except ApiException as e:
            return e.status == 404
    eventually("the class goes with its last user", gone, timeout=30)


def test_capacity_is_published_per_class_and_follows_provisioning(api, namespace):
    core = client.CoreV1Api(api)
    storage = client.StorageV1Api(api)
    cls = "room-" + namespace
    storage.create_storage_class(client.V1StorageClass(metadata=client.V1ObjectMeta(name=cls), provisioner=MEMORY))

    def published():
        items = storage.list_namespaced_csi_storage_capacity("stowage-system").items
        return [c for c in items if c.storage_class_name == cls]

    (before,) = eventually("the class's capacity", published)
    assert before.metadata.labels["csi.storage.k8s.io/drivername"] == MEMORY
    assert before.node_topology.match_labels is None, "reachable from every node"
    core.create_namespaced_persistent_volume_claim(namespace, client.V1PersistentVolumeClaim(
        metadata=client.V1ObjectMeta(name="room"),
        spec=client.V1PersistentVolumeClaimSpec(
            access_modes=["ReadWriteOnce"], storage_class_name=cls,
            resources=client.V1VolumeResourceRequirements(requests={"storage": "2Gi"}))))

    def gib(q):
        assert q.endswith("Gi") or q == "0", q
        return 0 if q == "0" else int(q[:-2])

    eventually("2Gi less room within seconds",
               lambda: published() and gib(published()[0].capacity) == gib(before.capacity) - 2, timeout=5)
    core.delete_namespaced_persistent_volume_claim("room", namespace)
    eventually("the room back", lambda: published() and published()[0].capacity == before.capacity, timeout=5)
    storage.delete_storage_class(cls)
    eventually("gone with its class", lambda: not published())


def test_kubectl_lists_the_new_kinds(server):
    def kubectl(*args):
        proc = subprocess.run([KUBECTL, "--kubeconfig", server.kubeconfig(), *args],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc

    out = kubectl("get", "csidrivers,csinodes,volumeattributesclasses").stdout
    kubectl("get", "csistoragecapacities", "-A")
    assert MEMORY in out
    out = kubectl("get", "csidrivers").stdout
    assert "ATTACHREQUIRED" in out and "MODES" in out
    resources = kubectl("api-resources").stdout
    for kind in ("csidrivers", "csinodes", "volumeattributesclasses", "csistoragecapacities"):
        assert kind in resources, kind


def test_a_failed_expansion_is_recovered_by_asking_for_less_and_quota_counts_the_larger(api, namespace):
    core = client.CoreV1Api(api)
    storage = client.StorageV1Api(api)
    storage.create_storage_class(client.V1StorageClass(
        metadata=client.V1ObjectMeta(name="grow-" + namespace), provisioner=MEMORY,
        allow_volume_expansion=True))
    core.create_namespaced_resource_quota(namespace, client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="q"), spec=client.V1ResourceQuotaSpec(hard={"requests.storage": "500Gi"})))
    core.create_namespaced_persistent_volume_claim(namespace, client.V1PersistentVolumeClaim(
        metadata=client.V1ObjectMeta(name="grow"),
        spec=client.V1PersistentVolumeClaimSpec(
            access_modes=["ReadWriteOnce"], storage_class_name="grow-" + namespace,
            resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}))))

    def status():
        return core.read_namespaced_persistent_volume_claim("grow", namespace).status

    eventually("bound", lambda: status().phase == "Bound")

    def ask(size):
        core.patch_namespaced_persistent_volume_claim(
            "grow", namespace, {"spec": {"resources": {"requests": {"storage": size}}}})

    ask("100Gi")  # more than the provider has
    eventually("infeasible", lambda: (status().allocated_resource_statuses or {}).get("storage")
               == "ControllerResizeInfeasible")
    assert status().allocated_resources == {"storage": "100Gi"}
    assert status().capacity == {"storage": "1Gi"}

    def used():
        q = core.read_namespaced_resource_quota("q", namespace)
        return (q.status.used or {}).get("requests.storage") if q.status else None

    eventually("quota counts the allocation", lambda: used() == "100Gi")

    with pytest.raises(ApiException) as e:
        ask("1Gi")  # not down to the capacity
    assert e.value.status == 422
    assert "status.capacity" in e.value.body

    ask("3Gi")
    eventually("recovered", lambda: status().capacity == {"storage": "3Gi"}
               and not (status().allocated_resource_statuses or {}).get("storage"))
    assert status().allocated_resources == {"storage": "3Gi"}
    eventually("quota follows", lambda: used() == "3Gi")


def test_a_quota_scoped_to_an_attributes_class_counts_only_its_claims(api, namespace):
    core = client.CoreV1Api(api)
    storage = client.StorageV1Api(api)
    cls = "scoped-" + namespace
    gold = "gold-q-" + namespace
    storage.create_storage_class(client.V1StorageClass(metadata=client.V1ObjectMeta(name=cls), provisioner=MEMORY))
    storage.create_volume_attributes_class(client.V1VolumeAttributesClass(
        metadata=client.V1ObjectMeta(name=gold), driver_name=MEMORY, parameters={"iops": "4000"}))
    core.create_namespaced_resource_quota(namespace, client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="gold"),
        spec=client.V1ResourceQuotaSpec(
            hard={"requests.storage": "2Gi", "persistentvolumeclaims": "5"},
            scope_selector=client.V1ScopeSelector(match_expressions=[client.V1ScopedResourceSelectorRequirement(
                scope_name="VolumeAttributesClass", operator="In", values=[gold])]))))

    def claim(name, size, vac=None):
        core.create_namespaced_persistent_volume_claim(namespace, client.V1PersistentVolumeClaim(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1PersistentVolumeClaimSpec(
                access_modes=["ReadWriteOnce"], storage_class_name=cls, volume_attributes_class_name=vac,
                resources=client.V1VolumeResourceRequirements(requests={"storage": size}))))

    claim("fast", "1Gi", gold)
    claim("plain", "5Gi")
    with pytest.raises(ApiException) as e:
        claim("fast2", "2Gi", gold)
    assert e.value.status == 403
    assert "exceeded quota: gold" in e.value.body
    q = core.read_namespaced_resource_quota("gold", namespace)
    assert q.status.used == {"requests.storage": "1Gi", "persistentvolumeclaims": "1"}
    assert q.spec.scope_selector.match_expressions[0].values == [gold]

    # Kubernetes' validation: a scope that cannot apply to a resource is refused.
    with pytest.raises(ApiException) as e:
        core.create_namespaced_resource_quota(namespace, client.V1ResourceQuota(
            metadata=client.V1ObjectMeta(name="bad"),
            spec=client.V1ResourceQuotaSpec(hard={"requests.storage": "1Gi"}, scopes=["BestEffort"])))
    assert e.value.status == 422
    assert "unsupported scope applied to resource" in e.value.body
