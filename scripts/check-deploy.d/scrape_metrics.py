#!/usr/bin/env python3
"""Runs the real nowpilot processes against RabbitMQ and the simulator, drives traffic through
them, scrapes every process's /metrics and checks each scrape with `promtool check metrics`.

The loop is the production one: the simulator's business rule signs callbacks and posts them to
`nowpilot ingress`; `nowpilot worker` takes the events off RabbitMQ and acts on the simulator
(acknowledge, investigate, resolve, a dead letter). A forged and a malformed callback make the
ingress count refusals. When the binary has `run` (the all-in-one process), it is scraped too.

Everything gets its own queue prefix, and every exchange and queue with that prefix is deleted
at the end, also on failure. Exit code 0 only if every scrape passed promtool and carried the
metric families the traffic must have produced.

The image's HEALTHCHECK command (from --dockerfile) is run against the live ingress and worker.

Usage: scrape_metrics.py --bin target/debug/nowpilot --out DIR [--dockerfile Dockerfile]
                         [--amqp-url URL]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pika

# Metric families the traffic below must produce, per process. A missing one means a rename or
# a broken code path, so it fails the check like a promtool complaint does.
EXPECTED = {
    "ingress": [
        "nowpilot_ingress_requests_total",
        "nowpilot_ingress_verification_failures_total",
        "nowpilot_ingress_request_duration_seconds",
        "nowpilot_ingress_publish_duration_seconds",
        "nowpilot_ingress_confirms_total",
        "nowpilot_queue_connected",
        "nowpilot_queue_publish_total",
    ],
    "worker": [
        "nowpilot_worker_events_total",
        "nowpilot_worker_actions_total",
        "nowpilot_worker_dead_letters_total",
        "nowpilot_worker_mtta_seconds",
        "nowpilot_worker_time_to_resolve_seconds",
        "nowpilot_worker_reconcile_duration_seconds",
        "nowpilot_queue_deliveries_total",
        "nowpilot_servicenow_requests_total",
        "nowpilot_servicenow_request_duration_seconds",
    ],
}

PLANS = """
[[plans]]
name = "auto-resolve"
autonomy = "autonomous"
[plans.intake]
title_contains_any = ["[auto-resolve]"]
[[plans.actions]]
kind = "resolve"
close_code = "Solution provided"
close_notes = "Restarted the pool; checks are green."

[[plans]]
name = "bad-code"
autonomy = "autonomous"
[plans.intake]
title_contains_any = ["[bad-code]"]
[[plans.actions]]
kind = "resolve"
close_code = "Not a real close code"
close_notes = "Never written."
"""

INTEGRATION_USER = ("nowpilot.integration", "integration-pw")
PERSON = ("admin", "admin")


def log(message: str) -> None:
    print(f"  {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
         auth: tuple[str, str] | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_until(what: str, predicate, timeout: float, processes) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in processes:
            if proc.poll() is not None:
                raise SystemExit(f"FAIL: {proc.name} exited with {proc.returncode} while waiting "
                                 f"for {what}; its log:\n{proc.tail()}")
        try:
            if predicate():
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.25)
    raise SystemExit(f"FAIL: timed out after {timeout:.0f} s waiting for {what}")


class Process:
    """A child process whose stderr goes to a file, ended with SIGTERM (then SIGKILL)."""

    def __init__(self, name: str, argv: list[str], workdir: Path, env: dict) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def poll(self):
        return self.proc.poll()

    @property
    def returncode(self):
        return self.proc.returncode

    def tail(self, lines: int = 40) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def content_type_problem(name: str, url: str) -> list[str]:
    """Prometheus 3 refuses a scrape without a valid Content-Type: the text format's must be
    there."""
    with urllib.request.urlopen(url, timeout=5) as response:
        kind = response.headers.get("Content-Type", "")
    if not kind.startswith("text/plain") or "version=0.0.4" not in kind:
        return [f"{name}: /metrics answers Content-Type {kind!r}, not "
                "'text/plain; version=0.0.4' (Prometheus 3 refuses the scrape)"]
    return []


def families(scrape: str) -> set[str]:
    """Metric family names declared by `# TYPE` lines."""
    return {line.split()[2] for line in scrape.splitlines() if line.startswith("# TYPE ")}


def promtool_check(name: str, scrape: str) -> list[str]:
    result = subprocess.run(["promtool", "check", "metrics"], input=scrape.encode(),
                            capture_output=True)
    problems = (result.stdout + result.stderr).decode().strip()
    if result.returncode != 0 or problems:
        return [f"{name}: promtool check metrics (exit {result.returncode}):\n{problems}"]
    return []


def delete_topology(amqp_url: str, prefix: str) -> None:
    """Deletes every queue and exchange whose name starts with `prefix.`."""
    names = {"queue": set(), "exchange": set()}
    for kind in names:
        try:
            listed = subprocess.run(["rabbitmqctl", "-q", f"list_{kind}s", "name"],
                                    capture_output=True, text=True, timeout=30)
            names[kind] = {n.strip() for n in listed.stdout.splitlines()
                           if n.strip().startswith(prefix + ".")}
        except (OSError, subprocess.TimeoutExpired):
            pass
    # Without rabbitmqctl (a remote broker), the names the topology is known to use.
    if not names["queue"] and not names["exchange"]:
        names["exchange"] = {f"{prefix}.{n}" for n in
                             ("events", "dlx", "retry", "members", "activity")}
        names["queue"] = {f"{prefix}.dead"} | {f"{prefix}.events.p{n}" for n in range(4)} | {
            f"{prefix}.retry.{t}" for t in ("5s", "30s", "5m", "30m")}
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        for queue in sorted(names["queue"]):
            channel = connection.channel()
            try:
                channel.queue_delete(queue=queue)
            except pika.exceptions.ChannelClosedByBroker:
                pass
        for exchange in sorted(names["exchange"]):
            channel = connection.channel()
            try:
                channel.exchange_delete(exchange=exchange)
            except pika.exceptions.ChannelClosedByBroker:
                pass
    finally:
        connection.close()
    log(f"deleted {len(names['queue'])} queue(s) and {len(names['exchange'])} exchange(s) "
        f"of prefix {prefix}")


def incident(sim: str, fields: dict) -> dict:
    status, body = http("POST", f"{sim}/api/now/table/incident", json.dumps(fields).encode(),
                        {"Content-Type": "application/json", "Accept": "application/json"},
                        auth=PERSON)
    if status != 201:
        raise SystemExit(f"FAIL: the simulator refused an incident ({status}): {body[:300]!r}")
    return json.loads(body)["result"]


def metric_value(scrape: str, name: str, labels: dict) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in scrape.splitlines():
        if not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        if not (series == name or series.startswith(name + "{")):
            continue
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


def check_healthcheck(dockerfile: Path, ports: dict[str, int]) -> None:
    """Runs the image's HEALTHCHECK command (its exec form, as Docker would) against the live
    processes, and against a closed port, where it must fail."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])\s*$", text, re.M)
    if not match:
        raise SystemExit("FAIL: the Dockerfile has no HEALTHCHECK in exec form")
    command = json.loads(match.group(1))
    for name, port in {**ports, "a closed port": free_port()}.items():
        env = {"PATH": "/usr/bin:/bin", "NOWPILOT_HEALTH_PORT": str(port)}
        healthy = subprocess.run(command, env=env, capture_output=True, timeout=10).returncode == 0
        if healthy != (name != "a closed port"):
            raise SystemExit(f"FAIL: the image's HEALTHCHECK says {name} on port {port} is "
                             f"{'healthy' if healthy else 'unhealthy'}")
    log(f"the image's HEALTHCHECK passes on {', '.join(ports)} and fails on a closed port")


def scenario(args, workdir: Path, prefix: str, procs: list) -> dict[str, str]:
    binary = str(Path(args.bin).resolve())
    sim_port, ingress_port, worker_port = free_port(), free_port(), free_port()
    sim = f"http://127.0.0.1:{sim_port}"
    ingress = f"http://127.0.0.1:{ingress_port}"
    worker = f"http://127.0.0.1:{worker_port}"
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    (workdir / "sn-password").write_text(INTEGRATION_USER[1] + "\n")
    (workdir / "webhook-secret").write_text(secret + "\n")
    (workdir / "nowpilot.toml").write_text(f"""
[servicenow]
instance_url = "{sim}"
auth = "basic"
username = "{INTEGRATION_USER[0]}"
password_file = "sn-password"

[queue]
url = "{args.amqp_url}"
prefix = "{prefix}"
partitions = 4

[ingress]
listen = "127.0.0.1:{ingress_port}"
secrets_file = "webhook-secret"

[worker]
admin_listen = "127.0.0.1:{worker_port}"
quickstart = true
retry_delays = ["5s"]
{PLANS}
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOWPILOT_")}
    env["NOWPILOT_CONFIG"] = str(workdir / "nowpilot.toml")
    env["NOWPILOT_LOG"] = "warn"
    env["NOWPILOT_SIM_WEBHOOK_SECRET"] = secret

    procs.append(Process("sim", [
        binary, "sim", "--listen", f"127.0.0.1:{sim_port}", "--seed-demo",
        "--user", f"{PERSON[0]}:{PERSON[1]}",
        "--user", f"{INTEGRATION_USER[0]}:{INTEGRATION_USER[1]}",
        "--webhook-url", f"{ingress}/webhooks/servicenow",
        "--webhook-skip-user", INTEGRATION_USER[0]], workdir, env))
    wait_until("the simulator", lambda: http("GET", f"{sim}/api/now/table/sys_user?sysparm_limit=1",
                                             auth=PERSON)[0] == 200, 60, procs)
    procs.append(Process("ingress", [binary, "ingress"], workdir, env))
    procs.append(Process("worker", [binary, "worker"], workdir, env))
    wait_until("the ingress to be ready", lambda: http("GET", f"{ingress}/readyz")[0] == 200,
               90, procs)
    wait_until("the worker to be ready", lambda: http("GET", f"{worker}/readyz")[0] == 200,
               90, procs)
    log("simulator, ingress and worker are up")
    if args.dockerfile:
        check_healthcheck(Path(args.dockerfile), {"ingress": ingress_port,
                                                  "worker": worker_port})

    # Callbacks through the simulator's business rule (signed, like ServiceNow's).
    hour_ago = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    incident(sim, {"short_description": "Checkout latency high", "impact": "1",
                   "urgency": "2", "opened_at": hour_ago})
    incident(sim, {"short_description": "[auto-resolve] pool exhausted", "impact": "3",
                   "urgency": "3", "opened_at": hour_ago})
    incident(sim, {"short_description": "[bad-code] disk full", "impact": "3", "urgency": "3"})
    # Refusals: a forged signature and a body that is not JSON.
    forged = {"Content-Type": "application/json", "webhook-id": "x-1",
              "webhook-timestamp": str(int(time.time())),
              "webhook-signature": "v1," + base64.b64encode(b"0" * 32).decode()}
    status, _ = http("POST", f"{ingress}/webhooks/servicenow", b"{}", forged)
    if status != 401:
        raise SystemExit(f"FAIL: a forged callback got {status}, not 401")
    status, _ = http("POST", f"{ingress}/webhooks/servicenow", b"not json",
                     {"Content-Type": "text/plain"})
    if status < 400:
        raise SystemExit(f"FAIL: a text/plain callback got {status}")

    def worker_done() -> bool:
        scrape = http("GET", f"{worker}/metrics")[1].decode()
        return (metric_value(scrape, "nowpilot_worker_actions_total",
                             {"kind": "acknowledge", "result": "done"}) >= 1
                and metric_value(scrape, "nowpilot_worker_actions_total",
                                 {"kind": "resolve", "result": "done"}) >= 1
                and metric_value(scrape, "nowpilot_worker_dead_letters_total", {}) >= 1)
    wait_until("the worker to acknowledge, resolve and dead-letter", worker_done, 120, procs)
    log("traffic handled: acknowledged, investigated, resolved, dead-lettered, refused")

    scrapes = {
        "ingress": http("GET", f"{ingress}/metrics")[1].decode(),
        "worker": http("GET", f"{worker}/metrics")[1].decode(),
    }
    header_problems = (content_type_problem("ingress", f"{ingress}/metrics")
                       + content_type_problem("worker", f"{worker}/metrics"))
    if header_problems:
        raise SystemExit("FAIL: " + "; ".join(header_problems))
    # The simulator is a test double, not a nowpilot process: it serves no /metrics. Say so
    # rather than pretend it was checked.
    status, _ = http("GET", f"{sim}/metrics", auth=PERSON)
    if status == 200:
        scrapes["sim"] = http("GET", f"{sim}/metrics", auth=PERSON)[1].decode()
    else:
        log(f"sim: no /metrics (HTTP {status}); nothing to check there")
    return scrapes


def scrape_run(args, workdir: Path, prefix: str, procs: list) -> dict[str, str]:
    """`nowpilot run` (ingress, worker and admin in one process), when the binary has it."""
    binary = str(Path(args.bin).resolve())
    probe = subprocess.run([binary, "run", "--help"], capture_output=True)
    if probe.returncode != 0:
        log("run: this binary has no `run` command; skipped")
        return {}
    rundir = workdir / "run"
    rundir.mkdir()
    ingress_port, admin_port = free_port(), free_port()
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    (rundir / "nowpilot.toml").write_text(f"""
[queue]
kind = "memory"
prefix = "{prefix}-run"
partitions = 2

[ingress]
listen = "127.0.0.1:{ingress_port}"
secrets = ["{secret}"]

[worker]
admin_listen = "127.0.0.1:{admin_port}"
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOWPILOT_")}
    env["NOWPILOT_CONFIG"] = str(rundir / "nowpilot.toml")
    env["NOWPILOT_LOG"] = "warn"
    procs.append(Process("run", [binary, "run"], rundir, env))
    admin = f"http://127.0.0.1:{admin_port}"
    wait_until("nowpilot run's /metrics", lambda: http("GET", f"{admin}/metrics")[0] == 200,
               90, procs)
    forged = {"Content-Type": "application/json", "webhook-id": "x-1",
              "webhook-timestamp": str(int(time.time())),
              "webhook-signature": "v1," + base64.b64encode(b"0" * 32).decode()}
    http("POST", f"http://127.0.0.1:{ingress_port}/webhooks/servicenow", b"{}", forged)
    return {"run": http("GET", f"{admin}/metrics")[1].decode()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", required=True, help="the nowpilot binary")
    parser.add_argument("--out", required=True, help="where to save the scrapes")
    parser.add_argument("--dockerfile", help="also run this Dockerfile's HEALTHCHECK command")
    parser.add_argument("--amqp-url", default=os.environ.get(
        "NOWPILOT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"))
    args = parser.parse_args()
    if not Path(args.bin).is_file():
        print(f"FAIL: {args.bin} does not exist: build it first (cargo build --bin nowpilot)",
              file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prefix = f"npcheck-{os.getpid()}-{secrets.token_hex(3)}"
    procs: list[Process] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="nowpilot-metrics-") as tmp:
        workdir = Path(tmp)
        try:
            scrapes = scenario(args, workdir, prefix, procs)
            scrapes.update(scrape_run(args, workdir, prefix, procs))
        except SystemExit as e:
            for proc in procs:
                sys.stderr.write(f"--- {proc.name} log (last lines)\n{proc.tail()}\n")
            raise e
        finally:
            for proc in reversed(procs):
                proc.stop()
            try:
                delete_topology(args.amqp_url, prefix)
            except Exception as e:  # noqa: BLE001 - cleanup must report, not mask the result
                print(f"WARN: could not delete the topology of {prefix}: {e}", file=sys.stderr)
        for name, scrape in scrapes.items():
            (out / f"{name}.prom").write_text(scrape)
            failures += promtool_check(name, scrape)
            missing = [f for f in EXPECTED.get(name, []) if f not in families(scrape)]
            if missing:
                failures.append(f"{name}: expected metric families missing: {missing}")
            log(f"{name}: {len(families(scrape))} metric families, promtool "
                f"{'complained' if any(f.startswith(name + ':') for f in failures) else 'clean'}")
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
