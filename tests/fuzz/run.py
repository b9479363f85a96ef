"""Fuzzes a real `stowage serve`: Schemathesis against its OpenAPI documents, then hand-written
hostile bodies, patches and headers. Fails on any 5xx, a crash, a hang (no answer within
FUZZ_REQUEST_TIMEOUT s, or /healthz slower than FUZZ_HEALTH_TIMEOUT s after a group), a panic in
the server log, or the server's RSS over FUZZ_MAX_RSS_MIB. Prints a summary and exits non-zero
on any failure.

Run it through scripts/fuzz.sh, which installs the pinned dependencies. Environment:
  STOWAGE_BIN           server binary (default target/debug/stowage)
  FUZZ_MAX_RSS_MIB      memory bound for the server (default 1024)
  FUZZ_REQUEST_TIMEOUT  seconds per request (default 30)
  FUZZ_HEALTH_TIMEOUT   seconds /healthz gets after each group (default 1)
  FUZZ_BUDGET           wall-clock budget of the whole run in seconds (default 235)
  FUZZ_API_BUDGET       the part of it Schemathesis gets (default 60)
  FUZZ_API_EXAMPLES     examples per operation and mode for the tenant; admin gets half (default 12)
  FUZZ_SEED             base seed (default fixed: runs are deterministic)
  FUZZ_ONLY             comma-separated groups to run: schemathesis, deep-json, yaml-aliases,
                        huge-lists, content-types, bad-encoding, numbers, quantities, json-patch,
                        merge-patch, strategic-merge, apply, query-strings
  FUZZ_KEEP_LOGS        keep the server logs and data directories even when all passed
"""

import os
import sys
import tempfile
import time
import traceback

# Hypothesis keeps a cache (and would keep a database) in ./.hypothesis unless told otherwise.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "stowage-fuzz-hypothesis"))

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import api_fuzz  # noqa: E402
import hostile  # noqa: E402
from core import Runner, Settings, fmt_kib  # noqa: E402


def wanted(settings, group):
    return not settings.only or group in settings.only


def run_hostile(runner, settings):
    for group, cases in hostile.build().items():
        if not wanted(settings, group):
            continue
        started = time.monotonic()
        stats = runner.group_stats(group)
        not_run = []
        runner.log("group %s: %d cases" % (group, len(cases)))
        for name, fn in cases:
            if runner.time_left() <= 0:
                not_run.append(name)
                continue
            stats["cases"] += 1
            try:
                fn(hostile.Ctx(runner, group, name))
            except Exception:
                runner.fail(group, name, "harness", traceback.format_exc()[-1500:])
        if not_run:
            runner.fail(group, "%d cases" % len(not_run), "budget",
                        "not run: the %.0f s budget was spent (first: %s)" % (settings.budget, not_run[0]))
        runner.health(group)
        runner.sample_rss(group)
        stats["seconds"] += time.monotonic() - started


def summary(runner):
    total = sum(s["requests"] for s in runner.groups.values())
    print("\n==> Fuzzing summary")
    print("%-16s %8s %6s %7s %9s  %s" % ("group", "requests", "cases", "seconds", "max RSS", "statuses"))
    for group, s in runner.groups.items():
        statuses = ", ".join("%s: %d" % (k, v) for k, v in sorted(s["statuses"].items(), key=lambda kv: str(kv[0])))
        print("%-16s %8d %6s %7.1f %9s  %s" % (
            group, s["requests"], s["cases"] or "-", s["seconds"], fmt_kib(s["max_rss_kib"]), statuses))
    print("total: %d requests in %.1f s; status codes: %s" % (
        total, time.monotonic() - runner.started,
        ", ".join("%s: %d" % (k, v) for k, v in sorted(runner.statuses.items(), key=lambda kv: str(kv[0])))))
    print("server RSS: %s at the start, %s at the end, %s at most (bound %d MiB, high-water mark sampled "
          "every 50 ms, %d samples); servers started: %d" % (
              fmt_kib(runner.rss_at_start_kib or 0), fmt_kib(runner.rss_at_end_kib or 0),
              fmt_kib(runner.max_rss_kib), runner.settings.max_rss_mib, runner.watchdog.samples,
              runner.servers_started))
    if runner.allowed_5xx:
        print("allowed: %d x 504 'Too large resource version' (Kubernetes' answer to a resourceVersion "
              "newer than the server's; client-go depends on it)" % runner.allowed_5xx)
    if runner.early_answers:
        print("%d answers were read only on a second try: the server answered before reading the whole "
              "request body and closed the connection, which requests/urllib3 (and so the official "
              "Python client) report as a connection error" % runner.early_answers)
    print("slowest requests:")
    for elapsed, group, case, status, description in runner.slowest:
        print("  %6.2fs %-9s %s / %s: %s" % (elapsed, status, group, case[:60], description[:160]))
    if runner.rss_log:
        print("RSS after each group: " + ", ".join("%s %s" % (g, fmt_kib(k)) for g, k in runner.rss_log))
    if runner.failures:
        print("\n==> %d failures" % len(runner.failures))
        for f in runner.failures:
            print("\n--- [%s] %s / %s\n%s" % (f["kind"], f["group"], f["case"], f["detail"]))
    cases = sum(s["cases"] for s in runner.groups.values())
    failed = len(runner.failed_cases)
    print("\nfuzz: %d passed, %d failed" % (max(0, cases - failed), failed))


def main():
    settings = Settings()
    if not os.access(settings.binary, os.X_OK):
        print("error: no server binary at %s (build it, or set STOWAGE_BIN)" % settings.binary, file=sys.stderr)
        return 2
    runner = Runner(settings)
    runner.log("fuzzing %s; RSS bound %d MiB, %.0f s per request, budget %.0f s" % (
        settings.binary, settings.max_rss_mib, settings.request_timeout, settings.budget))
    try:
        runner.start_server()
        runner.watchdog.start()
        if wanted(settings, api_fuzz.GROUP):
            started = time.monotonic()
            stats = runner.group_stats(api_fuzz.GROUP)
            api_fuzz.run(runner, settings)
            stats["seconds"] += time.monotonic() - started
            runner.sample_rss(api_fuzz.GROUP)
        run_hostile(runner, settings)
    except KeyboardInterrupt:
        runner.fail("harness", "interrupted", "harness", "interrupted")
    except Exception:
        runner.fail("harness", "run", "harness", traceback.format_exc())
    finally:
        runner.finish()
    summary(runner)
    return 1 if runner.failures else 0


if __name__ == "__main__":
    sys.exit(main())
