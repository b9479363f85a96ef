"""kubectl 1.37, unchanged, against Stowage through a kubeconfig: tables, describe, apply
(client- and server-side), edit-like patches, delete, watch and explain."""

import json
import os
import subprocess
import textwrap
import time

import pytest

KUBECTL = os.environ.get(
    "KUBECTL",
    os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), ".cache", "clients", "bin", "kubectl"),
)


@pytest.fixture(scope="module")
def kubectl(server):
    kubeconfig = server.kubeconfig()

    def run(*args, input=None, check=True, timeout=60):
        proc = subprocess.run(
            [KUBECTL, "--kubeconfig", kubeconfig, *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError("kubectl %s failed (%d):\n%s\n%s" % (args, proc.returncode, proc.stdout, proc.stderr))
        return proc

    run.kubeconfig = kubeconfig
    return run


MANIFEST = textwrap.dedent(
    """
    apiVersion: storage.k8s.io/v1
    kind: StorageClass
    metadata:
      name: kubectl-class
    provisioner: example.com/kubectl
    reclaimPolicy: Retain
    ---
    apiVersion: v1
    kind: PersistentVolumeClaim
    metadata:
      name: claim
      namespace: {ns}
      labels:
        app: demo
    spec:
      accessModes: [ReadWriteOnce]
      storageClassName: kubectl-class
      resources:
        requests:
          storage: {size}
    """
)


def test_apply_get_describe_delete(kubectl, namespace, tmp_path):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST.format(ns=namespace, size="1Gi"))
    out = kubectl("apply", "-f", str(manifest)).stdout
    assert "storageclass.storage.k8s.io/kubectl-class created" in out
    assert "persistentvolumeclaim/claim created" in out

    table = kubectl("get", "pvc", "-n", namespace).stdout.splitlines()
    assert table[0].split()[:6] == ["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS", "MODES"]
    assert table[1].split()[:2] == ["claim", "Pending"]
    wide = kubectl("get", "pvc", "-n", namespace, "-o", "wide").stdout
    assert "VOLUMEMODE" in wide and "Filesystem" in wide
    sc_table = kubectl("get", "sc", "kubectl-class").stdout
    assert "example.com/kubectl" in sc_table and "Retain" in sc_table

    # Re-applying the same file changes nothing; a changed file is patched.
    assert "unchanged" in kubectl("apply", "-f", str(manifest)).stdout
    manifest.write_text(MANIFEST.format(ns=namespace, size="1Gi").replace("app: demo", "app: demo2"))
    assert "persistentvolumeclaim/claim configured" in kubectl("apply", "-f", str(manifest)).stdout
    obj = json.loads(kubectl("get", "pvc", "claim", "-n", namespace, "-o", "json").stdout)
    assert obj["metadata"]["labels"]["app"] == "demo2"
    assert "kubectl.kubernetes.io/last-applied-configuration" in obj["metadata"]["annotations"]

    described = kubectl("describe", "pvc", "claim", "-n", namespace).stdout
    assert "StorageClass:  kubectl-class" in described
    assert "Status:        Pending" in described

    out = kubectl("delete", "-f", str(manifest), "--timeout=30s").stdout
    assert 'persistentvolumeclaim "claim" deleted' in out
    assert "No resources found" in kubectl("get", "pvc", "-n", namespace).stdout + kubectl("get", "pvc", "-n", namespace).stderr


def test_server_side_apply(kubectl, namespace, tmp_path):
    manifest = tmp_path / "ssa.yaml"
    manifest.write_text(MANIFEST.format(ns=namespace, size="1Gi").split("---")[1])
    out = kubectl("apply", "--server-side", "-f", str(manifest)).stdout
    assert "serverside-applied" in out
    out = kubectl("apply", "--server-side", "-f", str(manifest)).stdout
    assert "serverside-applied" in out
    obj = json.loads(kubectl("get", "pvc", "claim", "-n", namespace, "-o", "json", "--show-managed-fields").stdout)
    assert obj["metadata"]["managedFields"][0]["manager"] == "kubectl"


def test_imperative_commands(kubectl, namespace):
    kubectl(
        "create", "-f", "-",
        input=json.dumps({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "imp", "namespace": namespace},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, "storageClassName": ""},
        }),
    )
    kubectl("label", "pvc", "imp", "-n", namespace, "tier=gold")
    kubectl("annotate", "pvc", "imp", "-n", namespace, "note=hello")
    kubectl("patch", "pvc", "imp", "-n", namespace, "--type=merge", "-p", '{"metadata":{"labels":{"patched":"yes"}}}')
    kubectl("patch", "pvc", "imp", "-n", namespace, "--type=json", "-p", '[{"op":"add","path":"/metadata/labels/j","value":"1"}]')
    names = kubectl("get", "pvc", "-n", namespace, "-l", "tier=gold,patched=yes,j=1", "-o", "name").stdout.split()
    assert names == ["persistentvolumeclaim/imp"]
    out = kubectl("get", "pvc", "imp", "-n", namespace, "-o", "jsonpath={.metadata.annotations.note}").stdout
    assert out == "hello"
    # Errors come back as the server's Status message.
    bad = kubectl("get", "pvc", "nope", "-n", namespace, check=False)
    assert bad.returncode != 0
    assert 'persistentvolumeclaims "nope" not found' in bad.stderr
    bad = kubectl("create", "-f", "-", check=False, input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "bad", "namespace": namespace},
        "spec": {"accessModes": ["Sideways"], "resources": {"requests": {"storage": "1Gi"}}},
    }))
    assert bad.returncode != 0
    assert "Unsupported value" in bad.stderr


def test_unknown_fields_are_refused_by_strict_validation(kubectl, namespace):
    bad = kubectl("create", "-f", "-", check=False, input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "strict", "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, "colour": "blue"},
    }))
    assert bad.returncode != 0
    assert "colour" in bad.stderr


def test_a_class_its_provider_would_refuse_is_made_with_a_warning_kubectl_prints(kubectl, namespace):
    """The server's Warning header as client-go reads it: quotes and UTF-8 come through."""
    name = "refused-" + namespace
    made = kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
        "provisioner": "local.stowage.dev", "parameters": {"onDelete": "détruire"},
    }))
    assert ('Warning: parameters: local.stowage.dev will refuse to provision claims of this class: '
            'onDelete "détruire": use delete, retain or archive') in made.stderr, made.stderr
    assert "created" in made.stdout
    fine = kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name + "-ok"},
        "provisioner": "local.stowage.dev", "parameters": {"onDelete": "retain"},
    }))
    assert "Warning" not in fine.stderr, fine.stderr
    kubectl("delete", "storageclass", name, name + "-ok")


def test_get_watch_prints_changes(kubectl, namespace):
    proc = subprocess.Popen(
        [KUBECTL, "--kubeconfig", kubectl.kubeconfig, "get", "pvc", "-n", namespace, "-w", "--request-timeout=20s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)
        for name in ("watched-a", "watched-b"):
            kubectl("create", "-f", "-", input=json.dumps({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, "storageClassName": ""},
            }))
        deadline = time.time() + 15
        lines = []
        while time.time() < deadline and len([l for l in lines if l.startswith("watched-")]) < 2:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
    finally:
        proc.kill()
    rows = [l.split()[0] for l in lines if l.startswith("watched-")]
    assert rows == ["watched-a", "watched-b"], lines


def test_explain_and_api_resources(kubectl):
    out = kubectl("explain", "persistentvolumeclaim.spec.resources").stdout
    assert "requests" in out
    resources = kubectl("api-resources").stdout
    for short in ("pvc", "pv", "sc", "va", "no", "po", "ev"):
        assert " %s " % short in resources, short
    assert "leases" in resources


def test_every_kind_prints_a_table(kubectl):
    for kind in ("sc", "pv", "pvc", "va", "nodes", "pods", "events", "leases", "csidrivers", "csinodes", "vac"):
        proc = kubectl("get", kind, "-A")
        assert "error" not in proc.stderr.lower(), (kind, proc.stderr)
