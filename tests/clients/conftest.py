"""Shared fixtures: a real `stowage serve` process per test module, and clients for it."""

import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("STOWAGE_BIN", os.path.join(ROOT, "target", "debug", "stowage"))


class StowageServer:
    def __init__(self, extra_args=()):
        self.data_dir = tempfile.mkdtemp(prefix="stowage-clients-")
        self.log_path = os.path.join(self.data_dir, "server.log")
        self.proc = subprocess.Popen(
            [BINARY, "serve", "--listen", "127.0.0.1:0", "--data-dir", self.data_dir, *extra_args],
            stdout=subprocess.PIPE,
            stderr=open(self.log_path, "ab"),
            text=True,
        )
        deadline = time.time() + 30
        self.url = None
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            match = re.match(r"listening on (\S+)", line or "")
            if match:
                self.url = match.group(1)
                break
            if self.proc.poll() is not None:
                break
        if not self.url:
            raise RuntimeError("stowage did not start:\n" + open(self.log_path).read())

    def kubeconfig(self):
        """A kubeconfig for this server; the admin kubeconfig the server wrote, if there is one."""
        written = os.path.join(self.data_dir, "kubeconfig")
        if os.path.exists(written):
            return written
        path = os.path.join(self.data_dir, "client-kubeconfig")
        with open(path, "w") as f:
            f.write(
                "apiVersion: v1\nkind: Config\n"
                "clusters:\n- name: stowage\n  cluster:\n    server: %s\n"
                "contexts:\n- name: stowage\n  context:\n    cluster: stowage\n    user: admin\n    namespace: default\n"
                "current-context: stowage\n"
                "users:\n- name: admin\n  user: {}\n" % self.url
            )
        return path

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    s = StowageServer()
    yield s
    s.stop()


def memory_server(name):
    """A server with the memory provider on (20Gi), its config written as target/<name>.yaml."""
    config_path = os.path.join(ROOT, "target", name + ".yaml")
    with open(config_path, "w") as f:
        f.write("providers:\n  memory:\n    enabled: true\n    capacity: 20Gi\n")
    return StowageServer(["--config", config_path])


@pytest.fixture(scope="module")
def api(server):
    """The official Python client on the module's `server`, with its admin kubeconfig."""
    from kubernetes import config
    return config.new_client_from_config(config_file=server.kubeconfig())


@pytest.fixture
def namespace():
    return "t-" + uuid.uuid4().hex[:8]
