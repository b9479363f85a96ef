"""Hostile bodies, patches and headers, written by hand, sent to real endpoints.

Each group is a list of cases; each case is a function of a `Ctx` that sends one or more
requests (creating the objects it patches first, so a case works on whatever server is current).
Every request must get an answer below 500 within the request timeout, and the server must stay
alive and under the memory bound; `/healthz` is checked after each group.

Most requests are sent as the namespace tenant (`namespace:fuzz`); cases marked `admin` use the
admin token (for cluster-scoped kinds the tenant may not write).
"""

import collections
import itertools
import json

from core import NAMESPACE, dumps

NS = "/api/v1/namespaces/" + NAMESPACE
PVCS = NS + "/persistentvolumeclaims"
PODS = NS + "/pods"
EVENTS = NS + "/events"
SNAPSHOTS = "/apis/snapshot.storage.k8s.io/v1/namespaces/%s/volumesnapshots" % NAMESPACE
PVS = "/api/v1/persistentvolumes"
NODES = "/api/v1/nodes"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/%s/leases" % NAMESPACE

JSON = "application/json"
YAML = "application/yaml"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"
DRY = {"dryRun": "All"}
APPLY_Q = {"fieldManager": "x"}
APPLY_DRY = {"fieldManager": "x", "dryRun": "All"}

_names = itertools.count(1)


def unique(prefix):
    return "%s-%d" % (prefix, next(_names))


def pvc(name, **spec):
    body = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Mi"}},
            # A class that does not exist: the claim stays Pending, nothing is provisioned.
            "storageClassName": "fz-none",
        },
    }
    body["spec"].update(spec)
    return body


def pod(name, **spec):
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [{"name": "c", "image": "busybox", "env": [{"name": "A", "value": "1"}]}],
            "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}],
        },
    }
    body["spec"].update(spec)
    return body


def event(name, **fields):
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name},
        "involvedObject": {"kind": "Pod", "name": "x", "namespace": NAMESPACE},
        "reason": "Fuzz",
        "message": "m",
        "type": "Normal",
    }
    body.update(fields)
    return body


def with_raw(doc, placeholder, raw):
    """JSON of `doc` with the string `placeholder` replaced by the raw JSON text `raw`."""
    text = dumps(doc)
    token = dumps(placeholder)
    assert text.count(token) == 1, placeholder
    return text.replace(token, raw if isinstance(raw, bytes) else raw.encode())


def deep_arrays(depth):
    return "[" * depth + "]" * depth


def deep_objects(depth, leaf="1"):
    return '{"a":' * depth + leaf + "}" * depth


class Ctx:
    def __init__(self, runner, group, case):
        self.runner = runner
        self.group = group
        self.case = case

    def send(self, method, path, body=None, ctype=None, params=None, admin=False, headers=None):
        hdrs = dict(headers or {})
        if ctype is not None:
            hdrs["Content-Type"] = ctype
        if isinstance(body, (dict, list)):
            body = dumps(body)
        elif isinstance(body, str):
            body = body.encode("utf-8")
        response = self.runner.request(self.group, self.case, method, path, body=body, headers=hdrs,
                                       params=params, admin=admin)
        return None if response is None else response.status_code

    def create(self, path, doc, admin=False):
        """Creates an object the case goes on to patch; a refusal is a harness bug, reported."""
        status = self.send("POST", path, dumps(doc), JSON, admin=admin)
        if status is not None and status != 201:
            self.runner.fail(self.group, self.case, "setup",
                             "creating %s/%s answered %s" % (path, doc["metadata"]["name"], status))
        return doc["metadata"]["name"]

    def fresh_pvc(self, **spec):
        return self.create(PVCS, pvc(unique("fz-pvc"), **spec))

    def fresh_pod(self, **spec):
        return self.create(PODS, pod(unique("fz-pod"), **spec))

    def patch(self, path, name, ctype, body, params=None, admin=False):
        return self.send("PATCH", "%s/%s" % (path, name), body, ctype, params=params, admin=admin)


class Groups:
    """Ordered groups of (case name, function(ctx))."""

    def __init__(self):
        self.groups = collections.OrderedDict()

    def add(self, group, name, fn):
        self.groups.setdefault(group, []).append((name, fn))


def build():
    g = Groups()
    deep_json(g)
    yaml_aliases(g)
    huge_lists(g)
    content_types(g)
    bad_encoding(g)
    numbers(g)
    quantities(g)
    json_patch(g)
    merge_patch(g)
    strategic_merge(g)
    apply_patch(g)
    query_strings(g)
    return g.groups


# -- deeply nested JSON -------------------------------------------------------------------------

DEPTHS = (10, 100, 1000, 100000)


def deep_json(g):
    grp = "deep-json"
    for d in DEPTHS:
        def create_arrays(c, d=d):
            c.send("POST", PVCS, with_raw(pvc(unique("deep"), fz="@"), "@", deep_arrays(d)), JSON)

        def create_objects(c, d=d):
            c.send("POST", PVCS, with_raw(pvc(unique("deep"), fz="@"), "@", deep_objects(d)), JSON)

        def create_strict(c, d=d):
            c.send("POST", PVCS, with_raw(pvc(unique("deep"), fz="@"), "@", deep_objects(d)), JSON,
                   params={"fieldValidation": "Strict", "dryRun": "All"})

        def create_in_labels(c, d=d):
            doc = pvc(unique("deep"))
            doc["metadata"]["labels"] = "@"
            c.send("POST", PVCS, with_raw(doc, "@", deep_objects(d)), JSON)

        def create_pod(c, d=d):
            c.send("POST", PODS, with_raw(pod(unique("deep"), fz="@"), "@", deep_arrays(d)), JSON)

        def create_event(c, d=d):
            c.send("POST", EVENTS, with_raw(event(unique("deep"), fz="@"), "@", deep_objects(d)), JSON)

        def whole_body(c, d=d):
            c.send("POST", PVCS, deep_objects(d), JSON)
            c.send("POST", PVCS, deep_arrays(d), JSON)

        def replace(c, d=d):
            name = c.fresh_pvc()
            c.send("PUT", "%s/%s" % (PVCS, name), with_raw(pvc(name, fz="@"), "@", deep_arrays(d)), JSON)
            c.send("PUT", "%s/%s" % (PVCS, name), with_raw(pvc(name, fz="@"), "@", deep_objects(d)), JSON,
                   params=DRY)

        def delete_options(c, d=d):
            name = c.fresh_pvc()
            c.send("DELETE", "%s/%s" % (PVCS, name), deep_objects(d), JSON, params=DRY)

        for label, fn in [
            ("PVC spec.fz: %d nested arrays", create_arrays),
            ("PVC spec.fz: %d nested objects", create_objects),
            ("PVC %d nested objects, fieldValidation=Strict, dryRun=All", create_strict),
            ("PVC metadata.labels: %d nested objects", create_in_labels),
            ("Pod spec.fz: %d nested arrays", create_pod),
            ("Event fz: %d nested objects", create_event),
            ("whole body %d nested", whole_body),
            ("PUT with %d nested values (and dryRun=All)", replace),
            ("DELETE with %d nested DeleteOptions, dryRun=All", delete_options),
        ]:
            g.add(grp, label % d, fn)


# -- YAML anchors and aliases -----------------------------------------------------------------


def yaml_manifest(name, fz_lines, kind="PersistentVolumeClaim"):
    """A YAML claim (or pod) whose `spec.fz` holds the given, already indented, lines."""
    if kind == "Pod":
        head = (
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\nspec:\n"
            "  containers: [{name: c, image: busybox}]\n" % name
        )
    else:
        head = (
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: %s\nspec:\n"
            "  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 1Mi}}\n"
            "  storageClassName: fz-none\n" % name
        )
    return head + "  fz:\n" + "".join("    %s\n" % line for line in fz_lines)


def billion_laughs(levels=9, fanout=10):
    names = ["l%d" % i for i in range(levels)]
    lines = ['%s: &%s [%s]' % (names[0], names[0], ", ".join(['"lol"'] * fanout))]
    for i in range(1, levels):
        lines.append("%s: &%s [%s]" % (names[i], names[i], ", ".join(["*" + names[i - 1]] * fanout)))
    return lines


def billion_laughs_maps(levels=9, fanout=10):
    names = ["l%d" % i for i in range(levels)]
    lines = ["%s: &%s {%s}" % (names[0], names[0], ", ".join("k%d: lol" % j for j in range(fanout)))]
    for i in range(1, levels):
        lines.append("%s: &%s {%s}" % (
            names[i], names[i], ", ".join("k%d: *%s" % (j, names[i - 1]) for j in range(fanout))))
    return lines


def fat_alias(size=2 * 1024 * 1024, count=2000):
    return ['s: &s "%s"' % ("x" * size), "l: [%s]" % ", ".join(["*s"] * count)]


def yaml_aliases(g):
    grp = "yaml-aliases"
    bombs = [
        ("billion laughs (9 levels of 10, lists)", lambda: billion_laughs()),
        ("billion laughs (9 levels of 10, maps)", lambda: billion_laughs_maps()),
        ("billion laughs (30 levels of 2)", lambda: billion_laughs(30, 2)),
        ("2 MiB string aliased 2000 times", lambda: fat_alias()),
        ("100 KiB map aliased 2000 times", lambda: [
            "m: &m {%s}" % ", ".join("k%d: %s" % (i, "y" * 20) for i in range(4000)),
            "l: [%s]" % ", ".join(["*m"] * 2000)]),
        ("self-referencing alias", lambda: ["a: &a [1, *a]"]),
        ("undefined alias", lambda: ["a: *nowhere"]),
        ("merge keys 1000 times", lambda: ["b: &b {x: 1, y: 2}"] + [
            "m%d: {<<: *b, z: %d}" % (i, i) for i in range(1000)]),
        ("alias used as a key", lambda: ["k: &k {a: 1}", "m: {? *k : 1}"]),
        ("1000 nested flow maps", lambda: ["d: " + "{a: " * 1000 + "1" + "}" * 1000]),
        ("tags", lambda: ['a: !!binary "aGVsbG8="', "b: !!float 1e999999", "c: !!int 123456789012345678901234567890",
                          "d: !!python/object:os.system {}", "e: !foo bar", "f: !!timestamp 2001-12-14",
                          "g: !!set {a, b}", "h: !!omap [a: 1]"]),
    ]
    for label, lines in bombs:
        def create(c, lines=lines):
            c.send("POST", PVCS, yaml_manifest(unique("yaml"), lines()), YAML)

        def create_dry(c, lines=lines):
            c.send("POST", PVCS, yaml_manifest(unique("yaml"), lines()), "application/x-yaml", params=DRY)

        def apply_existing(c, lines=lines):
            name = c.fresh_pvc()
            c.patch(PVCS, name, APPLY, yaml_manifest(name, lines()), params=APPLY_Q)

        def apply_new(c, lines=lines):
            c.patch(PVCS, unique("apply"), APPLY, yaml_manifest("ignored", lines()).replace(
                "name: ignored", "name: will-not-match"), params=APPLY_DRY)

        g.add(grp, "create (application/yaml): " + label, create)
        g.add(grp, "create dryRun=All (application/x-yaml): " + label, create_dry)
        g.add(grp, "apply-patch+yaml on an existing claim: " + label, apply_existing)
        g.add(grp, "apply-patch+yaml creating, dryRun=All: " + label, apply_new)

    def pod_laughs(c):
        c.send("POST", PODS, yaml_manifest(unique("yaml"), billion_laughs(), kind="Pod"), YAML)
        c.send("POST", PODS, yaml_manifest(unique("yaml"), fat_alias(), kind="Pod"), "text/yaml")

    def block_depth(c):
        lines = ["d:"] + ["  " * (i + 1) + "a:" for i in range(1000)] + ["  " * 1001 + "1"]
        c.send("POST", PVCS, yaml_manifest(unique("yaml"), lines), YAML)

    def multi_document(c):
        doc = yaml_manifest(unique("yaml"), ["a: 1"])
        c.send("POST", PVCS, doc + "---\n" + doc + "---\n" + "x: [", YAML)
        c.send("POST", PVCS, "---\n" * 50000, YAML)

    def flow_depth(c):
        # Only once: today's parser needs minutes for this, and each such case costs the full
        # request timeout (the apply group has one more).
        c.send("POST", PVCS, yaml_manifest(unique("yaml"), ["d: " + "[" * 100000 + "]" * 100000]), YAML)

    g.add(grp, "create (application/yaml): 100000 nested flow lists", flow_depth)
    g.add(grp, "Pod create with billion laughs and a fat alias", pod_laughs)
    g.add(grp, "1000 levels of block indentation", block_depth)
    g.add(grp, "multi-document YAML", multi_document)


# -- huge lists ---------------------------------------------------------------------------------


def huge_lists(g):
    grp = "huge-lists"
    finalizers = ["fuzz.dev/f%d" % i for i in range(100000)]
    labels = {"k%d" % i: "v" for i in range(100000)}

    def fin_create(c, params=None):
        doc = pvc(unique("fin"))
        doc["metadata"]["finalizers"] = finalizers
        status = c.send("POST", PVCS, doc, JSON, params=params)
        if status == 201:
            # A claim that keeps 100k finalizers: mark it deleted and list it once.
            c.send("DELETE", "%s/%s" % (PVCS, doc["metadata"]["name"]))
            c.send("GET", PVCS)

    g.add(grp, "PVC with 100k finalizers", fin_create)
    g.add(grp, "PVC with 100k finalizers, dryRun=All", lambda c: fin_create(c, DRY))

    def fin_duplicates(c):
        doc = pvc(unique("fin"))
        doc["metadata"]["finalizers"] = ["fuzz.dev/same"] * 100000
        c.send("POST", PVCS, doc, JSON)

    g.add(grp, "PVC with 100k identical finalizers", fin_duplicates)

    def fin_update(c):
        name = c.fresh_pvc()
        doc = pvc(name)
        doc["metadata"]["finalizers"] = finalizers
        c.send("PUT", "%s/%s" % (PVCS, name), doc, JSON, params=DRY)

    g.add(grp, "PUT a claim with 100k finalizers, dryRun=All", fin_update)

    def label_create(c, params=None):
        doc = pvc(unique("labels"))
        doc["metadata"]["labels"] = labels
        status = c.send("POST", PVCS, doc, JSON, params=params)
        if status == 201:
            c.send("GET", PVCS, params={"labelSelector": "k1=v,k99999=v"})

    g.add(grp, "PVC with 100k labels", label_create)
    g.add(grp, "PVC with 100k labels, dryRun=All", lambda c: label_create(c, DRY))

    def bad_labels(c):
        doc = pvc(unique("labels"))
        doc["metadata"]["labels"] = {"-bad%d-" % i: "!" for i in range(100000)}
        c.send("POST", PVCS, doc, JSON)

    g.add(grp, "PVC with 100k invalid labels", bad_labels)

    def annotations(c):
        doc = pvc(unique("ann"))
        doc["metadata"]["annotations"] = {"a%d" % i: "v" for i in range(100000)}
        c.send("POST", PVCS, doc, JSON)

    g.add(grp, "PVC with 100k annotations", annotations)

    def managed_fields(c):
        doc = pvc(unique("mf"))
        doc["metadata"]["managedFields"] = [
            {"manager": "m%d" % i, "operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:metadata": {"f:labels": {"f:a%d" % i: {}}}}}
            for i in range(15000)
        ]
        c.send("POST", PVCS, doc, JSON)

    g.add(grp, "PVC with 15k managedFields entries", managed_fields)

    def owner_refs(c):
        doc = pvc(unique("own"))
        doc["metadata"]["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u%d" % i} for i in range(30000)]
        c.send("POST", PVCS, doc, JSON)

    g.add(grp, "PVC with 30k ownerReferences", owner_refs)

    def pod_volumes(c):
        name = unique("vols")
        doc = pod(name, nodeName="fz-node", volumes=[
            {"name": "v%d" % i, "persistentVolumeClaim": {"claimName": "c%d" % i}} for i in range(40000)])
        status = c.send("POST", PODS, doc, JSON)
        if status == 201:
            c.send("DELETE", "%s/%s" % (PODS, name))

    g.add(grp, "Pod with 40k claim volumes on a node", pod_volumes)

    def pod_containers(c):
        doc = pod(unique("ctrs"), containers=[{"name": "c%d" % i, "image": "x"} for i in range(50000)])
        c.send("POST", PODS, doc, JSON, params=DRY)

    g.add(grp, "Pod with 50k containers, dryRun=All", pod_containers)

    def access_modes(c):
        c.send("POST", PVCS, pvc(unique("modes"), accessModes=["ReadWriteOnce"] * 100000), JSON)

    g.add(grp, "PVC with 100k access modes", access_modes)

    def long_message(c):
        c.send("POST", EVENTS, event(unique("ev"), message="m" * (2 * 1024 * 1024)), JSON)

    g.add(grp, "Event with a 2 MiB message", long_message)

    def over_limit(c):
        doc = pvc(unique("big"))
        doc["metadata"]["labels"] = {"k%d" % i: "v" * 40 for i in range(100000)}
        c.send("POST", PVCS, doc, JSON)

        def chunks():
            for _ in range(64):
                yield b" " * (128 * 1024)

        # A generator body goes out chunked, with no Content-Length: 8 MiB in 128 KiB pieces.
        c.runner.ensure_server(c.group, c.case)
        c.runner.request(c.group, c.case, "POST", PVCS, headers={"Content-Type": JSON, "Transfer-Encoding": "chunked"},
                         request_kwargs={"method": "POST", "url": c.runner.server.url + PVCS, "data": chunks(),
                                         "headers": {"Content-Type": JSON}})

    g.add(grp, "bodies over the 3 MiB limit (sized and chunked)", over_limit)


# -- content types --------------------------------------------------------------------------------


def content_types(g):
    grp = "content-types"
    valid = pvc("placeholder")

    def body_for(name):
        doc = json.loads(json.dumps(valid))
        doc["metadata"]["name"] = name
        return dumps(doc)

    create_types = [
        None, "", ";", "/", "application/", "text/plain", "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded", "multipart/form-data; boundary=fuzz",
        "application/vnd.kubernetes.protobuf", "application/json; charset=utf-8",
        "application/json; charset=UTF-8", "application/json;charset=iso-8859-1",
        "application/json; charset=utf-16", "application/json; charset=\"", "application/json;;;",
        "APPLICATION/JSON", "application/json, text/plain", "application/yaml; charset=utf-8",
        "application/json-patch+json", "application/apply-patch+yaml", "*/*", "application/*",
        "application/json; " + "x=y;" * 2000, "a" * 8000, "application/json\t",
    ]
    for ctype in create_types:
        def create(c, ctype=ctype):
            c.send("POST", PVCS, body_for(unique("ct")), ctype)

        g.add(grp, "create with Content-Type %r" % (ctype if ctype is None or len(ctype) < 60 else ctype[:40] + "..."),
              create)

    def special_bodies(c):
        name = unique("ct")
        form = "metadata.name=%s&spec=x" % name
        c.send("POST", PVCS, form, "application/x-www-form-urlencoded")
        multipart = (
            "--fuzz\r\nContent-Disposition: form-data; name=\"body\"\r\nContent-Type: application/json\r\n\r\n"
            + body_for(unique("ct")).decode() + "\r\n--fuzz--\r\n")
        c.send("POST", PVCS, multipart, "multipart/form-data; boundary=fuzz")
        c.send("POST", PVCS, b"k8s\x00\n\x0c\n\x02v1\x12\x06Pod" + b"\xff" * 64, "application/vnd.kubernetes.protobuf")
        c.send("POST", PVCS, body_for(unique("ct")).decode().encode("utf-16"), "application/json; charset=utf-16")
        c.send("POST", PVCS, body_for(unique("ct")).decode().encode("utf-32-le"), JSON)
        c.send("POST", PVCS, b"\x1f\x8b\x08\x00" + b"\x00" * 64, JSON, headers={"Content-Encoding": "gzip"})

    g.add(grp, "form, multipart, protobuf, UTF-16/32 and gzip-labelled bodies", special_bodies)

    patch_types = [None, "", JSON, YAML, "text/plain", "application/json-patch+json; charset=utf-8",
                   "application/merge-patch+json;charset=iso-8859-1", "APPLICATION/STRATEGIC-MERGE-PATCH+JSON",
                   "application/apply-patch+json", "application/apply-patch+yaml; charset=utf-16",
                   "application/vnd.kubernetes.protobuf", "multipart/form-data; boundary=x", "*/*"]

    def patches(c):
        name = c.fresh_pvc()
        for ctype in patch_types:
            c.patch(PVCS, name, ctype, '{"metadata":{"labels":{"a":"b"}}}', params=APPLY_Q)
            c.patch(PVCS, name, ctype, '[{"op":"add","path":"/metadata/labels/b","value":"c"}]')

    g.add(grp, "PATCH with odd content types", patches)

    def updates(c):
        name = c.fresh_pvc()
        for ctype in ["text/plain", MERGE_PATCH, APPLY, "application/vnd.kubernetes.protobuf", None]:
            c.send("PUT", "%s/%s" % (PVCS, name), body_for(name), ctype)

    g.add(grp, "PUT with odd content types", updates)

    def accepts(c):
        name = c.fresh_pvc()
        for accept in ["application/vnd.kubernetes.protobuf", "*/*;q=0", "application/json;as=Table;v=v1;g=meta.k8s.io",
                       "application/json;as=Table;v=v9;g=meta.k8s.io", "application/json;as=PartialObjectMetadata;g=meta.k8s.io",
                       "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io", "application/yaml",
                       "text/html", ",,,", ";", "application/json;as=;g=;v=", "a" * 8000,
                       ", ".join(["application/json;as=Table;g=x"] * 500)]:
            h = {"Accept": accept}
            c.send("GET", PVCS, headers=h)
            c.send("GET", "%s/%s" % (PVCS, name), headers=h)
            c.send("POST", PVCS, body_for(unique("acc")), JSON, headers=h, params=DRY)
            c.send("PATCH", "%s/%s" % (PVCS, name), '{"metadata":{"labels":{"a":"b"}}}', MERGE_PATCH, headers=h)
            c.send("DELETE", "%s/%s" % (PVCS, name), headers=h, params=DRY)
            c.send("GET", "/api/v1", headers=h)
            c.send("GET", "/apis", headers=h)
            c.send("GET", "/openapi/v3/api/v1", headers=h)

    g.add(grp, "odd Accept headers on every verb", accepts)


# -- encodings, truncation, malformed JSON ------------------------------------------------------


def bad_encoding(g):
    grp = "bad-encoding"

    def invalid_utf8(c):
        good = dumps(pvc("NAME"))
        for bad in [b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"a\x00b"]:
            c.send("POST", PVCS, good.replace(b"NAME", b"bad" + bad), JSON)
            c.send("POST", PVCS, good.replace(b'"storage":"1Mi"', b'"storage":"1' + bad + b'Mi"'), JSON)
            c.send("POST", PVCS, good.replace(b'{"name":', b'{"labels":{"' + bad + b'":"x"},"name":').replace(b"NAME", b"u8"), JSON)
            c.send("POST", PVCS, good.replace(b"NAME", b"bad" + bad), YAML)
        c.send("POST", PVCS, bytes(range(256)) * 64, JSON)
        c.send("POST", PVCS, bytes(range(256)) * 64, YAML)

    g.add(grp, "invalid UTF-8 in names, values, keys and whole bodies (JSON and YAML)", invalid_utf8)

    def escapes(c):
        good = dumps(pvc("NAME"))
        for esc in [b"\\ud800", b"\\udfff\\ud800", b"\\u0000", b"\\uDBFF\\uDFFF", b"\\uffff", b"\\u", b"\\u12", b"\\x41", b"\\"]:
            c.send("POST", PVCS, good.replace(b"NAME", b"esc" + esc), JSON)
            c.send("POST", PVCS, good.replace(b'"1Mi"', b'"1' + esc + b'Mi"'), JSON, params=DRY)
        name = c.fresh_pvc()
        c.patch(PVCS, name, MERGE_PATCH, b'{"metadata":{"labels":{"a\\ud800":"\\udc00"}}}')
        c.patch(PVCS, name, JSON_PATCH, b'[{"op":"add","path":"/metadata/labels/\\ud800","value":"x"}]')
        c.patch(PVCS, name, STRATEGIC, b'{"metadata":{"finalizers":["\\u0000"]}}')

    g.add(grp, "lone surrogates, NUL and broken escapes", escapes)

    def truncated(c):
        doc = pvc(unique("trunc"))
        doc["metadata"]["labels"] = {"a": "b"}
        doc["metadata"]["annotations"] = {"n": "\\u00e9"}
        full = dumps(doc)
        for cut in range(0, len(full), 7):
            c.send("POST", PVCS, full[:cut], JSON, params=DRY)
        yaml_doc = yaml_manifest(unique("trunc"), ["a: &a [1, 2]", "b: *a"]).encode()
        for cut in range(0, len(yaml_doc), 11):
            c.send("POST", PVCS, yaml_doc[:cut], YAML, params=DRY)

    g.add(grp, "truncated JSON and YAML bodies (every 7th / 11th prefix)", truncated)

    def odd_documents(c):
        full = dumps(pvc(unique("odd")))
        for body in [b"", b"   ", b"null", b"[]", b'"str"', b"1", b"true", full + b"garbage", full + full,
                     b"\xef\xbb\xbf" + full, full + b"\x00", b"{" * 5 + b"}" * 5, b'{"a":1,"a":2}',
                     b'{"metadata":{"name":"dup","name":"dup2"},"apiVersion":"v1","kind":"PersistentVolumeClaim"}',
                     b"/* comment */" + full, full.replace(b":", b" : ", 3), b'{"apiVersion":1}',
                     b'{"kind":{},"apiVersion":[]}']:
            c.send("POST", PVCS, body, JSON)
        name = c.fresh_pvc()
        for body in [b"", full[:20], b"\xff", b"[" * 200 + b"]" * 200, b'[{"op":"add"']:
            for ctype in [JSON_PATCH, MERGE_PATCH, STRATEGIC, APPLY]:
                c.patch(PVCS, name, ctype, body, params=APPLY_Q)

    g.add(grp, "odd documents (empty, scalars, trailing data, BOM, duplicate keys) and patches", odd_documents)


# -- numbers ------------------------------------------------------------------------------------

NUMBERS = ["1e999999", "-1e999999", "-0", "-0.0", "123456789012345678901234567890",
           "-123456789012345678901234567890", "1.5", "1e308", "4.9e-324", "9223372036854775807",
           "9223372036854775808", "-9223372036854775809", "18446744073709551616", "2147483648",
           "-2147483649", "0x10", "NaN", "Infinity", "1E400", "00", "01", ".5", "1.", "+1", "1e-999999"]


def numbers(g):
    grp = "numbers"

    def pod_fields(c):
        for n in NUMBERS:
            for field in ["terminationGracePeriodSeconds", "activeDeadlineSeconds", "priority"]:
                c.send("POST", PODS, with_raw(pod(unique("num"), **{field: "@"}), "@", n), JSON, params=DRY)
            doc = pod(unique("num"))
            doc["spec"]["containers"][0]["ports"] = [{"containerPort": "@"}]
            c.send("POST", PODS, with_raw(doc, "@", n), JSON, params=DRY)

    g.add(grp, "odd numbers in Pod integer fields", pod_fields)

    def meta_fields(c):
        for n in NUMBERS:
            for field in ["generation", "deletionGracePeriodSeconds"]:
                doc = pvc(unique("num"))
                doc["metadata"][field] = "@"
                c.send("POST", PVCS, with_raw(doc, "@", n), JSON)
            c.send("POST", EVENTS, with_raw(event(unique("num"), count="@"), "@", n), JSON)
            doc = pvc(unique("num"))
            doc["metadata"]["resourceVersion"] = "@"
            c.send("POST", PVCS, with_raw(doc, "@", n), JSON, params=DRY)

    g.add(grp, "odd numbers in metadata and Event.count", meta_fields)

    def patches(c):
        name = c.fresh_pod()
        for n in NUMBERS:
            raw = '[{"op":"replace","path":"/spec/terminationGracePeriodSeconds","value":%s}]' % n
            c.patch(PODS, name, JSON_PATCH, raw)
            c.patch(PODS, name, MERGE_PATCH, '{"spec":{"activeDeadlineSeconds":%s}}' % n)
            c.patch(PODS, name, STRATEGIC, '{"metadata":{"resourceVersion":%s}}' % n)
            c.patch(PODS, name, APPLY, "apiVersion: v1\nkind: Pod\nmetadata: {name: %s}\nspec: {priority: %s}\n" % (name, n),
                    params=APPLY_Q)
            c.patch(PODS, name, JSON_PATCH, '[{"op":"replace","path":"/metadata/resourceVersion","value":"%s"}]' % n)

    g.add(grp, "odd numbers in patches of all four types", patches)

    def query_and_delete(c):
        name = c.fresh_pvc()
        for n in NUMBERS:
            c.send("GET", PVCS, params={"limit": n})
            c.send("GET", PVCS, params={"resourceVersion": n, "resourceVersionMatch": "NotOlderThan"})
            c.send("GET", "%s/%s" % (PVCS, name), params={"resourceVersion": n})
            c.send("DELETE", "%s/%s" % (PVCS, name), with_raw({"gracePeriodSeconds": "@", "dryRun": ["All"]}, "@", n),
                   JSON, params={"gracePeriodSeconds": n, "dryRun": "All"})
            c.send("DELETE", "%s/%s" % (PVCS, name), with_raw(
                {"preconditions": {"resourceVersion": "@"}, "dryRun": ["All"]}, "@", n), JSON)

    g.add(grp, "odd numbers in query parameters and DeleteOptions", query_and_delete)

    def admin_numbers(c):
        for n in NUMBERS[:12]:
            lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": unique("lease")},
                     "spec": {"holderIdentity": "x", "leaseDurationSeconds": "@"}}
            c.send("POST", LEASES, with_raw(lease, "@", n), JSON, admin=True, params=DRY)
            node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": unique("node")},
                    "status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": "@"}}}}
            c.send("POST", NODES, with_raw(node, "@", n), JSON, admin=True, params=DRY)

    g.add(grp, "odd numbers in Lease and Node fields (admin)", admin_numbers)


# -- quantities -----------------------------------------------------------------------------------

QUANTITIES = ["3000000000.000000000000000000000000000000", "9Ei", "0.0000000001", "1e-30Gi", "1e-30",
              "8Ei", "7.999999999999999999Ei", "9223372036854775807", "9223372036854775808",
              "99999999999999999999999999999999999999Ei", "-1", "-0", "0", "1E3", "1e3", "1e308",
              "1e999999", "1e-999999", "0.1m", "1n", "1.123456789012345678901234567890Ki", "", " ", "1 Gi",
              "Gi", "1GiB", "0x10", "+1Gi", "\u221e", "1e+3Mi", ".5Gi", "5.Gi", "1.e3", "1" + "0" * 1000,
              "0." + "0" * 1000 + "1", "1" * 100 + "Ei", "NaN", "Infinity", "-9Ei", "1m", "1Mi" * 10]


def quantities(g):
    grp = "quantities"

    def claims(c):
        for q in QUANTITIES:
            c.send("POST", PVCS, pvc(unique("q"), resources={"requests": {"storage": q}}), JSON)
            c.send("POST", PVCS, pvc(unique("q"), resources={"requests": {"storage": "1Mi"}, "limits": {"storage": q}}),
                   JSON, params=DRY)
            c.send("POST", PVCS, pvc(unique("q"), resources={"requests": {"storage": q}, "limits": {"storage": q}}),
                   JSON, params=DRY)

    g.add(grp, "claims requesting odd quantities", claims)

    def claim_growth(c):
        name = c.fresh_pvc()
        for q in QUANTITIES:
            c.patch(PVCS, name, MERGE_PATCH, {"spec": {"resources": {"requests": {"storage": q}}}})
            c.patch(PVCS, name, STRATEGIC, {"spec": {"resources": {"requests": {"storage": q}}}}, params=DRY)

    g.add(grp, "patching a claim's request to odd quantities", claim_growth)

    def pods(c):
        for q in QUANTITIES:
            doc = pod(unique("q"))
            doc["spec"]["containers"][0]["resources"] = {"requests": {"cpu": q, "memory": q}, "limits": {"memory": q}}
            doc["spec"]["overhead"] = {"cpu": q}
            c.send("POST", PODS, doc, JSON, params=DRY)

    g.add(grp, "pods with odd resource quantities", pods)

    def binder(c):
        # Volumes (admin) and claims (tenant) of one class, all with odd sizes: the binder
        # compares every pair it considers.
        for q in QUANTITIES:
            pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": unique("fz-pv")},
                  "spec": {"capacity": {"storage": q}, "accessModes": ["ReadWriteOnce"], "storageClassName": "fz-q",
                           "hostPath": {"path": "/nonexistent"}}}
            c.send("POST", PVS, pv, JSON, admin=True)
        for q in QUANTITIES:
            c.send("POST", PVCS, pvc(unique("fz-q"), storageClassName="fz-q", resources={"requests": {"storage": q}}), JSON)
        sc = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": unique("fz-sc")},
              "provisioner": "stowage.dev/local", "parameters": {"size": "9Ei", "capacity": "1e-30Gi"}}
        c.send("POST", "/apis/storage.k8s.io/v1/storageclasses", sc, JSON, admin=True)
        for q in QUANTITIES[:12]:
            c.send("POST", PVCS, pvc(unique("fz-q"), storageClassName=sc["metadata"]["name"],
                                     resources={"requests": {"storage": q}}), JSON)

    g.add(grp, "volumes and claims of odd sizes for the binder and provisioner", binder)


# -- JSON patch ------------------------------------------------------------------------------------


def json_patch(g):
    grp = "json-patch"

    def ops(c, ops_list, params=None, target="pvc"):
        name = c.fresh_pvc() if target == "pvc" else c.fresh_pod()
        path = PVCS if target == "pvc" else PODS
        return c.patch(path, name, JSON_PATCH, ops_list, params=params)

    seed = [{"op": "add", "path": "/spec/fz", "value": {"a": "x"}}]

    def own_child(n, params=None):
        return lambda c: ops(c, seed + [{"op": "copy", "from": "/spec/fz", "path": "/spec/fz/c"}] * n, params)

    def own_child_new_keys(n, params=None):
        return lambda c: ops(c, seed + [{"op": "copy", "from": "/spec/fz", "path": "/spec/fz/c%d" % i}
                                        for i in range(n)], params)

    def own_child_append(n, params=None):
        return lambda c: ops(c, [{"op": "add", "path": "/spec/fz", "value": [1]}] +
                             [{"op": "copy", "from": "/spec/fz", "path": "/spec/fz/-"}] * n, params)

    def sibling(n, params=None):
        steps = [{"op": "add", "path": "/spec/fa", "value": ["x"]}]
        for _ in range(n):
            steps.append({"op": "copy", "from": "/spec/fa", "path": "/spec/fb"})
            steps.append({"op": "copy", "from": "/spec/fb", "path": "/spec/fa/0"})
        return lambda c: ops(c, steps, params)

    def root_into_child(n, params=None):
        return lambda c: ops(c, [{"op": "copy", "from": "", "path": "/spec/fz%d" % i} for i in range(n)], params)

    g.add(grp, "copy a value into its own child, 30 times (depth 30)", own_child(30))
    g.add(grp, "copy a value into its own child under new keys, 30 times (2^30 growth)", own_child_new_keys(30))
    g.add(grp, "copy a value into its own child under new keys, 30 times, dryRun=All", own_child_new_keys(30, DRY))
    g.add(grp, "copy a list onto its own end ('-'), 30 times", own_child_append(30))
    g.add(grp, "copy into a sibling and back, 30 times", sibling(30))
    g.add(grp, "copy into a sibling and back, 30 times, dryRun=All", sibling(30, DRY))
    g.add(grp, "copy the whole object into a child of itself, 30 times", root_into_child(30))
    g.add(grp, "copy a value into its own child, 20000 times (depth 20000)", own_child(20000))
    g.add(grp, "copy a value into its own child, 20000 times, dryRun=All", own_child(20000, DRY))

    g.add(grp, "20000 label adds", lambda c: ops(c, [
        {"op": "add", "path": "/metadata/labels", "value": {}}] + [
        {"op": "add", "path": "/metadata/labels/k%d" % i, "value": "v"} for i in range(20000)]))
    g.add(grp, "20000 finalizer appends ('-')", lambda c: ops(c, [
        {"op": "add", "path": "/metadata/finalizers", "value": []}] + [
        {"op": "add", "path": "/metadata/finalizers/-", "value": "fuzz.dev/f%d" % i} for i in range(20000)]))
    g.add(grp, "20000 finalizer inserts at index 0, dryRun=All", lambda c: ops(c, [
        {"op": "add", "path": "/metadata/finalizers", "value": []}] + [
        {"op": "add", "path": "/metadata/finalizers/0", "value": "fuzz.dev/f%d" % i} for i in range(20000)], DRY))
    g.add(grp, "20000 test ops", lambda c: ops(c, [
        {"op": "test", "path": "/spec/storageClassName", "value": "fz-none"}] * 20000))
    g.add(grp, "20000 add/remove pairs", lambda c: ops(c, [
        {"op": "add", "path": "/spec/fz", "value": "x"}, {"op": "remove", "path": "/spec/fz"}] * 10000))
    g.add(grp, "20000 moves back and forth", lambda c: ops(c, seed + [
        {"op": "move", "from": "/spec/fz", "path": "/spec/fy"}, {"op": "move", "from": "/spec/fy", "path": "/spec/fz"}] * 10000))

    def moves(c):
        for steps in [
            [{"op": "move", "from": "/spec", "path": "/spec/fz"}],
            [{"op": "move", "from": "/metadata", "path": "/metadata/labels/x"}],
            [{"op": "move", "from": "", "path": "/spec/fz"}],
            [{"op": "move", "from": "/spec", "path": "/spec"}],
            [{"op": "move", "from": "/spec/accessModes", "path": "/spec/accessModes/-"}],
            [{"op": "move", "from": "/spec/accessModes/0", "path": "/spec/accessModes/0/x"}],
            [{"op": "copy", "from": "/spec", "path": "/spec/fz"}, {"op": "move", "from": "/spec", "path": "/spec/fz/fz/x"}],
        ]:
            ops(c, steps)

    g.add(grp, "move into its own child", moves)

    def escapes(c):
        for p in ["/metadata/labels/fuzz.dev~1a", "/metadata/annotations/~0~1", "/metadata/labels/~",
                  "/metadata/labels/~2", "/metadata/labels/a~", "~1", "/~0", "//", "/metadata//labels",
                  "metadata/labels", "/metadata/labels/%2F", "/metadata/labels/~01", "/metadata/labels/" + "~1" * 10000,
                  "/" + "/".join(["a"] * 10000), "/metadata/labels/\u00e9", ""]:
            ops(c, [{"op": "add", "path": "/metadata/labels", "value": {}}, {"op": "add", "path": p, "value": "v"}])
            ops(c, [{"op": "copy", "from": p, "path": "/spec/fz"}, {"op": "test", "path": p, "value": "v"}])

    g.add(grp, "paths with ~1 and ~0 escapes and odd tokens", escapes)

    def dash_index(c):
        fin = {"op": "add", "path": "/metadata/finalizers", "value": ["fuzz.dev/a"]}
        for steps in [
            [{"op": "add", "path": "/metadata/finalizers/-", "value": "fuzz.dev/b"}],
            [fin, {"op": "add", "path": "/metadata/finalizers/-", "value": "fuzz.dev/b"}],
            [fin, {"op": "remove", "path": "/metadata/finalizers/-"}],
            [fin, {"op": "replace", "path": "/metadata/finalizers/-", "value": "x"}],
            [fin, {"op": "test", "path": "/metadata/finalizers/-", "value": "x"}],
            [fin, {"op": "copy", "from": "/metadata/finalizers/-", "path": "/spec/fz"}],
            [fin, {"op": "move", "from": "/metadata/finalizers/-", "path": "/spec/fz"}],
            [{"op": "replace", "path": "/-", "value": 1}],
        ] + [[fin, {"op": "add", "path": "/metadata/finalizers/%s" % i, "value": "fuzz.dev/c"}]
             for i in ["01", "-1", "18446744073709551616", "1e3", "4294967296", " 0", "0 ", "+0", "2", "1"]]:
            ops(c, steps)

    g.add(grp, "the '-' index and odd indices", dash_index)

    def malformed(c):
        for steps in [
            [{}], [{"op": "add"}], [{"op": "explode", "path": "/spec"}], [{"op": "add", "path": "/spec/fz"}],
            [{"op": 1, "path": 2, "value": 3}], [1, "2", None], [[{"op": "add"}]], [],
            [{"op": "add", "path": "/spec/fz", "value": 1, "extra": {"a": [1, 2]}}],
            [{"op": "replace", "path": "", "value": []}], [{"op": "replace", "path": "", "value": {}}],
            [{"op": "replace", "path": "", "value": "x"}], [{"op": "remove", "path": ""}],
            [{"op": "add", "path": "", "value": None}], [{"op": "remove", "path": "/metadata"}],
            [{"op": "remove", "path": "/metadata/name"}], [{"op": "replace", "path": "/kind", "value": "Pod"}],
            [{"op": "replace", "path": "/apiVersion", "value": None}],
        ]:
            ops(c, steps)
        name = c.fresh_pvc()
        c.patch(PVCS, name, JSON_PATCH, with_raw([{"op": "add", "path": "/spec/fz", "value": "@"}], "@", deep_arrays(120)))
        c.patch(PVCS, name, JSON_PATCH, with_raw([{"op": "test", "path": "/spec", "value": "@"}], "@", deep_objects(120)))
        c.patch(PVCS, name, JSON_PATCH, with_raw([{"op": "replace", "path": "", "value": "@"}], "@", deep_objects(120)))
        c.patch(PVCS, name, JSON_PATCH, deep_arrays(100000))

    g.add(grp, "malformed operations, root replacement and deep values", malformed)

    g.add(grp, "Pod: copy spec.containers into its own child, 30 times", lambda c: ops(c, [
        {"op": "copy", "from": "/spec/containers", "path": "/spec/containers/0/fz%d" % i} for i in range(30)],
        target="pod"))


# -- merge patch ----------------------------------------------------------------------------------


def merge_patch(g):
    grp = "merge-patch"

    def on_fresh(body, params=None, path=PVCS):
        def run(c):
            name = c.fresh_pvc() if path == PVCS else c.fresh_pod()
            c.patch(path, name, MERGE_PATCH, body() if callable(body) else body, params=params)
        return run

    g.add(grp, "100k null labels", on_fresh(lambda: {"metadata": {"labels": {"k%d" % i: None for i in range(100000)}}}))
    g.add(grp, "100k null spec fields, dryRun=All", on_fresh(lambda: {"spec": {"f%d" % i: None for i in range(100000)}}, DRY))
    g.add(grp, "nulls for every top-level field", on_fresh({"apiVersion": None, "kind": None, "metadata": None,
                                                            "spec": None, "status": None}))
    g.add(grp, "null metadata", on_fresh({"metadata": None}))
    g.add(grp, "100k new labels", on_fresh(lambda: {"metadata": {"labels": {"k%d" % i: "v" for i in range(100000)}}}))
    g.add(grp, "100k finalizers", on_fresh(lambda: {"metadata": {"finalizers": ["fuzz.dev/f%d" % i for i in range(100000)]}}))
    for d in DEPTHS:
        g.add(grp, "%d nested objects in spec" % d, on_fresh(lambda d=d: with_raw({"spec": {"fz": "@"}}, "@", deep_objects(d))))
        g.add(grp, "%d nested nulls in spec, dryRun=All" % d,
              on_fresh(lambda d=d: with_raw({"spec": {"fz": "@"}}, "@", deep_objects(d, "null")), DRY))
        g.add(grp, "%d nested objects as the whole patch" % d, on_fresh(lambda d=d: deep_objects(d)))
    for body in ["[]", '"x"', "null", "1", '[{"op":"add","path":"/spec/fz","value":1}]']:
        g.add(grp, "non-object patch %s" % body, on_fresh(body))
    g.add(grp, "strategic directives in a merge patch", on_fresh(
        {"metadata": {"$patch": "delete", "$setElementOrder/finalizers": [1], "$retainKeys": ["x"]},
         "$patch": "replace"}))

    def status(c):
        name = c.fresh_pod()
        c.patch(PODS + "/%s" % name, "status", MERGE_PATCH,
                with_raw({"status": {"phase": "Running", "fz": "@"}}, "@", deep_objects(120)))
        c.patch(PODS + "/%s" % name, "status", MERGE_PATCH,
                {"status": {"conditions": [{"type": "T%d" % i, "status": "True"} for i in range(20000)]}})
        c.patch(PVCS + "/%s" % c.fresh_pvc(), "status", MERGE_PATCH, {"status": {"phase": "Bound"}})

    g.add(grp, "status subresource: deep and 20k conditions", status)


# -- strategic merge patch --------------------------------------------------------------------------


def strategic_merge(g):
    grp = "strategic-merge"
    fin = lambda n, prefix="f": ["fuzz.dev/%s%d" % (prefix, i) for i in range(n)]

    def on_pvc(body, params=None, setup=None):
        def run(c):
            name = c.fresh_pvc()
            if setup is not None:
                c.patch(PVCS, name, MERGE_PATCH, setup())
            c.patch(PVCS, name, STRATEGIC, body() if callable(body) else body, params=params)
        return run

    def on_pod(body, params=None):
        def run(c):
            name = c.fresh_pod()
            c.patch(PODS, name, STRATEGIC, body() if callable(body) else body, params=params)
        return run

    g.add(grp, "50000 finalizers", on_pvc(lambda: {"metadata": {"finalizers": fin(50000)}}))
    g.add(grp, "50000 finalizers, dryRun=All", on_pvc(lambda: {"metadata": {"finalizers": fin(50000)}}, DRY))
    g.add(grp, "50000 new finalizers onto 50000 existing, dryRun=All",
          on_pvc(lambda: {"metadata": {"finalizers": fin(50000, "g")}}, DRY,
                 setup=lambda: {"metadata": {"finalizers": fin(50000)}}))
    g.add(grp, "$setElementOrder/finalizers with 50000 entries",
          on_pvc(lambda: {"metadata": {"$setElementOrder/finalizers": fin(50000)[::-1], "finalizers": fin(50000)}}, DRY))
    g.add(grp, "$setElementOrder/finalizers with 50000 entries, short list",
          on_pvc(lambda: {"metadata": {"$setElementOrder/finalizers": fin(50000), "finalizers": fin(10)}}, DRY))
    g.add(grp, "$deleteFromPrimitiveList/finalizers with 50000 entries on 50000 finalizers",
          on_pvc(lambda: {"metadata": {"$deleteFromPrimitiveList/finalizers": fin(50000)[::-1]}}, DRY,
                 setup=lambda: {"metadata": {"finalizers": fin(50000)}}))
    g.add(grp, "$deleteFromPrimitiveList on a map, a scalar and a missing field",
          on_pvc({"metadata": {"$deleteFromPrimitiveList/labels": ["a"], "$deleteFromPrimitiveList/name": ["x"],
                               "$deleteFromPrimitiveList/nothing": [1], "$deleteFromPrimitiveList/": [],
                               "$deleteFromPrimitiveList/finalizers": "notalist"}}))

    for value in ["replace", "delete", "merge", "Replace", "", 1, None, {}, [], "x" * 10000]:
        g.add(grp, "$patch %s at the top" % json.dumps(value)[:20], on_pvc({"$patch": value, "spec": {"fz": 1}}))
        g.add(grp, "$patch %s in metadata and spec" % json.dumps(value)[:20],
              on_pvc({"metadata": {"$patch": value}, "spec": {"$patch": value, "resources": {"$patch": value}}}, DRY))
        g.add(grp, "$patch %s in list items" % json.dumps(value)[:20], on_pod(
            {"spec": {"volumes": [{"$patch": value}, {"name": "v", "$patch": value}],
                      "containers": [{"name": "c", "$patch": value, "env": [{"$patch": value}]}]}}))
    for value in ["x", [1, 2], [], None, {}, ["metadata"], ["spec", "spec"]]:
        g.add(grp, "$retainKeys %s" % json.dumps(value), on_pvc({"$retainKeys": value, "spec": {"$retainKeys": value}}, DRY))
    g.add(grp, "odd $setElementOrder", on_pod({"spec": {
        "$setElementOrder/volumes": "notalist", "$setElementOrder/containers": [{"name": "zz"}, 1, None, [], {"name": {"a": 1}}],
        "$setElementOrder/nodeName": ["x"], "$setElementOrder/": [1]}}))
    g.add(grp, "$setElementOrder/volumes with 50000 entries",
          on_pod(lambda: {"spec": {"$setElementOrder/volumes": [{"name": "v%d" % i} for i in range(50000)],
                                   "volumes": [{"name": "v%d" % i, "persistentVolumeClaim": {"claimName": "c"}} for i in range(200)]}}, DRY))
    g.add(grp, "unknown directives", on_pvc({"$foo": 1, "$": 2, "metadata": {"$bar": [1]}, "spec": {"$setElementOrder": 1}}))
    g.add(grp, "30000 volumes merged by key", on_pod(lambda: {"spec": {"volumes": [
        {"name": "v%d" % i, "persistentVolumeClaim": {"claimName": "c%d" % i}} for i in range(30000)]}}, DRY))
    g.add(grp, "30000 volumes with the same name", on_pod(lambda: {"spec": {"volumes": [
        {"name": "same", "persistentVolumeClaim": {"claimName": "c%d" % i}} for i in range(30000)]}}, DRY))
    g.add(grp, "20000 env entries in a container", on_pod(lambda: {"spec": {"containers": [
        {"name": "c", "env": [{"name": "E%d" % i, "value": "v"} for i in range(20000)]}]}}, DRY))
    g.add(grp, "list items without merge keys, or not objects", on_pod({"spec": {
        "volumes": [{"persistentVolumeClaim": {"claimName": "c"}}], "containers": ["c", 1, None, [1]]}}))
    g.add(grp, "keyed list items with odd keys", on_pod({"spec": {
        "volumes": [{"name": None}, {"name": {"a": 1}}, {"name": [1]}, {"name": 1e300}],
        "containers": [{"name": "c", "ports": [{"containerPort": "x"}, {"containerPort": None}]}]}}))
    g.add(grp, "30000 ownerReferences merged by uid", on_pvc(lambda: {"metadata": {"ownerReferences": [
        {"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u%d" % i} for i in range(30000)]}}, DRY))
    for d in (100, 127, 1000):
        g.add(grp, "%d nested objects with $patch: replace" % d,
              on_pvc(lambda d=d: with_raw({"spec": {"fz": "@"}}, "@", deep_objects(d, '{"$patch":"replace","b":1}'))))
        g.add(grp, "%d nested lists in a keyed list item" % d,
              on_pod(lambda d=d: with_raw({"spec": {"volumes": [{"name": "v", "fz": "@"}]}}, "@", deep_arrays(d))))


# -- server-side apply --------------------------------------------------------------------------


def apply_patch(g):
    grp = "apply"

    def apply_doc(name, extra_lines=(), kind="PersistentVolumeClaim"):
        return yaml_manifest(name, list(extra_lines) or ["a: 1"], kind=kind)

    def on_pvc(make, params=APPLY_Q, ctype=APPLY):
        def run(c):
            name = c.fresh_pvc()
            c.patch(PVCS, name, ctype, make(name), params=params)
        return run

    for d in (100, 1000, 10000):
        g.add(grp, "%d nested flow lists" % d, on_pvc(lambda n, d=d: apply_doc(n, ["d: " + "[" * d + "]" * d])))
        g.add(grp, "%d nested flow maps, dryRun=All" % d,
              on_pvc(lambda n, d=d: apply_doc(n, ["d: " + "{a: " * d + "1" + "}" * d]), APPLY_DRY))
    g.add(grp, "100000 nested flow maps", on_pvc(lambda n: apply_doc(n, ["d: " + "{a: " * 100000 + "1" + "}" * 100000])))
    g.add(grp, "billion laughs", on_pvc(lambda n: apply_doc(n, billion_laughs())))
    g.add(grp, "billion laughs, dryRun=All", on_pvc(lambda n: apply_doc(n, billion_laughs_maps()), APPLY_DRY))
    g.add(grp, "2 MiB string aliased 2000 times, dryRun=All", on_pvc(lambda n: apply_doc(n, fat_alias()), APPLY_DRY))

    def finalizers_twice(c):
        name = c.fresh_pvc()
        for prefix in ("f", "g"):
            lines = yaml_manifest(name, ["a: 1"]).replace(
                "metadata:\n  name: %s\n" % name,
                "metadata:\n  name: %s\n  finalizers: [%s]\n" % (name, ", ".join(
                    "fuzz.dev/%s%d" % (prefix, i) for i in range(50000))))
            c.patch(PVCS, name, APPLY, lines, params=APPLY_Q)

    g.add(grp, "50000 finalizers, applied twice with different sets", finalizers_twice)

    def labels(c):
        name = c.fresh_pvc()
        body = yaml_manifest(name, ["a: 1"]).replace(
            "metadata:\n  name: %s\n" % name,
            "metadata:\n  name: %s\n  labels: {%s}\n" % (name, ", ".join("k%d: v" % i for i in range(100000))))
        c.patch(PVCS, name, APPLY, body, params=APPLY_Q)
        c.patch(PVCS, name, APPLY, body, params={"fieldManager": "y", "force": "true"})

    g.add(grp, "100k labels, applied by two managers", labels)

    def managers(c):
        name = c.fresh_pvc()
        body = apply_doc(name)
        for params in [{}, {"fieldManager": ""}, {"fieldManager": "m" * 10000}, {"fieldManager": "\u00e9\x00\x7f"},
                       {"fieldManager": "x", "force": "maybe"}, {"fieldManager": "x", "force": "true"},
                       {"fieldManager": "x", "fieldValidation": "Strict"}, {"fieldManager": "x", "fieldValidation": "Bogus"}]:
            c.patch(PVCS, name, APPLY, body, params=params)
        c.patch(PVCS, name, "application/apply-patch+json", dumps(pvc(name)), params=APPLY_Q)
        c.patch(PVCS, name, APPLY, dumps(pvc(name)), params=APPLY_Q)

    g.add(grp, "odd fieldManager, force and fieldValidation values", managers)

    def pod_lists(c):
        name = c.fresh_pod()
        body = ("apiVersion: v1\nkind: Pod\nmetadata: {name: %s}\nspec:\n  volumes: [{persistentVolumeClaim: {claimName: c}}, "
                "{name: v}, {name: v}, 1, null]\n  containers: [{image: x}, {name: {a: 1}}]\n" % name)
        c.patch(PODS, name, APPLY, body, params=APPLY_Q)
        body = "apiVersion: v1\nkind: Pod\nmetadata: {name: %s}\nspec:\n  volumes: [%s]\n" % (
            name, ", ".join("{name: v%d, emptyDir: {}}" % i for i in range(30000)))
        c.patch(PODS, name, APPLY, body, params=APPLY_DRY)

    g.add(grp, "Pod: keyed lists without keys, and 30000 volumes", pod_lists)

    def managed_fields(c):
        name = c.fresh_pvc()
        body = yaml_manifest(name, ["a: 1"]).replace(
            "metadata:\n  name: %s\n" % name,
            "metadata:\n  name: %s\n  managedFields: [{manager: x, operation: Apply, fieldsV1: %s}]\n" % (
                name, "{f:a: " * 100 + "{}" + "}" * 100))
        c.patch(PVCS, name, APPLY, body, params=APPLY_Q)

    g.add(grp, "managedFields inside the applied configuration", managed_fields)

    def creating(c):
        for lines in (billion_laughs(), ["d: " + "[" * 1000 + "]" * 1000], ["a: &a {b: 1}", "c: *a"]):
            name = unique("apply-new")
            c.patch(PVCS, name, APPLY, yaml_manifest(name, lines), params=APPLY_Q)

    g.add(grp, "apply creating new claims with aliases and depth", creating)


# -- query strings ------------------------------------------------------------------------------


def query_strings(g):
    grp = "query-strings"

    def selectors(c):
        c.fresh_pvc()
        for sel in ["a in (" + ",".join("v%d" % i for i in range(20000)) + ")", ",".join("k%d=v" % i for i in range(5000)),
                    "(" * 10000, "a notin ()", "!", "a!=", "=", "a==b==c", "a in (b", "\u00e9=\u00e9", "a" * 100000,
                    "a,b,c,!d,e in (f),g notin (h)", "a=b\x00"]:
            c.send("GET", PVCS, params={"labelSelector": sel})
            c.send("DELETE", PVCS, params={"labelSelector": sel, "dryRun": "All"})
        for sel in ["metadata.name=x", "metadata.name==x,metadata.namespace!=y", "spec.x=y", "status.phase=Pending",
                    "metadata.name", "=", ",".join("metadata.name=x%d" % i for i in range(5000))]:
            c.send("GET", PVCS, params={"fieldSelector": sel})
            c.send("GET", "/api/v1/persistentvolumeclaims", params={"fieldSelector": sel})

    g.add(grp, "hostile label and field selectors", selectors)

    def continues(c):
        import base64
        for raw in [b"{}", b'{"rv":1e999999,"ns":"fuzz","name":"a"}', b'{"rv":-1,"ns":"fuzz","name":"a"}',
                    b'{"rv":18446744073709551615,"ns":"other","name":"' + b"a" * 10000 + b'"}',
                    b"[" * 100000, b"\xff\xfe"]:
            token = base64.urlsafe_b64encode(raw).decode().rstrip("=")
            c.send("GET", PVCS, params={"limit": "1", "continue": token})
        for token in ["%%%", "====", "a" * 100000, ""]:
            c.send("GET", PVCS, params={"limit": "1", "continue": token})

    g.add(grp, "forged continue tokens", continues)

    def repeated(c):
        name = c.fresh_pvc()
        c.send("PATCH", "%s/%s" % (PVCS, name), '{"metadata":{"labels":{"a":"b"}}}', MERGE_PATCH,
               params=[("dryRun", "All")] * 2000 + [("fieldManager", "a"), ("fieldManager", "b")])
        c.send("GET", PVCS + "?" + "&".join(["limit=1"] * 3000))
        c.send("GET", PVCS + "?limit=%ff&%00=%00&labelSelector=%zz")
        for q in ["dryRun=None", "dryRun=all", "dryRun=", "fieldValidation=", "watch=maybe", "includeObject=x",
                  "propagationPolicy=Bogus", "gracePeriodSeconds=-1", "orphanDependents=x", "pretty=x",
                  "timeoutSeconds=-1&watch=false", "allowWatchBookmarks=x"]:
            c.send("GET", PVCS + "?" + q)
            c.send("DELETE", "%s/%s?%s" % (PVCS, name, q))

    g.add(grp, "repeated, malformed and unknown query parameters", repeated)
