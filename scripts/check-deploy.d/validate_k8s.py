#!/usr/bin/env python3
"""Validates rendered Kubernetes manifests (the output of `kubectl kustomize`).

1. Schemas: every built-in kind against the Kubernetes OpenAPI schemas bundled with
   `kubernetes-validate` (strict: unknown fields are errors), for each --k8s-version; KEDA's
   ScaledObject and TriggerAuthentication and the Prometheus Operator's ServiceMonitor against
   the schemas below (the subset of their CRDs nowpilot uses, strict as well).
2. References the schemas cannot see: selectors that match pods, port names that exist,
   volumes, ConfigMaps, Secrets and keys that are defined, KEDA and ServiceMonitor targets.
3. nowpilot's own rules: the restricted Pod Security Standard, requests and limits, probes on
   /healthz and /readyz; for each process, the configuration its `--config` names (includes
   followed): listen ports, secret files mounted with those keys, a ServiceNow connection for
   workers, echo users for ingresses, one `[queue]` prefix and partition count for all, and
   `partitions` against the ScaledObject's maxReplicaCount and queue regex.
4. With --bin: each process's configuration loaded by the real binary (`nowpilot plans
   check`), so an unknown key or a bad plan fails here, not in a pod.

Usage: validate_k8s.py RENDERED.yaml [--k8s-version 1.31 ...] [--bin target/debug/nowpilot]
       [--external-secret NAME ...]
Exit 0 when everything holds; every problem is printed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

# --- CRD schemas (the fields of keda.sh/v1alpha1 and monitoring.coreos.com/v1 nowpilot uses) --

STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
HPA_RULES = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "stabilizationWindowSeconds": {"type": "integer", "minimum": 0, "maximum": 3600},
        "selectPolicy": {"enum": ["Max", "Min", "Disabled"]},
        "policies": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["type", "value", "periodSeconds"],
                "properties": {
                    "type": {"enum": ["Pods", "Percent"]},
                    "value": {"type": "integer", "minimum": 1},
                    "periodSeconds": {"type": "integer", "minimum": 1, "maximum": 1800},
                },
            },
        },
    },
}
METADATA = {"type": "object", "required": ["name"]}
SCALED_OBJECT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string"},
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["failureThreshold", "replicas"],
                    "properties": {
                        "failureThreshold": {"type": "integer", "minimum": 1},
                        "replicas": {"type": "integer", "minimum": 0},
                        "behavior": {"enum": ["static", "currentReplicas",
                                              "currentReplicasIfHigher",
                                              "currentReplicasIfLower"]},
                    },
                },
                "advanced": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string"},
                                "behavior": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {"scaleUp": HPA_RULES, "scaleDown": HPA_RULES},
                                },
                            },
                        },
                    },
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metadata": STRING_MAP,
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                            "authenticationRef": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "kind": {"enum": ["TriggerAuthentication",
                                                      "ClusterTriggerAuthentication"]},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}
TRIGGER_AUTHENTICATION = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "TriggerAuthentication"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "secretTargetRef": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["parameter", "name", "key"],
                        "properties": {"parameter": {"type": "string"},
                                       "name": {"type": "string"},
                                       "key": {"type": "string"}},
                    },
                },
            },
        },
    },
}
LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"matchLabels": STRING_MAP, "matchExpressions": {"type": "array"}},
}
DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?"
                                          r"(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector"],
            "properties": {
                "selector": LABEL_SELECTOR,
                "namespaceSelector": {"type": "object"},
                "jobLabel": {"type": "string"},
                "endpoints": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": DURATION,
                            "scrapeTimeout": DURATION,
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array"},
                            "metricRelabelings": {"type": "array"},
                        },
                    },
                },
            },
        },
    },
}
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): TRIGGER_AUTHENTICATION,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
}
RABBITMQ_SCALER_KEYS = {"host", "hostFromEnv", "protocol", "mode", "value", "activationValue",
                        "queueName", "vhostName", "useRegex", "excludeUnacknowledged",
                        "operation", "pageSize", "timeout", "unsafeSsl"}


class Report:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")


def name_of(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def matches(selector: dict, labels: dict) -> bool:
    wanted = selector.get("matchLabels", selector)
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def containers(doc: dict) -> list[dict]:
    return doc["spec"]["template"]["spec"].get("containers", [])


def check_schemas(docs: list[dict], versions: list[str], report: Report) -> None:
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in CRD_SCHEMAS:
            validator = jsonschema.Draft202012Validator(CRD_SCHEMAS[key])
            for error in validator.iter_errors(doc):
                path = ".".join(str(p) for p in error.absolute_path)
                report.fail(name_of(doc), f"{path}: {error.message}")
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                report.fail(name_of(doc), f"Kubernetes {version}: {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError:
                report.fail(name_of(doc), f"no schema for {key} in Kubernetes {version}: an "
                                          "unknown kind (a CRD needs a schema in this script)")


def check_references(docs: list[dict], external_secrets: set[str], report: Report) -> None:
    by_kind: dict[str, dict[str, dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    deployments = by_kind.get("Deployment", {})
    services = by_kind.get("Service", {})
    secrets = by_kind.get("Secret", {})
    configmaps = by_kind.get("ConfigMap", {})

    def secret_keys(name: str) -> set[str] | None:
        secret = secrets.get(name)
        if secret is None:
            return None
        return set(secret.get("data", {})) | set(secret.get("stringData", {}))

    def pods_matching(selector: dict) -> list[dict]:
        return [d for d in deployments.values()
                if matches(selector, d["spec"]["template"]["metadata"].get("labels", {}))]

    for name, dep in deployments.items():
        where = f"Deployment/{name}"
        pod = dep["spec"]["template"]["spec"]
        labels = dep["spec"]["template"]["metadata"].get("labels", {})
        if not matches(dep["spec"]["selector"], labels):
            report.fail(where, "spec.selector does not match the pod template's labels")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        psc = pod.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True:
            report.fail(where, "pod securityContext.runAsNonRoot must be true")
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            report.fail(where, "pod seccompProfile must be RuntimeDefault (restricted PSS)")
        if pod.get("automountServiceAccountToken") is not False:
            report.fail(where, "automountServiceAccountToken must be false (nowpilot needs no "
                               "Kubernetes API)")
        sa = pod.get("serviceAccountName")
        if sa and sa not in by_kind.get("ServiceAccount", {}):
            report.fail(where, f"serviceAccountName {sa} is not defined")
        for c in pod.get("containers", []):
            cw = f"{where} container {c['name']}"
            ports = {p.get("name") for p in c.get("ports", [])}
            for probe_name, want in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                                     ("startupProbe", "/healthz")):
                probe = c.get(probe_name)
                if probe is None:
                    report.fail(cw, f"has no {probe_name}")
                    continue
                get = probe.get("httpGet", {})
                if get.get("path") != want:
                    report.fail(cw, f"{probe_name} must GET {want}, not {get.get('path')}")
                if isinstance(get.get("port"), str) and get["port"] not in ports:
                    report.fail(cw, f"{probe_name} port {get['port']!r} is not a container port")
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                for what in ("cpu", "memory"):
                    if what not in res.get(part, {}):
                        report.fail(cw, f"resources.{part}.{what} is not set")
            sc = c.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False:
                report.fail(cw, "allowPrivilegeEscalation must be false")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                report.fail(cw, "capabilities must drop ALL")
            if sc.get("readOnlyRootFilesystem") is not True:
                report.fail(cw, "readOnlyRootFilesystem must be true")
            for mount in c.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    report.fail(cw, f"mounts volume {mount['name']!r}, which the pod lacks")
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    keys = secret_keys(ref["name"])
                    if keys is None:
                        report.fail(cw, f"env {env['name']}: Secret {ref['name']} is not defined")
                    elif ref["key"] not in keys:
                        report.fail(cw, f"env {env['name']}: Secret {ref['name']} has no key "
                                        f"{ref['key']!r}")
        for vname, volume in volumes.items():
            if "configMap" in volume and volume["configMap"]["name"] not in configmaps:
                report.fail(where, f"volume {vname}: ConfigMap {volume['configMap']['name']} "
                                   "is not defined")
            if "secret" in volume and secret_keys(volume["secret"]["secretName"]) is None:
                report.fail(where, f"volume {vname}: Secret {volume['secret']['secretName']} "
                                   "is not defined")

    for name, svc in services.items():
        where = f"Service/{name}"
        pods = pods_matching(svc["spec"].get("selector", {}))
        if not pods:
            report.fail(where, "its selector matches no Deployment's pods")
            continue
        for port in svc["spec"].get("ports", []):
            target = port.get("targetPort")
            if isinstance(target, str):
                for dep in pods:
                    names = {p.get("name") for c in containers(dep) for p in c.get("ports", [])}
                    if target not in names:
                        report.fail(where, f"targetPort {target!r} is not a port of "
                                           f"Deployment/{dep['metadata']['name']}")

    for name, pdb in by_kind.get("PodDisruptionBudget", {}).items():
        if not pods_matching(pdb["spec"]["selector"]):
            report.fail(f"PodDisruptionBudget/{name}", "its selector matches no pods")
    for name, policy in by_kind.get("NetworkPolicy", {}).items():
        pods = pods_matching(policy["spec"]["podSelector"])
        if not pods:
            report.fail(f"NetworkPolicy/{name}", "its podSelector matches no pods")
        allowed = {p.get("port") for rule in policy["spec"].get("ingress", [])
                   for p in rule.get("ports", [])}
        for dep in pods:
            for c in containers(dep):
                for p in c.get("ports", []):
                    if p["containerPort"] not in allowed and p.get("name") not in allowed:
                        report.fail(f"NetworkPolicy/{name}", f"denies port {p['containerPort']} "
                                    f"of Deployment/{dep['metadata']['name']} (probes, "
                                    "scrapes or callbacks would fail)")

    for name, monitor in by_kind.get("ServiceMonitor", {}).items():
        where = f"ServiceMonitor/{name}"
        selected = [s for s in services.values()
                    if matches(monitor["spec"]["selector"], s["metadata"].get("labels", {}))]
        if not selected:
            report.fail(where, "its selector matches no Service")
        for endpoint in monitor["spec"].get("endpoints", []):
            with_port = [s for s in selected
                         if endpoint.get("port") in {p.get("name") for p in s["spec"]["ports"]}]
            if len(with_port) != len(selected):
                report.fail(where, f"port {endpoint.get('port')!r} is missing on some selected "
                                   "Services")

    auths = by_kind.get("TriggerAuthentication", {})
    for name, auth in auths.items():
        for ref in auth["spec"].get("secretTargetRef", []):
            keys = secret_keys(ref["name"])
            if keys is None or ref["key"] not in keys:
                report.fail(f"TriggerAuthentication/{name}",
                            f"Secret {ref['name']} key {ref['key']!r} is not defined")
    for name, scaled in by_kind.get("ScaledObject", {}).items():
        where = f"ScaledObject/{name}"
        target = scaled["spec"]["scaleTargetRef"]["name"]
        if target not in deployments:
            report.fail(where, f"scaleTargetRef {target} is not a Deployment here")
        for trigger in scaled["spec"]["triggers"]:
            ref = trigger.get("authenticationRef", {}).get("name")
            if ref and ref not in auths:
                report.fail(where, f"authenticationRef {ref} is not defined")
            if trigger["type"] == "rabbitmq":
                meta = trigger["metadata"]
                unknown = set(meta) - RABBITMQ_SCALER_KEYS
                if unknown:
                    report.fail(where, f"unknown rabbitmq scaler keys {sorted(unknown)}")
                if meta.get("useRegex") == "true" and meta.get("protocol") != "http":
                    report.fail(where, "useRegex needs protocol http (the management API)")
                if "value" not in meta or "queueName" not in meta:
                    report.fail(where, "the rabbitmq trigger needs value and queueName")

    for name, ing in by_kind.get("Ingress", {}).items():
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                svc = path["backend"]["service"]
                target = services.get(svc["name"])
                if target is None:
                    report.fail(f"Ingress/{name}", f"backend Service {svc['name']} is not defined")
                elif svc["port"].get("name") not in {p.get("name") for p in target["spec"]["ports"]}:
                    report.fail(f"Ingress/{name}", f"Service {svc['name']} has no port "
                                                   f"{svc['port']}")
        for tls in ing["spec"].get("tls", []):
            if tls["secretName"] not in secrets and tls["secretName"] not in external_secrets:
                report.fail(f"Ingress/{name}", f"TLS Secret {tls['secretName']} is neither "
                                               "defined nor declared external")


def check_config(docs: list[dict], binary: str | None, report: Report) -> None:
    """Each role's configuration: the file its `--config` names in the ConfigMap, includes
    followed, checked against its pod, and loaded by the real binary."""
    configmaps = [d for d in docs if d["kind"] == "ConfigMap"
                  and "nowpilot.toml" in d.get("data", {})]
    if len(configmaps) != 1:
        report.fail("ConfigMap", f"expected one ConfigMap with nowpilot.toml, found "
                                 f"{len(configmaps)}")
        return
    data = configmaps[0]["data"]
    where = f"ConfigMap/{configmaps[0]['metadata']['name']}"
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}

    def load(name: str, seen: tuple = ()) -> dict:
        if name not in data:
            report.fail(where, f"{name} is included or named by --config but missing")
            return {}
        if name in seen:
            report.fail(where, f"{name} includes itself")
            return {}
        try:
            parsed = tomllib.loads(data[name])
        except tomllib.TOMLDecodeError as e:
            report.fail(where, f"{name} is not TOML: {e}")
            return {}
        merged: dict = {}

        def merge(layer: dict) -> None:
            for section, values in layer.items():
                if isinstance(values, dict):
                    merged.setdefault(section, {}).update(values)
                else:
                    merged[section] = values

        for include in parsed.pop("include", []):
            merge(load(include, seen + (name,)))
        merge(parsed)
        return merged

    def port_of(listen: str) -> int:
        return int(listen.rsplit(":", 1)[1])

    def check_file(dep: dict, key: str, path: str) -> None:
        pod = dep["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        found = False
        for c in containers(dep):
            for mount in c.get("volumeMounts", []):
                prefix = mount["mountPath"].rstrip("/") + "/"
                if not path.startswith(prefix):
                    continue
                rel = path[len(prefix):]
                volume = volumes.get(mount["name"], {})
                if "secret" in volume:
                    secret = secrets.get(volume["secret"]["secretName"], {})
                    found = rel in set(secret.get("data", {})) | set(secret.get("stringData", {}))
                elif "configMap" in volume:
                    found = rel in data
        if not found:
            report.fail(f"Deployment/{dep['metadata']['name']}",
                        f"{key} = {path!r} is not a mounted file with that key")

    partitions_seen: set[int] = set()
    prefixes_seen: set[str] = set()
    for dep in (d for d in docs if d["kind"] == "Deployment"):
        dwhere = f"Deployment/{dep['metadata']['name']}"
        for c in containers(dep):
            args = c.get("args", [])
            role = next((a for a in args if a in ("ingress", "worker", "run")), None)
            if role is None:
                continue
            config_path = args[args.index("--config") + 1] if "--config" in args else \
                "/etc/nowpilot/nowpilot.toml"
            if not config_path.startswith("/etc/nowpilot/"):
                report.fail(dwhere, f"--config {config_path} is not in the mounted ConfigMap")
                continue
            name = config_path[len("/etc/nowpilot/"):]
            config = load(name)
            queue = config.get("queue", {})
            partitions_seen.add(int(queue.get("partitions", 16)))
            prefixes_seen.add(queue.get("prefix", "nowpilot"))
            ports = {p["containerPort"] for p in c.get("ports", [])}
            if role in ("ingress", "run"):
                ingress = config.get("ingress", {})
                if port_of(ingress.get("listen", "0.0.0.0:8080")) not in ports:
                    report.fail(dwhere, "[ingress] listen is not a container port")
                if "secrets_file" in ingress:
                    check_file(dep, "ingress.secrets_file", ingress["secrets_file"])
                if "servicenow" not in config and not ingress.get("echo_users"):
                    report.fail(dwhere, "no [servicenow] username and no [ingress] echo_users: "
                                        "nowpilot's own updates would come back as work")
            if role in ("worker", "run"):
                listen = config.get("worker", {}).get("admin_listen", "127.0.0.1:9091")
                if not listen.startswith(("0.0.0.0:", "[::]:")):
                    report.fail(dwhere, f"[worker] admin_listen {listen} is not reachable by "
                                        "probes (use 0.0.0.0:9091)")
                if port_of(listen) not in ports:
                    report.fail(dwhere, "[worker] admin_listen is not a container port")
                sn = config.get("servicenow")
                if not sn:
                    report.fail(dwhere, f"{name} has no [servicenow] section: the worker "
                                        "would wait for a connection forever")
                for key in ("password_file", "client_secret_file", "refresh_token_file"):
                    if sn and key in sn:
                        check_file(dep, f"servicenow.{key}", sn[key])
                if config.get("worker", {}).get("runbook_secret_file"):
                    check_file(dep, "worker.runbook_secret_file",
                               config["worker"]["runbook_secret_file"])
            token_file = config.get("admin", {}).get("token_file")
            if token_file:
                check_file(dep, "admin.token_file", token_file)
            if binary:
                with tempfile.TemporaryDirectory(prefix="nowpilot-k8s-config-") as tmp:
                    for file, text in data.items():
                        (Path(tmp) / file).write_text(text)
                    result = subprocess.run([binary, "--config", str(Path(tmp) / name),
                                             "plans", "check"], capture_output=True, text=True,
                                            env={"PATH": "/usr/bin:/bin"})
                    if result.returncode != 0:
                        report.fail(dwhere, f"`nowpilot plans check` refused {name} "
                                            f"(exit {result.returncode}): {result.stderr.strip()}")
    if len(partitions_seen) > 1 or len(prefixes_seen) > 1:
        report.fail(where, f"the processes disagree on [queue] partitions {partitions_seen} or "
                           f"prefix {prefixes_seen}")
    for doc in docs:
        if doc["kind"] in ("Secret", "ConfigMap"):
            continue
        if re.search(r"whsec_[A-Za-z0-9+/=]{8,}", yaml.safe_dump(doc)):
            report.fail(name_of(doc), "holds a webhook secret inline; use a Secret")

    partitions = next(iter(partitions_seen), 16)
    prefix = next(iter(prefixes_seen), "nowpilot")
    for scaled in (d for d in docs if d["kind"] == "ScaledObject"):
        where_so = name_of(scaled)
        if scaled["spec"].get("maxReplicaCount") != partitions:
            report.fail(where_so, f"maxReplicaCount {scaled['spec'].get('maxReplicaCount')} "
                                  f"must equal [queue] partitions ({partitions})")
        for trigger in scaled["spec"]["triggers"]:
            if trigger["type"] != "rabbitmq":
                continue
            pattern = trigger["metadata"].get("queueName", "")
            if trigger["metadata"].get("useRegex") == "true":
                regex = re.compile(pattern)
                wanted = [f"{prefix}.events.p{n}" for n in range(partitions)]
                unwanted = [f"{prefix}.dead", f"{prefix}.retry.5s", f"{prefix}.lock.p0",
                            f"{prefix}x.events.p0", f"other.{prefix}.events.p0"]
                missed = [q for q in wanted if not regex.search(q)]
                caught = [q for q in unwanted if regex.search(q)]
                if missed or caught:
                    report.fail(where_so, f"queueName regex {pattern!r} misses {missed[:3]} "
                                          f"or catches {caught}")
            elif pattern != f"{prefix}.events.p0" or partitions != 1:
                report.fail(where_so, f"queueName {pattern!r} without useRegex covers one queue, "
                                      f"not the {partitions} partition queues")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rendered")
    parser.add_argument("--k8s-version", action="append", default=[])
    parser.add_argument("--bin")
    parser.add_argument("--external-secret", action="append", default=[],
                        help="a Secret the manifests use but that is created outside them")
    args = parser.parse_args()
    versions = args.k8s_version or ["1.31"]
    docs = [d for d in yaml.safe_load_all(Path(args.rendered).read_text()) if d]
    if not docs:
        print(f"FAIL: {args.rendered} has no resources", file=sys.stderr)
        return 1
    report = Report()
    check_schemas(docs, versions, report)
    check_references(docs, set(args.external_secret), report)
    check_config(docs, args.bin, report)
    kinds = sorted({d["kind"] for d in docs})
    for problem in report.problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    print(f"  {len(docs)} resources ({', '.join(kinds)}) against Kubernetes "
          f"{', '.join(versions)}: {len(report.problems)} problem(s)")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
