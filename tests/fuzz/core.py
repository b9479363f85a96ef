"""The fuzzing harness's machinery: a real `stowage serve` process, a memory watchdog, and a
runner that sends requests, records every answer and turns 5xx, crashes, hangs and memory
blow-ups into failures.

A failure never stops the run: the runner records it (with the request that caused it and the
tail of the server's log), starts a fresh server if the old one died or hung, and goes on, so one
run reports every hostile case the server mishandles.
"""

import collections
import datetime
import http.client
import json
import os
import re
import resource
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse

import requests
import urllib3

urllib3.disable_warnings()

# http.client refuses a response with more than 100 header lines; the harness reads any answer
# and judges the header count itself (see MAX_HEADERS).
http.client._MAXHEADERS = 10 ** 7

# The official Kubernetes Python client (urllib3, so http.client) cannot read a response with
# more header lines than this: such an answer is as good as none for it.
MAX_HEADERS = 100

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAMESPACE = "fuzz"
TOKENS_PATH = "/apis/auth.stowage.dev/v1/tokens"


def env_float(name, default):
    value = os.environ.get(name, "")
    return float(value) if value.strip() else default


class Settings:
    """Knobs, from the environment (defaults keep a run under about four minutes)."""

    def __init__(self):
        self.binary = os.environ.get("STOWAGE_BIN") or os.path.join(ROOT, "target", "debug", "stowage")
        self.max_rss_mib = env_float("FUZZ_MAX_RSS_MIB", 1024)
        self.request_timeout = env_float("FUZZ_REQUEST_TIMEOUT", 30)
        self.health_timeout = env_float("FUZZ_HEALTH_TIMEOUT", 1)
        # Wall-clock budget for the whole run, and the part of it the schema-driven fuzzing gets.
        self.budget = env_float("FUZZ_BUDGET", 235)
        self.api_budget = env_float("FUZZ_API_BUDGET", 60)
        self.api_examples = int(env_float("FUZZ_API_EXAMPLES", 12))
        self.seed = int(env_float("FUZZ_SEED", 20240601))
        self.only = [g for g in os.environ.get("FUZZ_ONLY", "").split(",") if g.strip()]
        self.keep_logs = os.environ.get("FUZZ_KEEP_LOGS", "") not in ("", "0")


def _no_core_dumps():
    # A server that aborts (stack overflow) must not leave a core file the size of its memory.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.setpgrp()


class Server:
    """One `stowage serve` process on a fresh data directory, with an admin and a tenant token."""

    def __init__(self, settings, workdir, index):
        self.settings = settings
        self.data_dir = os.path.join(workdir, "server-%d" % index)
        os.makedirs(self.data_dir)
        self.log_path = os.path.join(workdir, "server-%d.log" % index)
        self.index = index
        self.proc = None
        self.url = None
        self.admin_token = None
        self.tenant_token = None
        self.ca = None
        self.session = new_session()
        self.started = None
        # Set by the watchdog when it killed this server for its memory: ((group, case), KiB).
        self.memory_kill = None
        # How far the log has been searched for panics.
        self.log_offset = 0

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                self.settings.binary,
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                self.data_dir,
                # The fuzzer is one client sending as fast as it can; throttling it would only
                # turn its requests into 429s. Admin tokens are unlimited by default.
                "--rate-limit",
                "0",
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            preexec_fn=_no_core_dumps,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode("utf-8", "replace")
            match = re.search(r"listening on (https?://\S+)", line)
            if match:
                self.url = match.group(1).rstrip("/")
                break
            if not line and self.proc.poll() is not None:
                break
        if not self.url:
            self.kill()
            raise RuntimeError("stowage did not start:\n" + self.log_tail(40))
        # Keep draining stdout so a chatty server never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()
        self.ca = os.path.join(self.data_dir, "tls", "ca.crt")
        with open(os.path.join(self.data_dir, "kubeconfig")) as f:
            match = re.search(r"^\s*token:\s*(\S+)\s*$", f.read(), re.M)
        if not match:
            raise RuntimeError("no admin token in %s/kubeconfig" % self.data_dir)
        self.admin_token = match.group(1).strip("'\"")
        self.session.verify = self.ca
        deadline = time.monotonic() + 60
        while True:
            try:
                r = self.session.get(self.url + "/readyz", timeout=5)
                if r.status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("stowage never became ready:\n" + self.log_tail(40))
            time.sleep(0.1)
        r = self.session.post(
            self.url + TOKENS_PATH,
            json={"spec": {"name": "fuzz", "role": "namespace:" + NAMESPACE}},
            headers={"Authorization": "Bearer " + self.admin_token},
            timeout=30,
        )
        if r.status_code != 201:
            raise RuntimeError("creating the tenant token: %s %s" % (r.status_code, r.text[:500]))
        self.tenant_token = r.json()["status"]["token"]
        self.started = time.monotonic()

    def _drain(self):
        try:
            with open(self.log_path, "ab") as log:
                for line in self.proc.stdout:
                    log.write(line)
        except (OSError, ValueError):
            pass

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def exit_description(self):
        code = self.proc.poll() if self.proc else None
        if code is None:
            return "still running"
        if code < 0:
            try:
                return "killed by signal %s" % signal.Signals(-code).name
            except ValueError:
                return "killed by signal %d" % -code
        return "exited with status %d" % code

    def memory_kib(self):
        """(VmRSS, VmHWM) in KiB, or None once the process is gone."""
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                text = f.read()
        except (OSError, AttributeError):
            return None
        values = {}
        for key in ("VmRSS", "VmHWM"):
            match = re.search(r"^%s:\s+(\d+) kB" % key, text, re.M)
            values[key] = int(match.group(1)) if match else 0
        return values["VmRSS"], values["VmHWM"]

    def log_tail(self, lines=15):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 64 * 1024))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        # Strip ANSI colours; cut very long lines.
        text = re.sub(r"\x1b\[[0-9;]*m", "", text)
        return "\n".join(l[:400] for l in text.splitlines()[-lines:])

    def kill(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.session.close()


class Watchdog(threading.Thread):
    """Samples the server's RSS (and its high-water mark, so short spikes between samples are
    seen too) every 50 ms; kills a server over the bound before it takes the machine down."""

    def __init__(self, runner):
        super().__init__(daemon=True)
        self.runner = runner
        self.stop_event = threading.Event()
        self.samples = 0

    def run(self):
        while not self.stop_event.wait(0.05):
            self.sample()

    def sample(self):
        runner = self.runner
        server = runner.server
        if server is None or not server.alive():
            return
        mem = server.memory_kib()
        if mem is None:
            return
        self.samples += 1
        rss, hwm = mem
        peak = max(rss, hwm)
        with runner.lock:
            label = runner.label
            group = runner.group_stats(label[0]) if label else None
            runner.max_rss_kib = max(runner.max_rss_kib, peak)
            if group is not None:
                group["max_rss_kib"] = max(group["max_rss_kib"], peak)
            if peak > runner.settings.max_rss_mib * 1024 and server.memory_kill is None:
                server.memory_kill = (label, peak)
        if server.memory_kill is not None and server.alive():
            server.kill()


def describe_request(method, url, headers, body, params=None):
    ctype = (headers or {}).get("Content-Type", "<none>")
    if body is None:
        shown = "no body"
    else:
        raw = body if isinstance(body, bytes) else str(body).encode("utf-8", "replace")
        prefix = raw[:160].decode("utf-8", "backslashreplace")
        shown = "%d-byte body %r%s" % (len(raw), prefix, "..." if len(raw) > 160 else "")
    query = ""
    if params:
        pairs = params.items() if isinstance(params, dict) else params
        query = "?" + "&".join("%s=%s" % kv for kv in pairs)
        if len(query) > 300:
            query = query[:300] + "...(%d chars)" % len(query)
    return "%s %s%s (Content-Type: %s; %s)" % (method, url, query, ctype, shown)


class Runner:
    """Sends requests to the current server and keeps the books."""

    def __init__(self, settings):
        self.settings = settings
        self.workdir = tempfile.mkdtemp(prefix="stowage-fuzz-")
        self.lock = threading.Lock()
        self.server = None
        self.servers_started = 0
        self.label = None  # (group, case)
        self.groups = collections.OrderedDict()
        self.statuses = collections.Counter()
        self.failures = []
        self.failed_cases = set()
        self.cases_run = collections.OrderedDict()
        self.max_rss_kib = 0
        self.rss_at_start_kib = None
        self.rss_at_end_kib = None
        self.rss_log = []
        self.started = time.monotonic()
        self.deadline = self.started + settings.budget
        self.last_request = None
        self.watchdog = Watchdog(self)
        self.slowest = []
        self.request_log = None
        self.allowed_5xx = 0
        self.early_answers = 0

    # -- servers ---------------------------------------------------------------------------

    def start_server(self):
        self.servers_started += 1
        server = Server(self.settings, self.workdir, self.servers_started)
        self.server = server
        try:
            server.start()
        except BaseException:
            server.kill()
            raise
        mem = server.memory_kib()
        if self.rss_at_start_kib is None and mem:
            self.rss_at_start_kib = mem[0]
        self.log("server #%d at %s (pid %d, RSS %s)" % (
            server.index, server.url, server.proc.pid, fmt_kib(mem[0] if mem else 0)))
        return server

    def ensure_server(self, group="setup", case="between requests"):
        """The current server; if it died since the last request, that is recorded first."""
        if self.server is None:
            self.start_server()
        elif not self.server.alive():
            self._server_gone(group, case, "(after) " + str(self.last_request))
        return self.server

    def restart_server(self, why):
        self.log("restarting the server: %s" % why)
        if self.server is not None:
            self.server.kill()
            self.server.stop()
        self.start_server()

    def finish(self):
        self.watchdog.stop_event.set()
        if self.request_log is not None:
            self.request_log.close()
        if self.server is not None:
            mem = self.server.memory_kib() if self.server.alive() else None
            if mem:
                self.rss_at_end_kib = mem[0]
            self.server.stop()
        if self.failures or self.settings.keep_logs:
            self.log("server logs kept in %s" % self.workdir)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- bookkeeping -----------------------------------------------------------------------

    def log(self, message):
        print("[%6.1fs] %s" % (time.monotonic() - self.started, message), flush=True)

    def group_stats(self, group):
        stats = self.groups.get(group)
        if stats is None:
            stats = {
                "requests": 0,
                "statuses": collections.Counter(),
                "max_rss_kib": 0,
                "seconds": 0.0,
                "cases": 0,
                "failed_cases": 0,
            }
            self.groups[group] = stats
        return stats

    def fail(self, group, case, kind, detail):
        with self.lock:
            self.failures.append({"group": group, "case": case, "kind": kind, "detail": detail})
            if (group, case) not in self.failed_cases:
                self.failed_cases.add((group, case))
                self.group_stats(group)["failed_cases"] += 1
        first_line = detail.splitlines()[0] if detail else ""
        self.log("FAIL [%s] %s / %s: %s" % (kind, group, case, first_line[:300]))

    def time_left(self):
        return self.deadline - time.monotonic()

    def sample_rss(self, when):
        if self.server is not None and self.server.alive():
            mem = self.server.memory_kib()
            if mem:
                self.rss_log.append((when, mem[0]))

    # -- requests --------------------------------------------------------------------------

    def token(self, admin):
        return self.server.admin_token if admin else self.server.tenant_token

    def request(self, group, case, method, path, body=None, headers=None, params=None, admin=False,
                timeout=None, check_5xx=True, request_kwargs=None):
        """Sends one request; returns its status, or None if there was no answer (the failure
        is recorded, and a fresh server started if the old one died or hung).

        `request_kwargs`, if given, are `requests.Request` arguments (Schemathesis' serialized
        case) used instead of method/path/body/headers/params; `path` then only names it."""
        server = self.ensure_server(group, case)
        timeout = timeout or self.settings.request_timeout
        auth = {"Authorization": "Bearer " + self.token(admin)}
        if request_kwargs is None:
            request_kwargs = {"method": method, "url": server.url + path, "data": body,
                              "headers": dict(headers or {}), "params": params}
        kwargs = dict(request_kwargs)
        kwargs["headers"] = dict(kwargs.get("headers") or {}, **auth)
        description = describe_request(method, path, headers, body, params)
        if admin:
            description += " [as admin]"
        with self.lock:
            self.label = (group, case)
            self.group_stats(group)["requests"] += 1
        self.last_request = description
        prepared = server.session.prepare_request(requests.Request(**kwargs))
        started = time.monotonic()
        try:
            response = server.session.send(prepared, timeout=(5, timeout))
            # Read the whole answer (a huge error list is still an answer).
            response.content
        except requests.Timeout:
            self.count(group, "timeout")
            self.record(group, case, "timeout", started, description)
            if self._wait_dead(server, 0.5):
                self._server_gone(group, case, description)
            else:
                self.fail(group, case, "hang", "no answer within %.0f s to %s\n%s" % (
                    timeout, description, server.log_tail(5)))
                self.restart_server("it did not answer within %.0f s" % timeout)
            return None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as e:
            if self._wait_dead(server, 0.2):
                self.count(group, "no answer")
                self.record(group, case, "no answer", started, description)
                self._server_gone(group, case, description)
                return None
            # The server is alive. Either a kept-alive connection it had just closed, or it
            # answered before reading the whole body and closed (requests/urllib3 give up when
            # the body cannot be written and never read that answer): once more, on a new
            # connection that reads the answer even if sending the body failed.
            try:
                response = send_tolerant(server, prepared, timeout)
                with self.lock:
                    self.early_answers += 1
            except (OSError, http.client.HTTPException, ValueError) as again:
                if self._wait_dead(server, 1):
                    self.count(group, "no answer")
                    self.record(group, case, "no answer", started, description)
                    self._server_gone(group, case, description)
                    return None
                self.count(group, "no answer")
                self.record(group, case, "no answer", started, description)
                self.fail(group, case, "connection", (
                    "no answer: the connection closed twice without a response (the server is still "
                    "running; a handler that panicked shows in the log): %s / %s: %s\nrequest: %s\n"
                    "server log:\n%s") % (innermost(e), type(again).__name__, str(again)[:200], description,
                                          server.log_tail(6)))
                return None
        status = response.status_code
        self.count(group, status)
        self.record(group, case, status, started, description, response)
        header_lines = getattr(response, "fuzz_header_lines", None)
        if header_lines is None:
            header_lines = len(response.raw.headers.items()) if response.raw is not None else len(response.headers)
        if header_lines > MAX_HEADERS:
            names = collections.Counter(k.lower() for k in (
                response.raw.headers.keys() if response.raw is not None else response.headers.keys()))
            self.fail(group, case, "headers", (
                "%d answered with %d header lines (most: %s); http.client-based clients such as the "
                "official Kubernetes Python client refuse more than %d. Request: %s") % (
                    status, header_lines, ", ".join("%s x%d" % kv for kv in names.most_common(3)),
                    MAX_HEADERS, description))
        if status >= 500 and check_5xx:
            if allowed_5xx(response):
                with self.lock:
                    self.allowed_5xx += 1
            else:
                self.fail(group, case, "5xx", "%d on %s\nresponse: %s" % (
                    status, description, response.text[:600]))
        return response

    def record(self, group, case, status, started, description, response=None):
        """One line per request in requests.log, with its time and the server's RSS after it."""
        elapsed = time.monotonic() - started
        mem = self.server.memory_kib() if self.server is not None and self.server.alive() else None
        rss = mem[0] if mem else 0
        with self.lock:
            self.slowest.append((elapsed, group, case, status, description))
            self.slowest.sort(key=lambda x: -x[0])
            del self.slowest[8:]
            if self.request_log is None:
                self.request_log = open(os.path.join(self.workdir, "requests.log"), "a")
            answer = ""
            if response is not None and status >= 300:
                answer = " => " + response.text[:200].replace("\n", " ")
            self.request_log.write("%7.3fs %-9s RSS %5d MiB  %s | %s | %s%s\n" % (
                elapsed, status, rss // 1024, group, case, description[:400], answer))

    def count(self, group, status):
        with self.lock:
            self.group_stats(group)["statuses"][status] += 1
            self.statuses[status] += 1

    def _wait_dead(self, server, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not server.alive():
                return True
            time.sleep(0.05)
        return not server.alive()

    def _server_gone(self, group, case, description):
        server = self.server
        if server.memory_kill is not None:
            (label, peak) = server.memory_kill
            where = "%s / %s" % label if label else "?"
            self.fail(group, case, "memory", (
                "server RSS reached %s (bound %d MiB) during %s; the watchdog killed it. "
                "Last request: %s\n%s") % (
                    fmt_kib(peak), self.settings.max_rss_mib, where, description, server.log_tail(5)))
        else:
            self.fail(group, case, "crash", "server %s; last request: %s\nserver log:\n%s" % (
                server.exit_description(), description, server.log_tail(12)))
        self.restart_server("it died")

    PANIC = re.compile(r"panicked at|overflowed its stack|fatal runtime error|memory allocation of .* failed")

    def scan_log(self, group):
        """A panic in any task is a bug even when the process survives it (a controller that
        panicked is gone; a request whose handler panicked got its connection dropped)."""
        server = self.server
        if server is None:
            return
        try:
            with open(server.log_path, "rb") as f:
                f.seek(server.log_offset)
                text = f.read().decode("utf-8", "replace")
                server.log_offset = f.tell()
        except OSError:
            return
        text = re.sub(r"\x1b\[[0-9;]*m", "", text)
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if self.PANIC.search(line):
                context = "\n".join(l[:400] for l in lines[max(0, i - 2): i + 4])
                self.fail(group, "server log", "panic", "the server log shows a panic during this group:\n" + context)
                break

    def health(self, group):
        """`/healthz` must answer 200 within the health timeout; a wedged server is replaced."""
        server = self.ensure_server(group, "before /healthz")
        started = time.monotonic()
        try:
            r = server.session.get(server.url + "/healthz", timeout=self.settings.health_timeout)
            ok = r.status_code == 200
            detail = "status %d" % r.status_code
        except requests.RequestException as e:
            ok = False
            detail = type(e).__name__
        if ok:
            self.scan_log(group)
            return True
        elapsed = time.monotonic() - started
        if not server.alive():
            self._server_gone(group, "healthz after the group", "GET /healthz")
        else:
            self.fail(group, "healthz after the group", "health",
                      "/healthz did not answer 200 within %.1f s (%s after %.2f s); last request: %s"
                      % (self.settings.health_timeout, detail, elapsed, self.last_request))
            self.restart_server("/healthz did not answer")
        return False


def send_tolerant(server, prepared, timeout):
    """Sends a prepared request on a new connection and reads the answer even when writing the
    body failed because the server answered early and closed. Returns a requests.Response."""
    url = urllib.parse.urlsplit(prepared.url)
    context = ssl.create_default_context(cafile=server.ca)
    conn = http.client.HTTPSConnection(url.hostname, url.port, context=context, timeout=timeout)
    body = prepared.body
    if isinstance(body, str):
        body = body.encode("utf-8")
    if body is not None and not isinstance(body, (bytes, bytearray)):
        raise ValueError("a streamed body cannot be sent twice")
    target = url.path + ("?" + url.query if url.query else "")
    started = time.monotonic()
    try:
        try:
            conn.request(prepared.method, target, body=body, headers=dict(prepared.headers))
        except OSError:
            pass  # the answer may be there all the same
        answer = conn.getresponse()
        response = requests.Response()
        response.status_code = answer.status
        response.reason = answer.reason
        response.headers = requests.structures.CaseInsensitiveDict(answer.getheaders())
        response._content = answer.read()
        response.fuzz_header_lines = len(answer.getheaders())
        response.url = prepared.url
        response.request = prepared
        response.raw = None
        response.elapsed = datetime.timedelta(seconds=time.monotonic() - started)
        return response
    finally:
        conn.close()


def innermost(error):
    """The root cause of a requests/urllib3 error chain, briefly."""
    seen = error
    for _ in range(10):
        candidates = [getattr(seen, "reason", None)] + [a for a in seen.args if isinstance(a, BaseException)]
        candidates += [seen.__cause__, seen.__context__]
        nxt = next((c for c in candidates if isinstance(c, BaseException) and c is not seen), None)
        if nxt is None:
            break
        seen = nxt
    return ("%s: %s" % (type(seen).__name__, seen))[:300]


def allowed_5xx(response):
    """The one 5xx Kubernetes clients rely on: a list or get at a resourceVersion newer than the
    server's answers 504 Timeout "Too large resource version" (client-go's reflector checks for
    exactly this, `IsTooLargeResourceVersionError`, and retries). Anything else is a failure."""
    if response.status_code != 504:
        return False
    try:
        status = response.json()
    except ValueError:
        return False
    return status.get("reason") == "Timeout" and str(status.get("message", "")).startswith(
        "Too large resource version")


def new_session(ca=None):
    session = requests.Session()
    # Not from the environment: a REQUESTS_CA_BUNDLE there would override our CA, and a proxy
    # would take loopback traffic off the machine's loopback.
    session.trust_env = False
    if ca:
        session.verify = ca
    return session


def fmt_kib(kib):
    return "%.0f MiB" % (kib / 1024.0)


def dumps(value):
    return json.dumps(value, separators=(",", ":")).encode()
