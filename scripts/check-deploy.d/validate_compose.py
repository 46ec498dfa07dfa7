#!/usr/bin/env python3
"""Checks deploy/compose/ beyond its schema (check-jsonschema does the Compose Specification):
that the pieces fit together the way `docker compose up` needs them to.

- Every bind-mounted host path, secret file and build context exists; depends_on and
  network_mode targets exist; services sharing another's network namespace publish no ports.
- Every Prometheus scrape target names a service and a port something listens on there, and
  `promtool check config` accepts prometheus.yml with its rule files (mounted paths mapped back
  to the repository).
- Grafana's provisioning finds the dashboard where compose mounts it, and the data source uid
  the dashboard expects.
- The simulator and the ingress share the webhook secret, the integration user and password
  agree between the simulator, the connection and the ingress's echo users, the simulator's
  webhook URL reaches the ingress, and each nowpilot container's health-check port is the port
  it serves /healthz on.
- With --bin: each nowpilot service's configuration (file plus its environment overrides) is
  loaded by the real binary (`nowpilot plans check`).

Usage: validate_compose.py deploy/compose/compose.yaml [--bin target/debug/nowpilot]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import yaml

# Ports the third-party images listen on.
KNOWN_PORTS = {"rabbitmq": {5672, 15672, 15692}, "prometheus": {9090}, "grafana": {3000}}


def split_mount(spec: str) -> tuple[str, str]:
    parts = spec.split(":")
    return parts[0], parts[1] if len(parts) > 1 else ""


def flag(command: list[str], name: str) -> list[str]:
    """Values of `--name=value` or `--name value` in a command list."""
    values = []
    for i, arg in enumerate(command):
        if arg.startswith(f"--{name}="):
            values.append(arg.split("=", 1)[1])
        elif arg == f"--{name}" and i + 1 < len(command):
            values.append(command[i + 1])
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("compose")
    parser.add_argument("--bin")
    args = parser.parse_args()
    compose_path = Path(args.compose).resolve()
    here = compose_path.parent
    compose = yaml.safe_load(compose_path.read_text())
    services: dict = compose.get("services", {})
    problems: list[str] = []

    def fail(where: str, message: str) -> None:
        problems.append(f"{where}: {message}")

    nowpilot_services = {n: s for n, s in services.items()
                         if str(s.get("image", "")).startswith("nowpilot")}
    configs: dict[str, dict] = {}
    for name, svc in services.items():
        for mount in svc.get("volumes", []):
            source, _ = split_mount(mount)
            if source.startswith((".", "/")) and not (here / source).exists():
                fail(name, f"mounts {source}, which does not exist")
        for secret in svc.get("secrets", []):
            if secret not in compose.get("secrets", {}):
                fail(name, f"uses secret {secret}, which is not declared")
        for dep in svc.get("depends_on", []):
            if dep not in services:
                fail(name, f"depends on {dep}, which is not a service")
        mode = svc.get("network_mode", "")
        if mode.startswith("service:"):
            target = mode.split(":", 1)[1]
            if target not in services:
                fail(name, f"network_mode names {target}, which is not a service")
            if target not in svc.get("depends_on", []):
                fail(name, f"shares {target}'s network but does not depend on it")
            if svc.get("ports"):
                fail(name, "shares another service's network namespace, so it cannot publish ports")
        build = svc.get("build")
        if build and not (here / build.get("context", ".") / build.get("dockerfile",
                                                                      "Dockerfile")).exists():
            fail(name, "its build context has no Dockerfile")
    for secret, spec in compose.get("secrets", {}).items():
        if "file" in spec and not (here / spec["file"]).is_file():
            fail(f"secret {secret}", f"{spec['file']} does not exist")

    # What listens where: ports by network namespace (a service name).
    listening: dict[str, set[int]] = {k: set(v) for k, v in KNOWN_PORTS.items()}

    def netns(name: str) -> str:
        mode = services[name].get("network_mode", "")
        return mode.split(":", 1)[1] if mode.startswith("service:") else name

    def mounted_config_dir(svc: dict) -> Path | None:
        for mount in svc.get("volumes", []):
            source, target = split_mount(mount)
            if target == "/etc/nowpilot":
                return here / source
        return None

    def load_config(name: str, svc: dict) -> dict:
        directory = mounted_config_dir(svc)
        env = svc.get("environment", {}) or {}
        config_file = Path(env.get("NOWPILOT_CONFIG", "/etc/nowpilot/nowpilot.toml"))
        if directory is None:
            return {}
        path = directory / config_file.relative_to("/etc/nowpilot")
        merged: dict = {}

        def read(p: Path) -> None:
            data = tomllib.loads(p.read_text())
            for include in data.pop("include", []):
                read(p.parent / include)
            for section, values in data.items():
                if isinstance(values, dict):
                    merged.setdefault(section, {}).update(values)
                else:
                    merged[section] = values
        read(path)
        for key, value in env.items():
            if key.startswith("NOWPILOT_") and "__" in key:
                section, field = key[len("NOWPILOT_"):].lower().split("__", 1)
                merged.setdefault(section, {})[field] = value
        return merged

    for name, svc in nowpilot_services.items():
        command = svc.get("command", [])
        role = command[0] if command else ""
        env = svc.get("environment", {}) or {}
        if role == "sim":
            for listen in flag(command, "listen"):
                listening.setdefault(netns(name), set()).add(int(listen.rsplit(":", 1)[1]))
            continue
        config = load_config(name, svc)
        configs[name] = config
        if role == "ingress":
            port = int(config.get("ingress", {}).get("listen", "0.0.0.0:8080").rsplit(":", 1)[1])
        else:
            listen = config.get("worker", {}).get("admin_listen", "127.0.0.1:9091")
            if not listen.startswith(("0.0.0.0:", "[::]:")):
                fail(name, f"admin_listen {listen} is unreachable from other containers")
            port = int(listen.rsplit(":", 1)[1])
        listening.setdefault(netns(name), set()).add(port)
        health = int(env.get("NOWPILOT_HEALTH_PORT", 8080))
        if health != port:
            fail(name, f"NOWPILOT_HEALTH_PORT {health} is not its /healthz port {port}")

    # Ports published on the host must be served in that namespace.
    for name, svc in services.items():
        for published in svc.get("ports", []):
            container_port = int(str(published).rsplit(":", 1)[1].split("/")[0])
            if container_port not in listening.get(name, set()):
                fail(name, f"publishes {container_port}, where nothing listens")

    # Prometheus: targets and config.
    prometheus = services.get("prometheus")
    if prometheus:
        mounts = dict(split_mount(m)[::-1] for m in prometheus.get("volumes", []))
        prom_config_path = here / mounts.get("/etc/prometheus/prometheus.yml", "")
        prom = yaml.safe_load(prom_config_path.read_text())
        for job in prom.get("scrape_configs", []):
            for static in job.get("static_configs", []):
                for target in static.get("targets", []):
                    host, port = target.rsplit(":", 1)
                    if host not in services:
                        fail(f"prometheus job {job['job_name']}", f"{host} is not a service")
                    elif int(port) not in listening.get(host, set()):
                        fail(f"prometheus job {job['job_name']}",
                             f"nothing listens on {target}")
        with tempfile.TemporaryDirectory() as tmp:
            rules_dir = Path(tmp) / "rules"
            rules_dir.mkdir()
            for target, source in mounts.items():
                if target.startswith("/etc/prometheus/rules/"):
                    shutil.copy(here / source, rules_dir / Path(target).name)
            copied = dict(prom)
            copied["rule_files"] = [str(rules_dir / Path(p).name) for p in
                                    prom.get("rule_files", [])]
            (Path(tmp) / "prometheus.yml").write_text(yaml.safe_dump(copied))
            result = subprocess.run(["promtool", "check", "config",
                                     str(Path(tmp) / "prometheus.yml")],
                                    capture_output=True, text=True)
            if result.returncode != 0:
                fail("prometheus.yml", "promtool check config failed:\n" + result.stdout
                     + result.stderr)

    # Grafana: provisioning paths and the data source uid.
    grafana = services.get("grafana")
    if grafana:
        mounts = dict(split_mount(m)[::-1] for m in grafana.get("volumes", []))
        provisioning = here / mounts.get("/etc/grafana/provisioning", "missing")
        dashboards = [t for t in mounts if t.endswith(".json")]
        for provider_file in (provisioning / "dashboards").glob("*.yaml"):
            for provider in yaml.safe_load(provider_file.read_text()).get("providers", []):
                path = provider.get("options", {}).get("path", "")
                if not any(Path(d).parent == Path(path) for d in dashboards):
                    fail("grafana", f"provider {provider['name']} reads {path}, where no "
                                    "dashboard is mounted")
        uids = set()
        for ds_file in (provisioning / "datasources").glob("*.yaml"):
            for ds in yaml.safe_load(ds_file.read_text()).get("datasources", []):
                uids.add(ds.get("uid"))
                host = urlparse(ds.get("url", "")).hostname
                if host not in services:
                    fail("grafana", f"data source {ds.get('name')} points at {host}, not a service")
        if "prometheus" not in uids:
            fail("grafana", "no data source with uid 'prometheus' (the dashboard's default)")

    # The simulator, the ingress and the workers agree on secrets and users.
    sims = [s for s in nowpilot_services.values() if (s.get("command") or [""])[0] == "sim"]
    for sim in sims:
        command = sim["command"]
        env = sim.get("environment", {}) or {}
        secret = env.get("NOWPILOT_SIM_WEBHOOK_SECRET") or next(iter(flag(command,
                                                                          "webhook-secret")), "")
        for url in flag(command, "webhook-url"):
            parsed = urlparse(url)
            ingress = services.get(parsed.hostname or "")
            if ingress is None:
                fail("sim", f"--webhook-url host {parsed.hostname} is not a service")
                continue
            if parsed.path != "/webhooks/servicenow":
                fail("sim", f"--webhook-url path {parsed.path} is not /webhooks/servicenow")
            config = configs.get(parsed.hostname, {})
            ingress_conf = config.get("ingress", {})
            if parsed.port != int(ingress_conf.get("listen", "0.0.0.0:8080").rsplit(":", 1)[1]):
                fail("sim", f"--webhook-url port {parsed.port} is not the ingress's listen port")
            secrets_file = ingress_conf.get("secrets_file", "")
            spec = None
            for name in ingress.get("secrets", []):
                if secrets_file == f"/run/secrets/{name}":
                    spec = compose["secrets"][name]
            if spec is None:
                fail(parsed.hostname, f"secrets_file {secrets_file} is not one of its secrets")
            else:
                lines = [line.strip() for line in (here / spec["file"]).read_text().splitlines()]
                if secret not in lines:
                    fail("sim", "its webhook secret is not among the ingress's secrets")
            skip = flag(command, "webhook-skip-user")
            if skip and skip[0] not in ingress_conf.get("echo_users", [skip[0]]):
                fail(parsed.hostname, f"echo_users lacks the integration user {skip[0]}")
        users = dict(u.split(":", 1) for u in flag(command, "user"))
        for name, config in configs.items():
            sn = config.get("servicenow")
            if not sn:
                continue
            user = sn.get("username")
            if user not in users:
                fail(name, f"[servicenow] username {user} is not a --user of the simulator")
                continue
            password_file = sn.get("password_file", "")
            for secret_name in services[name].get("secrets", []):
                if password_file == f"/run/secrets/{secret_name}":
                    text = (here / compose["secrets"][secret_name]["file"]).read_text()
                    if text.rstrip("\n") != users[user]:
                        fail(name, "the password secret differs from the simulator's --user")

    # The real binary loads every nowpilot service's configuration.
    if args.bin:
        for name, svc in nowpilot_services.items():
            if name not in configs:
                continue
            directory = mounted_config_dir(svc)
            env = {k: str(v) for k, v in (svc.get("environment", {}) or {}).items()
                   if k.startswith("NOWPILOT_") and k != "NOWPILOT_HEALTH_PORT"}
            config_file = Path(env.pop("NOWPILOT_CONFIG", "/etc/nowpilot/nowpilot.toml"))
            path = directory / config_file.relative_to("/etc/nowpilot")
            clean = {k: v for k, v in os.environ.items() if not k.startswith("NOWPILOT_")}
            result = subprocess.run([args.bin, "--config", str(path), "plans", "check"],
                                    capture_output=True, text=True, env={**clean, **env})
            if result.returncode != 0:
                fail(name, f"`nowpilot plans check` refused its configuration: "
                           f"{result.stderr.strip()}")

    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    print(f"  {len(services)} services, {len(nowpilot_services)} running nowpilot: "
          f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
