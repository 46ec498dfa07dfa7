#!/usr/bin/env python3
"""docs/configuration.md documents every configuration key the code accepts, and no key the
code does not have.

The keys come from the `pub` fields of the Rust structs that deserialize each section (every
one is `deny_unknown_fields`, so a field is exactly a key). A `*_file` companion may share a row
with its key (`password` / `password_file`). Run from check-deploy; exit 1 with every gap.

Usage: check_config_docs.py REPO
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# Section heading in configuration.md -> (source file, struct).
SECTIONS = {
    "servicenow": ("crates/servicenow/src/config/mod.rs", "ServiceNowConfig"),
    "queue": ("crates/queue/src/config.rs", "QueueConfig"),
    "ingress": ("crates/ingress/src/config.rs", "IngressConfig"),
    "ingress.body_signature": ("crates/ingress/src/config.rs", "BodySignatureConfig"),
    "worker": ("crates/worker/src/config.rs", "WorkerConfig"),
    "admin": ("crates/cli/src/config.rs", "AdminConfig"),
    "telemetry": ("crates/cli/src/telemetry.rs", "TelemetryConfig"),
}


def struct_fields(path: Path, name: str) -> set[str]:
    text = path.read_text()
    match = re.search(rf"pub struct {name} \{{(.*?)\n\}}", text, re.S)
    if not match:
        raise SystemExit(f"FAIL: no `pub struct {name}` in {path}")
    fields = set()
    skip_next = False
    for line in match.group(1).splitlines():
        stripped = line.strip()
        if stripped.startswith("#[serde(") and re.search(r"\bskip\b(?!_)|skip_deserializing",
                                                         stripped):
            skip_next = True
            continue
        field = re.match(r"pub (\w+):", stripped)
        if field:
            if not skip_next:
                fields.add(field.group(1))
            skip_next = False
    return fields


def documented(doc: str, section: str) -> set[str]:
    """Backticked keys in the first column of the tables under `section`'s heading (`##` for a
    section, `###` for a nested one such as `[ingress.body_signature]`)."""
    level = "###" if "." in section else "##"
    heading = re.search(rf"^{level} `\[{re.escape(section)}\]`.*?$(.*?)(?=^##|\Z)", doc,
                        re.S | re.M)
    if not heading:
        return set()
    keys = set()
    for row in re.findall(r"^\| ([^|]+) \|", heading.group(1), re.M):
        keys.update(re.findall(r"`([a-z_]+)`", row))
    return keys


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    doc = (root / "docs/configuration.md").read_text()
    problems = []
    total = 0
    for section, (source, struct) in SECTIONS.items():
        fields = struct_fields(root / source, struct)
        total += len(fields)
        keys = documented(doc, section)
        if not keys:
            problems.append(f"docs/configuration.md has no `[{section}]` section")
            continue
        for field in sorted(fields - keys):
            problems.append(f"[{section}] {field} (from {struct} in {source}) is not documented")
        for key in sorted(keys - fields):
            problems.append(f"[{section}] documents {key}, which {struct} does not have")
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    print(f"  {total} configuration keys in {len(SECTIONS)} sections: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
