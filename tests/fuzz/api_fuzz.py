"""Schema-driven fuzzing with Schemathesis, against the server's own OpenAPI documents.

`/openapi/v3` lists one document per group-version; each is loaded with Schemathesis (used as a
library, so this harness sends the requests itself: it counts them, notices a dead server at
once and knows the last request). For every operation, Hypothesis generates cases in both modes:

- positive (data that fits the schema), with the path's `name` fixed to a seeded object so that
  gets, updates, patches and deletes reach a real object;
- negative (data that violates the schema), with generated names.

as the namespace tenant (operations on the kinds it may write, and StorageClass reads) and as
admin (every operation), always in the namespace `fuzz`.

Only one Schemathesis check is meaningful here: `not_a_server_error`. Conformance checks
(response schemas, status codes, content types) would fail on documented, deliberate
differences: the documents declare only a 200 response, while errors are Kubernetes `Status`
objects with 4xx codes; positive data is often refused (names, immutable fields, quantities are
validated beyond the schema); and negative data may legitimately be accepted (query parameters
the schema types as strings, unknown fields dropped as Kubernetes drops them).
"""

import re
import time
import traceback

import hypothesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings

import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from core import NAMESPACE, allowed_5xx, dumps

GROUP = "schemathesis"
SEED_NAME = "fz-seed"
TENANT_KINDS = {"persistentvolumeclaims", "pods", "events", "volumesnapshots"}


class OutOfTime(Exception):
    pass


def seed_objects():
    """A valid object of each kind named `fz-seed`, with the token that may create it."""
    return {
        "persistentvolumeclaims": (False, "/api/v1/namespaces/%s/persistentvolumeclaims" % NAMESPACE, {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": SEED_NAME},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}},
                     "storageClassName": "fz-none"}}),
        "pods": (False, "/api/v1/namespaces/%s/pods" % NAMESPACE, {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": SEED_NAME},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
        "events": (False, "/api/v1/namespaces/%s/events" % NAMESPACE, {
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": SEED_NAME},
            "involvedObject": {"kind": "Pod", "name": SEED_NAME, "namespace": NAMESPACE}, "reason": "Fuzz"}),
        "volumesnapshots": (False, "/apis/snapshot.storage.k8s.io/v1/namespaces/%s/volumesnapshots" % NAMESPACE, {
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot", "metadata": {"name": SEED_NAME},
            "spec": {"source": {"persistentVolumeClaimName": SEED_NAME}}}),
        "storageclasses": (True, "/apis/storage.k8s.io/v1/storageclasses", {
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": SEED_NAME},
            "provisioner": "fuzz.dev/none"}),
        "persistentvolumes": (True, "/api/v1/persistentvolumes", {
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": SEED_NAME},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "storageClassName": "fz-none", "hostPath": {"path": "/nonexistent"}}}),
        "nodes": (True, "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": SEED_NAME}}),
        "leases": (True, "/apis/coordination.k8s.io/v1/namespaces/%s/leases" % NAMESPACE, {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": SEED_NAME},
            "spec": {"holderIdentity": "fuzz"}}),
        "volumeattachments": (True, "/apis/storage.k8s.io/v1/volumeattachments", {
            "apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment", "metadata": {"name": SEED_NAME},
            "spec": {"attacher": "fuzz.dev/none", "nodeName": SEED_NAME,
                     "source": {"persistentVolumeName": SEED_NAME}}}),
    }


def plural_of(path):
    match = re.search(r"/([a-z]+)(?:/\{name\})?(?:/status)?$", path)
    return match.group(1) if match else None


def load_documents(runner):
    server = runner.ensure_server(GROUP, "load /openapi/v3")
    auth = {"Authorization": "Bearer " + server.admin_token}
    root = server.session.get(server.url + "/openapi/v3", headers=auth, timeout=30)
    root.raise_for_status()
    docs = []
    for key in sorted(root.json()["paths"]):
        r = server.session.get(server.url + "/openapi/v3/" + key, headers=auth, timeout=30)
        r.raise_for_status()
        docs.append((key, r.json()))
    return docs


def plan(docs, settings):
    """The runs: (document, operation, admin?, mode, fixed path parameters, examples)."""
    runs = []
    for key, doc in docs:
        schema = schemathesis.openapi.from_dict(doc)
        operations = []
        for result in schema.get_all_operations():
            try:
                operations.append(result.ok())
            except Exception as e:  # an operation Schemathesis cannot use is reported, not fatal
                print("schemathesis: skipping an operation of %s: %s" % (key, e))
        for op in operations:
            plural = plural_of(op.path)
            tenant = plural in TENANT_KINDS or (plural == "storageclasses" and op.method.upper() == "GET")
            fixed = {"namespace": NAMESPACE} if "{namespace}" in op.path else {}
            named = dict(fixed, name=SEED_NAME) if "{name}" in op.path else dict(fixed)
            for admin in ([False, True] if tenant else [True]):
                # The tenant is the main client: it gets more examples than admin.
                examples = settings.api_examples if not admin else max(2, settings.api_examples // 2)
                runs.append((key, op, plural, admin, GenerationMode.POSITIVE, named, examples))
                # A GET has only path parameters, which are plain strings: nothing to violate.
                if op.method.upper() != "GET":
                    runs.append((key, op, plural, admin, GenerationMode.NEGATIVE, fixed, examples))
    return runs


def run(runner, settings):
    started = time.monotonic()
    deadline = min(started + settings.api_budget, runner.deadline)
    try:
        docs = load_documents(runner)
    except Exception:
        runner.fail(GROUP, "load the OpenAPI documents", "harness", traceback.format_exc())
        return
    runs = plan(docs, settings)
    seeds = seed_objects()
    runner.log("schemathesis: %d documents, %d operation runs, %.0f s budget" % (
        len(docs), len(runs), deadline - started))
    skipped = 0
    for index, (key, op, plural, admin, mode, fixed, examples) in enumerate(runs):
        now = time.monotonic()
        if now >= deadline:
            skipped = len(runs) - index
            break
        # Share what is left of the budget evenly among the runs still to go.
        run_deadline = now + (deadline - now) / (len(runs) - index)
        case_name = "%s %s as %s, %s" % (op.method.upper(), op.path, "admin" if admin else "tenant", mode.value)
        runner.group_stats(GROUP)["cases"] += 1
        seed = seeds.get(plural)
        if seed is not None and "{name}" in op.path:
            seed_admin, seed_path, seed_body = seed
            runner.request(GROUP, "seed " + plural, "POST", seed_path, body=dumps(seed_body),
                           headers={"Content-Type": "application/json"}, admin=seed_admin or admin)
        fuzz_operation(runner, settings, op, admin, mode, fixed, examples, run_deadline,
                       case_name, settings.seed + index)
        if not runner.server.alive():
            runner.ensure_server(GROUP, case_name)
    if skipped:
        runner.log("schemathesis: time budget spent; %d of %d operation runs not started" % (skipped, len(runs)))
    runner.health(GROUP)


def fuzz_operation(runner, settings, op, admin, mode, fixed, examples, run_deadline, case_name, seed):
    strategy = op.as_strategy(generation_mode=mode, path_parameters=fixed or None)

    @hsettings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=False,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
        report_multiple_bugs=False,
    )
    @hypothesis.seed(seed)
    @given(case=strategy)
    def test(case):
        if time.monotonic() > run_deadline:
            raise OutOfTime()
        send_case(runner, settings, case, admin, case_name)

    try:
        test()
    except OutOfTime:
        pass
    except hypothesis.errors.Unsatisfiable:
        pass
    except Exception:
        runner.fail(GROUP, case_name, "harness", traceback.format_exc()[-1500:])


def send_case(runner, settings, case, admin, case_name):
    server = runner.ensure_server(GROUP, case_name)
    try:
        kwargs = case.as_transport_kwargs(base_url=server.url)
    except Exception:  # a generated case that cannot be put on the wire
        runner.count(GROUP, "not sendable")
        return
    kwargs = {k: v for k, v in kwargs.items() if k in REQUEST_ARGS}
    path = kwargs["url"][len(server.url):] or "/"
    body = kwargs.get("data", kwargs.get("json"))
    if "json" in kwargs and body is not None:
        body = dumps(body)
    ctype = (kwargs.get("headers") or {}).get("Content-Type", "<none>")
    response = runner.request(GROUP, case_name, case.method.upper(), path, body=body,
                              headers={"Content-Type": ctype}, params=kwargs.get("params"), admin=admin,
                              check_5xx=False, request_kwargs=kwargs)
    if response is None or allowed_5xx(response):
        return
    try:
        case.validate_response(response, checks=[not_a_server_error], headers=kwargs.get("headers"),
                               transport_kwargs=kwargs)
    except (AssertionError, BaseExceptionGroup) as e:  # Schemathesis' Failure / FailureGroup
        runner.fail(GROUP, case_name, "5xx", "not_a_server_error: %s\n%s" % (
            response.status_code, str(e)[:1500]))
    except Exception:
        # A response Schemathesis could not take in (one read past an early close): judge it here.
        if response.status_code >= 500:
            runner.fail(GROUP, case_name, "5xx", "%d on %s" % (response.status_code, path))


REQUEST_ARGS = ("method", "url", "headers", "files", "data", "params", "auth", "cookies", "json")
