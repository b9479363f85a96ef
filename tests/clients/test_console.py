"""The web console in a real browser: Debian's Chromium, headless, driven by Selenium with
Debian's chromedriver, against a real `stowage serve` (HTTPS, its own CA). Screenshots of every
view are saved under target/console-screenshots/ for a person to look at."""

import datetime
import json
import os
import shutil
import ssl
import time
import urllib.request

import pytest
from kubernetes import client, config
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from conftest import ROOT, StowageServer

SHOTS = os.path.join(ROOT, "target", "console-screenshots")
MEMORY = "memory.stowage.dev"


@pytest.fixture(scope="module")
def server():
    config_path = os.path.join(ROOT, "target", "console.yaml")
    with open(config_path, "w") as f:
        f.write("providers:\n  memory:\n    enabled: true\n    capacity: 20Gi\n")
    s = StowageServer(["--config", config_path])
    yield s
    s.stop()


@pytest.fixture(scope="module")
def api(server):
    return config.new_client_from_config(config_file=server.kubeconfig())


def admin_token(server):
    for line in open(server.kubeconfig()):
        line = line.strip()
        if line.startswith("token:"):
            return line.split(":", 1)[1].strip().strip("'\"")
    raise AssertionError("no token in the server's kubeconfig")


@pytest.fixture
def browser():
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    assert chromium and driver_path, "Debian's chromium and chromium-driver are needed (scripts/test.sh installs them)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                # The server's certificate is from its own CA, made at first start.
                "--ignore-certificate-errors"):
        options.add_argument(arg)
    # The page's console log, to check it for policy violations and the token.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def shot(driver, name):
    os.makedirs(SHOTS, exist_ok=True)
    driver.save_screenshot(os.path.join(SHOTS, name + ".png"))


def wait_text(driver, text, timeout=10):
    try:
        WebDriverWait(driver, timeout).until(lambda d: text in d.find_element(By.TAG_NAME, "main").text)
    except TimeoutException:
        raise AssertionError("%r not shown within %ss; the page says:\n%s" % (
            text, timeout, driver.find_element(By.TAG_NAME, "main").text))


def sign_in(driver, server, token):
    driver.get(server.url + "/ui/")
    box = WebDriverWait(driver, 10).until(EC.presence_of_element_located((By.ID, "token")))
    box.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form.signin button[type=submit]").click()
    WebDriverWait(driver, 10).until(EC.visibility_of_element_located((By.ID, "nav")))


def go(driver, view):
    driver.find_element(By.CSS_SELECTOR, 'nav a[href="#/%s"]' % view).click()


def claim(core, namespace, name, cls, size="1Gi", labels=None):
    core.create_namespaced_persistent_volume_claim(namespace, client.V1PersistentVolumeClaim(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1PersistentVolumeClaimSpec(
            access_modes=["ReadWriteOnce"], storage_class_name=cls,
            resources=client.V1VolumeResourceRequirements(requests={"storage": size}))))


def test_the_console_is_served_with_no_token_and_strict_headers(server):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(server.url + "/ui/", context=ctx) as r:
        assert r.status == 200
        assert "text/html" in r.headers["Content-Type"]
        csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    with urllib.request.urlopen(server.url + "/ui/app.js", context=ctx) as r:
        assert "javascript" in r.headers["Content-Type"]


def test_an_admin_sees_the_overview_claims_live_and_a_claims_story(server, api, browser, namespace):
    core = client.CoreV1Api(api)
    storage = client.StorageV1Api(api)
    cls = "console-" + namespace
    storage.create_storage_class(client.V1StorageClass(metadata=client.V1ObjectMeta(name=cls), provisioner=MEMORY,
                                                       allow_volume_expansion=True))
    claim(core, namespace, "db", cls, "2Gi", labels={"app": "shop"})
    claim(core, namespace, "cache", cls, "1Gi")
    # A claim that cannot be provisioned (more than the provider has) stays Pending with an event.
    claim(core, namespace, "huge", cls, "500Gi")

    sign_in(browser, server, admin_token(server))
    # The browser speaks HTTP/2 to the server (its watches then share one connection).
    protocol = browser.execute_script("return performance.getEntriesByType('navigation')[0].nextHopProtocol")
    assert protocol == "h2", protocol
    wait_text(browser, cls)
    card = browser.find_element(By.CSS_SELECTOR, 'article[aria-label="class %s"]' % cls)
    WebDriverWait(browser, 15).until(lambda d: "2 of 3 claims" in card.text)
    assert "free for new volumes" in card.text, card.text
    # Plots carry their values as text too.
    assert card.find_elements(By.CSS_SELECTOR, '[role=img][aria-label*="Bound"]')
    pending = browser.find_element(By.TAG_NAME, "main").text
    assert "huge" in pending, pending
    shot(browser, "overview")

    go(browser, "claims")
    wait_text(browser, "cache")
    Select(browser.find_element(By.ID, "f-ns")).select_by_visible_text(namespace)
    browser.find_element(By.ID, "f-label").send_keys("app=shop")
    WebDriverWait(browser, 5).until(lambda d: d.find_element(By.CSS_SELECTOR, ".count").text == "1 item")
    assert "cache" not in browser.find_element(By.CSS_SELECTOR, ".scroller").text
    browser.find_element(By.ID, "f-label").clear()
    browser.find_element(By.ID, "f-label").send_keys(Keys.SPACE, Keys.BACKSPACE)
    # A claim made elsewhere appears without a reload. The delay is printed (a figure: the
    # target is 200 ms; a debug build and a 2-core machine running other tests are not the
    # place to pass or fail on it).
    started = time.time()
    claim(core, namespace, "late", cls)
    WebDriverWait(browser, 5, poll_frequency=0.02).until(
        lambda d: "late" in d.find_element(By.CSS_SELECTOR, ".scroller").text)
    print("\nconsole: a new claim showed %.0f ms after its create returned" % ((time.time() - started) * 1000))
    shot(browser, "claims")

    browser.find_element(By.LINK_TEXT, "db").click()
    wait_text(browser, "Claim " + namespace + "/db")
    WebDriverWait(browser, 15).until(lambda d: "Bound" in d.find_element(By.TAG_NAME, "main").text)
    story = browser.find_element(By.TAG_NAME, "main").text
    assert "Provisioning" in story or "ProvisioningSucceeded" in story, story
    shot(browser, "story")

    # A node: its attach limit, health from its lease, and an out-of-service taint.
    node = "console-node-" + namespace
    core.create_node(client.V1Node(
        metadata=client.V1ObjectMeta(name=node, annotations={"stowage.dev/max-volume-attachments": "5"}),
        spec=client.V1NodeSpec(taints=[client.V1Taint(key="node.kubernetes.io/out-of-service", value="nodeshutdown", effect="NoExecute")])))
    client.CoordinationV1Api(api).create_namespaced_lease("stowage-node-lease", client.V1Lease(
        metadata=client.V1ObjectMeta(name=node),
        spec=client.V1LeaseSpec(holder_identity=node, lease_duration_seconds=40,
                                renew_time=datetime.datetime.now(datetime.timezone.utc))))
    go(browser, "nodes")
    wait_text(browser, node)
    card = browser.find_element(By.CSS_SELECTOR, 'article[aria-label="node %s"]' % node)
    WebDriverWait(browser, 15).until(lambda d: "of 5 volumes" in card.text)
    assert "Healthy" in card.text, card.text
    assert card.find_element(By.CSS_SELECTOR, ".taint-oos").text.startswith("node.kubernetes.io/out-of-service")
    shot(browser, "nodes")

    expected = {"volumes": "pvc-", "attachments": "Attachments", "events": "Provisioning",
                "providers": MEMORY, "classes": cls}
    for view, text in expected.items():
        go(browser, view)
        wait_text(browser, text)
        shot(browser, view)


def test_actions_resize_delete_default_and_errors_go_through_the_api(server, api, browser, namespace):
    core = client.CoreV1Api(api)
    storage = client.StorageV1Api(api)
    cls = "act-" + namespace
    storage.create_storage_class(client.V1StorageClass(metadata=client.V1ObjectMeta(name=cls), provisioner=MEMORY,
                                                       allow_volume_expansion=True))
    claim(core, namespace, "grow", cls, "1Gi")
    sign_in(browser, server, admin_token(server))
    browser.get(server.url + "/ui/#/story/%s/grow" % namespace)
    WebDriverWait(browser, 15).until(lambda d: "Bound" in d.find_element(By.TAG_NAME, "main").text)

    # Resize, confirmed in a dialog.
    browser.find_element(By.XPATH, "//button[text()='Resize']").click()
    size = WebDriverWait(browser, 5).until(EC.visibility_of_element_located((By.ID, "new-size")))
    size.clear()
    size.send_keys("3Gi")
    browser.find_element(By.CSS_SELECTOR, "dialog button[type=submit]").click()
    deadline = time.time() + 15
    while core.read_namespaced_persistent_volume_claim("grow", namespace).spec.resources.requests["storage"] != "3Gi":
        assert time.time() < deadline, "the resize did not reach the API"
        time.sleep(0.1)

    # Making a class the default, confirmed.
    go(browser, "classes")
    wait_text(browser, cls)
    row = browser.find_element(By.XPATH, "//div[@role='row'][span[text()='%s']]" % cls)
    row.find_element(By.XPATH, ".//button[text()='Make default']").click()
    browser.find_element(By.CSS_SELECTOR, "dialog button[type=submit]").click()
    deadline = time.time() + 10
    while (storage.read_storage_class(cls).metadata.annotations or {}).get(
            "storageclass.kubernetes.io/is-default-class") != "true":
        assert time.time() < deadline, "the class did not become the default"
        time.sleep(0.1)

    # A new class, made through the form.
    browser.find_element(By.XPATH, "//button[text()='New storage class']").click()
    WebDriverWait(browser, 5).until(EC.visibility_of_element_located((By.ID, "sc-name"))).send_keys("new-" + namespace)
    Select(browser.find_element(By.ID, "sc-provisioner")).select_by_visible_text(MEMORY)
    Select(browser.find_element(By.ID, "sc-binding")).select_by_visible_text("WaitForFirstConsumer")
    browser.find_element(By.ID, "sc-params").send_keys("tier=fast")
    browser.find_element(By.CSS_SELECTOR, "dialog button[type=submit]").click()
    deadline = time.time() + 10
    while True:
        try:
            made = storage.read_storage_class("new-" + namespace)
            break
        except client.rest.ApiException as e:
            assert e.status == 404 and time.time() < deadline, "the class was not created"
            time.sleep(0.1)
    assert made.provisioner == MEMORY and made.volume_binding_mode == "WaitForFirstConsumer"
    assert made.parameters == {"tier": "fast"}

    # One the server refuses (the name is taken): its Status message is shown.
    browser.find_element(By.XPATH, "//button[text()='New storage class']").click()
    WebDriverWait(browser, 5).until(EC.visibility_of_element_located((By.ID, "sc-name"))).send_keys(cls)
    browser.find_element(By.CSS_SELECTOR, "dialog button[type=submit]").click()
    toast = WebDriverWait(browser, 10).until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#toast .error")))
    assert "failed" in toast.text and "already exists" in toast.text, toast.text
    shot(browser, "error")

    # A Retained volume released, with the warning, confirmed.
    keep = "keep-" + namespace
    storage.create_storage_class(client.V1StorageClass(metadata=client.V1ObjectMeta(name=keep), provisioner=MEMORY,
                                                       reclaim_policy="Retain"))
    claim(core, namespace, "kept", keep)
    deadline = time.time() + 15
    while core.read_namespaced_persistent_volume_claim("kept", namespace).status.phase != "Bound":
        assert time.time() < deadline, "kept did not bind"
        time.sleep(0.1)
    volume = core.read_namespaced_persistent_volume_claim("kept", namespace).spec.volume_name
    core.delete_namespaced_persistent_volume_claim("kept", namespace)
    while core.read_persistent_volume(volume).status.phase != "Released":
        assert time.time() < deadline + 15, "the volume was not released"
        time.sleep(0.1)
    go(browser, "volumes")
    wait_text(browser, volume)
    row = browser.find_element(By.XPATH, "//div[@role='row'][span[text()='%s']]" % volume)
    row.find_element(By.XPATH, ".//button[text()='Release']").click()
    warning = WebDriverWait(browser, 5).until(EC.visibility_of_element_located((By.CSS_SELECTOR, "dialog .warnbox")))
    assert "keeps the data" in warning.text
    browser.find_element(By.CSS_SELECTOR, "dialog button[type=submit]").click()
    deadline = time.time() + 15
    while core.read_persistent_volume(volume).status.phase != "Available":
        assert time.time() < deadline, "the released volume did not become Available"
        time.sleep(0.1)

    # Deleting a claim, confirmed.
    browser.get(server.url + "/ui/#/story/%s/grow" % namespace)
    WebDriverWait(browser, 10).until(EC.element_to_be_clickable((By.XPATH, "//button[text()='Delete claim']"))).click()
    browser.find_element(By.CSS_SELECTOR, "dialog button[type=submit]").click()
    deadline = time.time() + 10
    while True:
        try:
            c = core.read_namespaced_persistent_volume_claim("grow", namespace)
            if c.metadata.deletion_timestamp:
                break
        except client.rest.ApiException as e:
            assert e.status == 404
            break
        assert time.time() < deadline, "the claim was not deleted"
        time.sleep(0.1)


def test_a_tenant_sees_only_its_namespace(server, api, browser, namespace):
    core = client.CoreV1Api(api)
    storage = client.StorageV1Api(api)
    cls = "tenant-" + namespace
    storage.create_storage_class(client.V1StorageClass(metadata=client.V1ObjectMeta(name=cls), provisioner=MEMORY))
    other = namespace + "-other"
    claim(core, namespace, "mine", cls)
    claim(core, other, "theirs", cls)
    # The token API is Stowage's own: plain REST.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(server.url + "/apis/auth.stowage.dev/v1/tokens", method="POST",
                                 data=json.dumps({"spec": {"name": "tenant", "role": "namespace:" + namespace}}).encode(),
                                 headers={"Authorization": "Bearer " + admin_token(server), "Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ctx) as r:
        tenant = json.load(r)["status"]["token"]

    sign_in(browser, server, tenant)
    go(browser, "claims")
    wait_text(browser, "mine")
    WebDriverWait(browser, 5).until(lambda d: d.find_element(By.CSS_SELECTOR, ".count").text == "1 item")
    table = browser.find_element(By.CSS_SELECTOR, ".scroller").text
    assert "theirs" not in table and other not in table, table
    go(browser, "nodes")
    wait_text(browser, "Not shown")
    shot(browser, "tenant-claims")
    # The token is in the tab's session storage only, never in the URL.
    assert tenant not in browser.current_url
    assert browser.execute_script("return localStorage.length") == 0


def test_ten_thousand_claims_are_listed_virtualized_and_the_first_paint_is_measured(browser, namespace):
    """The list holds 10,000 claims but the page only as many rows as are in view. The time to
    the first rows is printed (a figure, not a pass/fail: speed is for benchmarks). A server of
    its own: the others' tests do not wade through 10,000 claims."""
    server = StowageServer()
    try:
        ten_thousand(server, browser, namespace)
    finally:
        server.stop()


def ten_thousand(server, browser, namespace):
    import concurrent.futures
    import http.client
    import urllib.parse

    token = admin_token(server)
    target = urllib.parse.urlparse(server.url)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

    def create(start):
        conn = http.client.HTTPSConnection(target.hostname, target.port, context=ctx)
        for i in range(start, start + 1250):
            body = json.dumps({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                               "metadata": {"name": "c%05d" % i},
                               "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "none-" + namespace,
                                        "resources": {"requests": {"storage": "1Gi"}}}})
            conn.request("POST", "/api/v1/namespaces/%s/persistentvolumeclaims" % namespace, body,
                         {"Authorization": "Bearer " + token, "Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            assert r.status == 201, r.status
        conn.close()

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(0, 10000, 1250)))

    sign_in(browser, server, token)
    # From a blank page to the first rows: the whole load (page, script, list of 10,000).
    browser.get("about:blank")
    started = time.time()
    browser.get(server.url + "/ui/#/claims")
    WebDriverWait(browser, 30).until(lambda d: "c00000" in d.find_element(By.CSS_SELECTOR, ".scroller").text
                                     or "c09999" in d.find_element(By.CSS_SELECTOR, ".scroller").text)
    first_paint = time.time() - started
    count = browser.find_element(By.CSS_SELECTOR, ".count").text
    assert int(count.split()[0]) >= 10000, count
    rows = len(browser.find_elements(By.CSS_SELECTOR, ".scroller .row"))
    assert rows < 100, "%d rows in the DOM for 10,000 claims: the list is not virtualized" % rows
    # Scrolling to the end shows the last claims.
    browser.execute_script("document.querySelector('.scroller').scrollTop = 1e9")
    WebDriverWait(browser, 5).until(lambda d: "c09999" in d.find_element(By.CSS_SELECTOR, ".scroller").text)
    assert len(browser.find_elements(By.CSS_SELECTOR, ".scroller .row")) < 100
    shot(browser, "claims-10000")
    print("\nconsole: first rows of 10,000 claims after %.2f s (debug build, headless Chromium); %d rows in the DOM" % (first_paint, rows))


def test_a_lost_watch_resumes_after_the_server_restarts(browser, namespace):
    """The server restarts under an open page: its watches end, resume (or list again), and a
    claim made after the restart shows without a reload."""
    import socket
    import subprocess
    import tempfile
    from conftest import BINARY

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tempfile.mkdtemp(prefix="stowage-console-restart-")

    def start():
        proc = subprocess.Popen([BINARY, "serve", "--listen", "127.0.0.1:%d" % port, "--data-dir", data],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        while "listening on" not in (proc.stdout.readline() or "listening on"):
            pass
        return proc

    def post_claim(token, name):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        body = json.dumps({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
                           "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local",
                                    "resources": {"requests": {"storage": "1Mi"}}}}).encode()
        req = urllib.request.Request("https://127.0.0.1:%d/api/v1/namespaces/%s/persistentvolumeclaims" % (port, namespace),
                                     method="POST", data=body,
                                     headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=ctx) as r:
            assert r.status == 201

    proc = start()
    try:
        server = type("S", (), {"url": "https://127.0.0.1:%d" % port,
                                "kubeconfig": lambda self: os.path.join(data, "kubeconfig")})()
        token = admin_token(server)
        post_claim(token, "before")
        sign_in(browser, server, token)
        go(browser, "claims")
        WebDriverWait(browser, 10).until(lambda d: "before" in d.find_element(By.CSS_SELECTOR, ".scroller").text)
        proc.terminate()
        proc.wait(timeout=30)
        proc = start()
        post_claim(token, "after")
        WebDriverWait(browser, 20).until(lambda d: "after" in d.find_element(By.CSS_SELECTOR, ".scroller").text)
        assert "before" in browser.find_element(By.CSS_SELECTOR, ".scroller").text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


def test_kubeconfig_sign_in_sign_out_and_tenant_text_never_runs(server, api, browser, namespace):
    core = client.CoreV1Api(api)
    storage = client.StorageV1Api(api)
    cls = "xss-" + namespace
    storage.create_storage_class(client.V1StorageClass(metadata=client.V1ObjectMeta(name=cls), provisioner=MEMORY))
    claim(core, namespace, "plain", cls)
    payload = '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>'
    core.create_namespaced_event(namespace, client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name="x."), reason="Hostile", message=payload, type="Warning",
        involved_object=client.V1ObjectReference(kind="PersistentVolumeClaim", namespace=namespace, name="plain")))

    # The server's own kubeconfig, picked as a file: the token of its current context.
    browser.get(server.url + "/ui/")
    picker = WebDriverWait(browser, 10).until(EC.presence_of_element_located((By.ID, "kubeconfig")))
    picker.send_keys(server.kubeconfig())
    try:
        WebDriverWait(browser, 10).until(EC.visibility_of_element_located((By.ID, "nav")))
    except TimeoutException:
        raise AssertionError("kubeconfig sign-in failed: " + browser.find_element(By.CSS_SELECTOR, ".signin .error").text)

    # A tenant's text is shown as text, and never runs.
    browser.get(server.url + "/ui/#/story/%s/plain" % namespace)
    wait_text(browser, "Hostile")
    assert payload in browser.find_element(By.TAG_NAME, "main").text
    assert browser.title == "Stowage console"
    assert not browser.find_elements(By.CSS_SELECTOR, "main img")
    # A crafted story link cannot aim the delete button anywhere but at a claim shown.
    browser.get(server.url + "/ui/#/story/a%2F..%2F..%2Fx/y")
    wait_text(browser, "does not exist")
    assert not browser.find_element(By.XPATH, "//button[text()='Delete claim']").is_displayed()

    # No policy violation, and the token in no log line.
    token = admin_token(server)
    for entry in browser.get_log("browser"):
        assert token not in entry["message"]
        assert "Content Security Policy" not in entry["message"], entry

    # Sign-out forgets the token.
    browser.find_element(By.ID, "signout").click()
    WebDriverWait(browser, 5).until(EC.presence_of_element_located((By.ID, "token")))
    assert browser.execute_script("return sessionStorage.length") == 0
