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
from kubernetes import client
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from conftest import ROOT, StowageServer, memory_server

SHOTS = os.path.join(ROOT, "target", "console-screenshots")
MEMORY = "memory.stowage.dev"
LOCAL = "local.stowage.dev"
NFS = "nfs.stowage.dev"


@pytest.fixture(scope="module")
def server():
    s = memory_server("console")
    yield s
    s.stop()


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


def Wait(driver, timeout, **kwargs):
    """A WebDriverWait that looks again when what it looked at was drawn anew meanwhile (the
    views redraw as changes arrive)."""
    return WebDriverWait(driver, timeout, ignored_exceptions=[StaleElementReferenceException], **kwargs)


def shot(driver, name):
    os.makedirs(SHOTS, exist_ok=True)
    driver.save_screenshot(os.path.join(SHOTS, name + ".png"))


def wait_text(driver, text, timeout=10):
    try:
        Wait(driver, timeout).until(lambda d: text in d.find_element(By.TAG_NAME, "main").text)
    except TimeoutException:
        raise AssertionError("%r not shown within %ss; the page says:\n%s" % (
            text, timeout, driver.find_element(By.TAG_NAME, "main").text))


def sign_in(driver, server, token):
    driver.get(server.url + "/ui/")
    box = Wait(driver, 10).until(EC.presence_of_element_located((By.ID, "token")))
    box.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form.signin button[type=submit]").click()
    Wait(driver, 10).until(EC.visibility_of_element_located((By.ID, "nav")))


def go(driver, view):
    driver.find_element(By.CSS_SELECTOR, 'nav a[href="#/%s"]' % view).click()


def open_class_form(driver, name, provisioner):
    driver.find_element(By.XPATH, "//button[text()='New storage class']").click()
    Wait(driver, 5).until(EC.visibility_of_element_located((By.ID, "sc-name"))).send_keys(name)
    Select(driver.find_element(By.ID, "sc-provisioner")).select_by_visible_text(provisioner)


def confirm(driver):
    driver.find_element(By.CSS_SELECTOR, "dialog button[type=submit]").click()


def dialog_error(driver, text, timeout=10):
    """Waits until the open dialog says `text` (and so has not been confirmed)."""
    try:
        Wait(driver, timeout).until(lambda d: text in d.find_element(By.CSS_SELECTOR, "dialog p.error").text)
    except TimeoutException:
        raise AssertionError("the dialog did not say %r; it says: %r" % (
            text, driver.find_element(By.CSS_SELECTOR, "dialog p.error").text))


def wait_class(storage, name, timeout=10):
    deadline = time.time() + timeout
    while True:
        try:
            return storage.read_storage_class(name)
        except client.rest.ApiException as e:
            assert e.status == 404 and time.time() < deadline, "class %s was not created" % name
            time.sleep(0.1)


def make_token(server, role):
    """A new token (the token API is Stowage's own: plain REST); its secret and its id."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(server.url + "/apis/auth.stowage.dev/v1/tokens", method="POST",
                                 data=json.dumps({"spec": {"name": "console", "role": role}}).encode(),
                                 headers={"Authorization": "Bearer " + admin_token(server), "Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ctx) as r:
        made = json.load(r)
    return made["status"]["token"], made["metadata"]["name"]


def memory_class(storage, name, **spec):
    storage.create_storage_class(client.V1StorageClass(metadata=client.V1ObjectMeta(name=name), provisioner=MEMORY, **spec))


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
    memory_class(storage, cls, allow_volume_expansion=True)
    claim(core, namespace, "db", cls, "2Gi", labels={"app": "shop"})
    claim(core, namespace, "cache", cls, "1Gi")
    # A claim that cannot be provisioned (more than the provider has) stays Pending with an event.
    claim(core, namespace, "huge", cls, "500Gi")

    sign_in(browser, server, admin_token(server))
    # The browser speaks HTTP/2 to the server (its watches then share one connection).
    protocol = browser.execute_script("return performance.getEntriesByType('navigation')[0].nextHopProtocol")
    assert protocol == "h2", protocol
    wait_text(browser, cls)
    # The card is drawn again as changes arrive: each look finds it afresh.
    def card_shows_it_all(d):
        card = d.find_element(By.CSS_SELECTOR, 'article[aria-label="class %s"]' % cls)
        # Plots carry their values as text too.
        return ("2 of 3 claims" in card.text and "free for new volumes" in card.text
                and card.find_elements(By.CSS_SELECTOR, '[role=img][aria-label*="Bound"]'))
    try:
        Wait(browser, 15).until(card_shows_it_all)
    except TimeoutException:
        raise AssertionError("the class card is not complete:\n" + browser.find_element(By.TAG_NAME, "main").text)
    pending = browser.find_element(By.TAG_NAME, "main").text
    assert "huge" in pending, pending
    shot(browser, "overview")

    go(browser, "claims")
    wait_text(browser, "cache")
    Select(browser.find_element(By.ID, "f-ns")).select_by_visible_text(namespace)
    browser.find_element(By.ID, "f-label").send_keys("app=shop")
    Wait(browser, 5).until(lambda d: d.find_element(By.CSS_SELECTOR, ".count").text == "1 item")
    assert "cache" not in browser.find_element(By.CSS_SELECTOR, ".scroller").text
    browser.find_element(By.ID, "f-label").clear()
    browser.find_element(By.ID, "f-label").send_keys(Keys.SPACE, Keys.BACKSPACE)
    # A claim made elsewhere appears without a reload. The delay is printed (a figure: the
    # target is 200 ms; a debug build and a 2-core machine running other tests are not the
    # place to pass or fail on it).
    started = time.time()
    claim(core, namespace, "late", cls)
    Wait(browser, 5, poll_frequency=0.02).until(
        lambda d: "late" in d.find_element(By.CSS_SELECTOR, ".scroller").text)
    print("\nconsole: a new claim showed %.0f ms after its create returned" % ((time.time() - started) * 1000))
    shot(browser, "claims")

    browser.find_element(By.LINK_TEXT, "db").click()
    wait_text(browser, "Claim " + namespace + "/db")
    Wait(browser, 15).until(lambda d: "Bound" in d.find_element(By.TAG_NAME, "main").text)
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
    def node_card_shows_it_all(d):
        card = d.find_element(By.CSS_SELECTOR, 'article[aria-label="node %s"]' % node)
        return ("of 5 volumes" in card.text and "Healthy" in card.text
                and card.find_element(By.CSS_SELECTOR, ".taint-oos").text.startswith("node.kubernetes.io/out-of-service"))
    try:
        Wait(browser, 15).until(node_card_shows_it_all)
    except TimeoutException:
        raise AssertionError("the node card is not complete:\n" + browser.find_element(By.TAG_NAME, "main").text)
    shot(browser, "nodes")

    expected = {"volumes": "pvc-", "attachments": "Attachments", "events": "Provisioning",
                "providers": "Class parameters", "classes": cls}
    for view, text in expected.items():
        go(browser, view)
        wait_text(browser, text)
        shot(browser, view)
    # Each provider's capabilities and class parameters, as the server describes them.
    go(browser, "providers")

    def provider_text(name):
        return browser.find_element(By.CSS_SELECTOR, 'main article[aria-label="provider %s"]' % name).text
    try:
        Wait(browser, 10).until(lambda d: "server (required)" in provider_text(NFS)
                                and "One of 4.1, 4, 3. Default 4.1." in provider_text(NFS)
                                and "Snapshots\nyes" in provider_text(MEMORY) and "Not described" in provider_text(MEMORY))
    except TimeoutException:
        raise AssertionError("the providers are not described:\n" + browser.find_element(By.TAG_NAME, "main").text)


def test_actions_resize_delete_default_and_errors_go_through_the_api(server, api, browser, namespace):
    core = client.CoreV1Api(api)
    storage = client.StorageV1Api(api)
    cls = "act-" + namespace
    memory_class(storage, cls, allow_volume_expansion=True)
    claim(core, namespace, "grow", cls, "1Gi")
    sign_in(browser, server, admin_token(server))
    browser.get(server.url + "/ui/#/story/%s/grow" % namespace)
    Wait(browser, 15).until(lambda d: "Bound" in d.find_element(By.TAG_NAME, "main").text)

    # Resize, confirmed in a dialog.
    browser.find_element(By.XPATH, "//button[text()='Resize']").click()
    size = Wait(browser, 5).until(EC.visibility_of_element_located((By.ID, "new-size")))
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

    # A new class, made through the form: the provider's parameters are fields, checked as
    # the server checks them, and nothing is created while anything is wrong.
    new = "new-" + namespace
    open_class_form(browser, new, LOCAL)
    Select(browser.find_element(By.ID, "sc-param-onDelete")).select_by_visible_text("archive")
    assert "octal mode" in browser.find_element(By.ID, "sc-param-mountPermissions-help").text
    mode = browser.find_element(By.ID, "sc-param-mountPermissions")
    mode.send_keys("999")
    shot(browser, "class-form")
    confirm(browser)
    dialog_error(browser, 'mountPermissions "999" is not valid')
    mode.clear()
    mode.send_keys("0750")
    browser.find_element(By.ID, "sc-params").send_keys("onDelet=retain")
    confirm(browser)
    dialog_error(browser, "onDelet is not a parameter of local.stowage.dev; it takes onDelete, mountPermissions")
    browser.find_element(By.ID, "sc-params").clear()
    Select(browser.find_element(By.ID, "sc-binding")).select_by_visible_text("WaitForFirstConsumer")
    confirm(browser)
    made = wait_class(storage, new)
    assert made.provisioner == LOCAL and made.volume_binding_mode == "WaitForFirstConsumer"
    assert made.parameters == {"onDelete": "archive", "mountPermissions": "0750"}

    # What the fields' patterns let through but the provider refuses: the server's warning
    # (from a dry run) is shown, and no class is made.
    refused = "nfs-" + namespace
    open_class_form(browser, refused, NFS)
    assert "(required)" in browser.find_element(By.CSS_SELECTOR, 'label[for="sc-param-server"]').text
    browser.find_element(By.ID, "sc-param-server").send_keys("nfs.example.com")
    # Not ASCII: the warning's UTF-8 must come through the header intact.
    browser.find_element(By.ID, "sc-param-share").send_keys("/exports/../été")
    confirm(browser)
    dialog_error(browser, "Not created: parameters: nfs.stowage.dev will refuse to provision claims of this class")
    assert "/exports/../été" in browser.find_element(By.CSS_SELECTOR, "dialog p.error").text
    browser.find_element(By.XPATH, "//dialog//button[text()='Cancel']").click()
    with pytest.raises(client.rest.ApiException) as gone:
        storage.read_storage_class(refused)
    assert gone.value.status == 404

    # A provider that describes no parameters takes key=value lines as they are.
    free = "free-" + namespace
    open_class_form(browser, free, MEMORY)
    assert not browser.find_element(By.ID, "sc-known").is_displayed()
    browser.find_element(By.ID, "sc-params").send_keys("tier=fast")
    confirm(browser)
    assert wait_class(storage, free).parameters == {"tier": "fast"}

    # One the server refuses (the name is taken): its Status message is shown.
    open_class_form(browser, cls, MEMORY)
    confirm(browser)
    dialog_error(browser, "already exists")
    shot(browser, "error")
    browser.find_element(By.XPATH, "//dialog//button[text()='Cancel']").click()

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
    warning = Wait(browser, 5).until(EC.visibility_of_element_located((By.CSS_SELECTOR, "dialog .warnbox")))
    assert "keeps the data" in warning.text
    browser.find_element(By.CSS_SELECTOR, "dialog button[type=submit]").click()
    deadline = time.time() + 15
    while core.read_persistent_volume(volume).status.phase != "Available":
        assert time.time() < deadline, "the released volume did not become Available"
        time.sleep(0.1)

    # Deleting a claim, confirmed.
    browser.get(server.url + "/ui/#/story/%s/grow" % namespace)
    Wait(browser, 10).until(EC.element_to_be_clickable((By.XPATH, "//button[text()='Delete claim']"))).click()
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
    tenant, _ = make_token(server, "namespace:" + namespace)

    sign_in(browser, server, tenant)
    go(browser, "claims")
    wait_text(browser, "mine")
    Wait(browser, 5).until(lambda d: d.find_element(By.CSS_SELECTOR, ".count").text == "1 item")
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
    Wait(browser, 30).until(lambda d: "c00000" in d.find_element(By.CSS_SELECTOR, ".scroller").text
                                     or "c09999" in d.find_element(By.CSS_SELECTOR, ".scroller").text)
    first_paint = time.time() - started
    count = browser.find_element(By.CSS_SELECTOR, ".count").text
    assert int(count.split()[0]) >= 10000, count
    rows = len(browser.find_elements(By.CSS_SELECTOR, ".scroller .row"))
    assert rows < 100, "%d rows in the DOM for 10,000 claims: the list is not virtualized" % rows
    # Scrolling to the end shows the last claims.
    browser.execute_script("document.querySelector('.scroller').scrollTop = 1e9")
    Wait(browser, 5).until(lambda d: "c09999" in d.find_element(By.CSS_SELECTOR, ".scroller").text)
    assert len(browser.find_elements(By.CSS_SELECTOR, ".scroller .row")) < 100
    shot(browser, "claims-10000")
    from conftest import BINARY
    build = "release" if "/release/" in BINARY else "debug"
    print("\nconsole: first rows of 10,000 claims after %.2f s (%s build, headless Chromium); %d rows in the DOM" % (
        first_paint, build, rows))


class RestartableServer:
    """A server on a fixed port and data directory, so that it can stop and start again under
    an open page."""

    def __init__(self, *args):
        import socket
        import tempfile
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.args = args
        self.data = tempfile.mkdtemp(prefix="stowage-console-restart-")
        self.url = "https://127.0.0.1:%d" % self.port
        self.proc = None
        self.start()

    def kubeconfig(self):
        return os.path.join(self.data, "kubeconfig")

    def start(self):
        import subprocess
        from conftest import BINARY
        self.proc = subprocess.Popen([BINARY, "serve", "--listen", "127.0.0.1:%d" % self.port, "--data-dir", self.data,
                                      *self.args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        while "listening on" not in (self.proc.stdout.readline() or "listening on"):
            pass

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)

    def close(self):
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)

    def post_claim(self, namespace, name):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        body = json.dumps({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
                           "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local",
                                    "resources": {"requests": {"storage": "1Mi"}}}}).encode()
        req = urllib.request.Request(self.url + "/api/v1/namespaces/%s/persistentvolumeclaims" % namespace,
                                     method="POST", data=body,
                                     headers={"Authorization": "Bearer " + admin_token(self), "Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=ctx) as r:
            assert r.status == 201


def test_a_lost_watch_resumes_after_the_server_restarts(browser, namespace):
    """The server restarts under an open page: its watches end, resume, and a claim made after
    the restart shows without a reload."""
    server = RestartableServer()
    try:
        server.post_claim(namespace, "before")
        sign_in(browser, server, admin_token(server))
        go(browser, "claims")
        Wait(browser, 10).until(lambda d: "before" in d.find_element(By.CSS_SELECTOR, ".scroller").text)
        server.stop()
        server.start()
        server.post_claim(namespace, "after")
        Wait(browser, 20).until(lambda d: "after" in d.find_element(By.CSS_SELECTOR, ".scroller").text)
        assert "before" in browser.find_element(By.CSS_SELECTOR, ".scroller").text
    finally:
        server.close()


def list_requests(driver, path):
    """How many times the page has listed `path` (a GET of the collection, not a watch)."""
    return driver.execute_script(
        "return performance.getEntriesByType('resource').filter((e) => new URL(e.name).pathname === arguments[0]"
        " && !new URL(e.name).search.includes('watch=1')).length", path)


def test_a_watch_too_far_behind_gets_410_and_the_page_lists_again(browser, namespace):
    """The server keeps 5 changes for watches to resume from. The page's watch is held back
    (the browser blocks it) while the server restarts and moves on by more than that: its
    resume is answered 410 Gone, and the page lists again and shows every claim."""
    server = RestartableServer("--watch-history", "5")
    path = "/api/v1/persistentvolumeclaims"
    try:
        server.post_claim(namespace, "before")
        sign_in(browser, server, admin_token(server))
        go(browser, "claims")
        Wait(browser, 10).until(lambda d: "before" in d.find_element(By.CSS_SELECTOR, ".scroller").text)
        listed = list_requests(browser, path)
        assert listed >= 1
        browser.execute_cdp_cmd("Network.enable", {})
        browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*watch=1*"]})
        server.stop()
        server.start()
        for i in range(8):
            server.post_claim(namespace, "after-%d" % i)
        browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
        Wait(browser, 30).until(lambda d: d.find_element(By.CSS_SELECTOR, ".count").text == "9 items")
        assert list_requests(browser, path) > listed, "the page did not list again after 410"
        text = browser.find_element(By.CSS_SELECTOR, ".scroller").text
        assert "after-0" in text and "before" in text, text
        # It follows changes again from the new list.
        server.post_claim(namespace, "later")
        Wait(browser, 10).until(lambda d: d.find_element(By.CSS_SELECTOR, ".count").text == "10 items")
    finally:
        server.close()


def test_a_revoked_token_signs_the_page_out(server, browser, namespace):
    """Revoking the token ends its watches; the page's next request is refused (401), and the
    page forgets the token and says why."""
    token, token_id = make_token(server, "viewer")
    sign_in(browser, server, token)
    go(browser, "claims")
    Wait(browser, 10).until(lambda d: "item" in d.find_element(By.CSS_SELECTOR, ".count").text)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(server.url + "/apis/auth.stowage.dev/v1/tokens/" + token_id, method="DELETE",
                                 headers={"Authorization": "Bearer " + admin_token(server)})
    with urllib.request.urlopen(req, context=ctx) as r:
        assert r.status == 200
    try:
        Wait(browser, 20).until(
            lambda d: "no longer accepted" in d.find_element(By.CSS_SELECTOR, ".signin .error").text)
    except Exception:
        raise AssertionError("the page did not sign out; it shows:\n" + browser.find_element(By.TAG_NAME, "body").text)
    assert browser.execute_script("return sessionStorage.length") == 0
    assert not browser.find_element(By.ID, "nav").is_displayed()
    shot(browser, "signed-out")


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
    picker = Wait(browser, 10).until(EC.presence_of_element_located((By.ID, "kubeconfig")))
    picker.send_keys(server.kubeconfig())
    try:
        Wait(browser, 10).until(EC.visibility_of_element_located((By.ID, "nav")))
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
    Wait(browser, 5).until(EC.presence_of_element_located((By.ID, "token")))
    assert browser.execute_script("return sessionStorage.length") == 0
