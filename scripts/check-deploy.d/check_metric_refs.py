#!/usr/bin/env python3
"""Checks that every metric the dashboard, the alert rules and docs/metrics.md name exists.

- The metric names nowpilot defines are the `"nowpilot_..."` string literals in the files of
  crates/*/src that record or describe metrics (where every metric name lives, by convention).
- The Grafana dashboard must parse, have unique panel ids and a layout that fits 24 columns
  without overlaps, and every query must be valid PromQL (checked by `promtool check rules` on
  the queries wrapped as recording rules, dashboard variables substituted) naming only metrics
  nowpilot defines (histograms through _bucket/_sum/_count) or RabbitMQ's, from the list below.
- The alert rules must name only such metrics too.
- docs/metrics.md must document every metric nowpilot defines, and nothing else.
- Every alert has a summary, a description and a runbook_url whose file and heading exist, and
  the relative links in README.md, docs/ and deploy/*/README.md resolve (anchors included).
- With --scrape FILE...: the metric families in real scrapes must all be defined in code and
  documented (a name built at run time would escape the literal search), and every name used
  with _bucket must be a histogram there.

Usage: check_metric_refs.py --root REPO [--scrape worker.prom ...]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

# RabbitMQ's own metrics (rabbitmq_prometheus plugin, per-object endpoint) that the dashboard
# and the rules may use.
RABBITMQ_METRICS = {
    "rabbitmq_queue_messages",
    "rabbitmq_queue_messages_ready",
    "rabbitmq_queue_messages_unacked",
    "rabbitmq_queue_consumers",
    "rabbitmq_queue_messages_published_total",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
NAME = re.compile(r"\b((?:nowpilot|rabbitmq)_[a-z0-9_]+)\b")
VARIABLES = {"$__rate_interval": "5m", "${prefix}": "nowpilot", "$prefix": "nowpilot",
             "$__interval": "1m", "$__range": "1h"}


def defined_metrics(root: Path) -> set[str]:
    """`"nowpilot_..."` literals in source files that record or describe metrics (so a cookie
    or header named nowpilot_... elsewhere is not taken for a metric)."""
    names: set[str] = set()
    for path in root.glob("crates/*/src/**/*.rs"):
        text = path.read_text()
        if re.search(r"\b(counter|gauge|histogram|describe_[a-z]+)!\(", text):
            names.update(re.findall(r'"(nowpilot_[a-z0-9_]+)"', text))
    return names


def base_name(name: str, defined: set[str]) -> str:
    if name in defined:
        return name
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in defined:
            return name[: -len(suffix)]
    return name


def check_names(where: str, expr: str, defined: set[str], problems: list[str]) -> None:
    for name in NAME.findall(expr):
        if name.startswith("rabbitmq_"):
            if name not in RABBITMQ_METRICS:
                problems.append(f"{where}: {name} is not a RabbitMQ metric this check knows")
        elif base_name(name, defined) not in defined:
            problems.append(f"{where}: {name} is not defined anywhere in crates/*/src")


def substitute(expr: str) -> str:
    for variable, value in VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def promql_valid(exprs: list[tuple[str, str]], problems: list[str]) -> None:
    """Validates PromQL by wrapping each expression as a recording rule for promtool."""
    rules = [{"record": f"check:expr_{i}", "expr": substitute(expr)}
             for i, (_, expr) in enumerate(exprs)]
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
        path = f.name
    result = subprocess.run(["promtool", "check", "rules", path], capture_output=True, text=True)
    Path(path).unlink()
    if result.returncode != 0:
        problems.append("dashboard: promtool refused a query:\n" + result.stdout + result.stderr)


def check_dashboard(path: Path, defined: set[str], problems: list[str]) -> int:
    try:
        dashboard = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        problems.append(f"{path}: not JSON: {e}")
        return 0
    for key in ("uid", "title", "panels"):
        if key not in dashboard:
            problems.append(f"{path}: no {key!r}")
    panels = dashboard.get("panels", [])
    ids = [p.get("id") for p in panels]
    if len(ids) != len(set(ids)):
        problems.append(f"{path}: duplicate panel ids")
    occupied: dict[tuple[int, int], str] = {}
    exprs: list[tuple[str, str]] = []
    variables = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
    for panel in panels:
        title = panel.get("title", "?")
        grid = panel.get("gridPos", {})
        if grid.get("x", 0) + grid.get("w", 0) > 24:
            problems.append(f"panel {title!r}: wider than the 24-column grid")
        for dx in range(grid.get("w", 0)):
            for dy in range(grid.get("h", 0)):
                cell = (grid["x"] + dx, grid["y"] + dy)
                if cell in occupied:
                    problems.append(f"panel {title!r} overlaps {occupied[cell]!r}")
                    break
                occupied[cell] = title
        if panel.get("type") == "row":
            continue
        targets = panel.get("targets", [])
        if not targets:
            problems.append(f"panel {title!r}: no queries")
        for target in targets:
            expr = target.get("expr", "")
            if not expr:
                problems.append(f"panel {title!r}: a target without expr")
                continue
            check_names(f"panel {title!r}", expr, defined, problems)
            exprs.append((title, expr))
            for used in re.findall(r"\$\{?([A-Za-z_]+)", expr):
                if not used.startswith("__") and used not in variables:
                    problems.append(f"panel {title!r}: uses undefined variable ${used}")
        uid = panel.get("datasource", {}).get("uid", "")
        if uid not in ("${datasource}", "prometheus"):
            problems.append(f"panel {title!r}: data source {uid!r} is neither $datasource nor "
                            "the provisioned uid 'prometheus'")
    if exprs:
        promql_valid(exprs, problems)
    return len(exprs)


def check_rules(path: Path, defined: set[str], problems: list[str]) -> int:
    count = 0
    for group in yaml.safe_load(path.read_text()).get("groups", []):
        for rule in group.get("rules", []):
            count += 1
            check_names(f"rule {rule.get('alert') or rule.get('record')}", rule["expr"], defined,
                        problems)
    return count


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            found.add(slug(line.lstrip("#")))
    return found


def check_links(root: Path, problems: list[str]) -> int:
    """Relative links between docs/, README.md and deploy/ resolve, anchors included; so do the
    alert rules' runbook_url anchors into docs/."""
    checked = 0
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md")),
                 *sorted((root / "deploy").glob("*/README.md"))]:
        in_code = False
        for line in path.read_text().splitlines():
            if line.startswith("```"):
                in_code = not in_code
                continue
            if in_code:
                continue
            for target in re.findall(r"\]\(([^)\s]+)\)", line):
                if re.match(r"^[a-z]+:", target):
                    continue
                file_part, _, anchor = target.partition("#")
                linked = (path.parent / file_part).resolve() if file_part else path
                checked += 1
                if not linked.exists():
                    problems.append(f"{path.relative_to(root)}: link to {target}: no such file")
                elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                    problems.append(f"{path.relative_to(root)}: link to {target}: no such "
                                    "heading")
    rules = yaml.safe_load((root / "deploy/prometheus/nowpilot-rules.yml").read_text())
    prefix = "https://github.com/nowpilot/nowpilot/blob/main/"
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            url = rule.get("annotations", {}).get("runbook_url")
            if rule.get("alert") and not url:
                problems.append(f"alert {rule['alert']}: no runbook_url")
            if not url:
                continue
            if not url.startswith(prefix):
                problems.append(f"alert {rule['alert']}: runbook_url {url} is not in this repo")
                continue
            file_part, _, anchor = url[len(prefix):].partition("#")
            checked += 1
            if not (root / file_part).exists():
                problems.append(f"alert {rule['alert']}: runbook {file_part} does not exist")
            elif anchor not in anchors(root / file_part):
                problems.append(f"alert {rule['alert']}: runbook anchor #{anchor} is not a "
                                f"heading of {file_part}")
            for key in ("summary", "description"):
                if not rule.get("annotations", {}).get(key):
                    problems.append(f"alert {rule['alert']}: no {key} annotation")
    return checked


def check_docs(path: Path, defined: set[str], problems: list[str]) -> None:
    documented = set(re.findall(r"^\| `(nowpilot_[a-z0-9_]+)`", path.read_text(), re.M))
    for name in sorted(defined - documented):
        problems.append(f"{path}: {name} is not documented")
    for name in sorted(documented - defined):
        problems.append(f"{path}: documents {name}, which no code defines")


def check_scrapes(paths: list[Path], defined: set[str], documented_in: Path,
                  problems: list[str]) -> None:
    documented = set(re.findall(r"^\| `(nowpilot_[a-z0-9_]+)`", documented_in.read_text(), re.M))
    for path in paths:
        types = dict(re.findall(r"^# TYPE (\S+) (\S+)", path.read_text(), re.M))
        for name, kind in types.items():
            if name not in defined:
                problems.append(f"{path.name}: {name} ({kind}) is not a literal in crates/*/src")
            if name.startswith("nowpilot_") and name not in documented:
                problems.append(f"{path.name}: {name} is not in docs/metrics.md")
            if name.endswith("_seconds") and kind not in ("histogram", "gauge"):
                problems.append(f"{path.name}: {name} is a {kind}; a _seconds metric should be a "
                                "histogram with buckets (set them in crates/cli/src/telemetry.rs)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--scrape", action="append", default=[])
    args = parser.parse_args()
    root = Path(args.root)
    defined = defined_metrics(root)
    if not defined:
        print("FAIL: found no metric names in crates/*/src", file=sys.stderr)
        return 1
    problems: list[str] = []
    queries = check_dashboard(root / "deploy/grafana/nowpilot.json", defined, problems)
    rules = check_rules(root / "deploy/prometheus/nowpilot-rules.yml", defined, problems)
    check_docs(root / "docs/metrics.md", defined, problems)
    check_scrapes([Path(p) for p in args.scrape], defined, root / "docs/metrics.md", problems)
    links = check_links(root, problems)
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    print(f"  {len(defined)} metrics defined in code; dashboard: {queries} queries; rules: "
          f"{rules}; docs/metrics.md; {len(args.scrape)} scrape(s); {links} doc links and "
          f"runbooks: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
