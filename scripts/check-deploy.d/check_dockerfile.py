#!/usr/bin/env python3
"""nowpilot's rules for its Dockerfile (dockerfile-utils checks the syntax; there is no Docker
engine here to build it, so the rules that matter are checked by reading):

- the build compiles `nowpilot` with `--release --locked` after a dependency-only layer
  (cargo-chef's `cook`), from an official Rust image with a version tag;
- the runtime stage is a slim or distroless image of the same Debian release as the build (the
  binary links the build's glibc), copies only the binary from the build, runs as a numeric
  non-root user, has a HEALTHCHECK that probes /healthz, and enters through nowpilot;
- .dockerignore keeps target/ and .git/ out of the build context, and keeps the workspace
  members (crates/, tests/) and Cargo.lock in it.

Usage: check_dockerfile.py REPO
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    result = []
    for line in joined.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        word, _, rest = stripped.partition(" ")
        result.append((word.upper(), rest.strip()))
    return result


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    problems: list[str] = []
    steps = instructions((root / "Dockerfile").read_text())
    args = {}
    stages: list[dict] = []
    for word, rest in steps:
        if word == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif word == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)),
                           rest.split()[0])
            name = rest.split()[-1] if " AS " in rest.upper() else ""
            stages.append({"image": image, "name": name, "steps": []})
        elif stages:
            stages[-1]["steps"].append((word, rest))
    if len(stages) < 2:
        problems.append("expected a multi-stage build (build and runtime stages)")
        return report(problems)
    names = {s["name"] for s in stages}
    build_text = " ".join(r for s in stages[:-1] for _, r in s["steps"])
    if "cargo build --release --locked --bin nowpilot" not in build_text:
        problems.append("the build must run `cargo build --release --locked --bin nowpilot`")
    if not re.search(r"cargo chef cook --release --locked .*--bin nowpilot", build_text):
        problems.append("no dependency-caching layer (`cargo chef cook --release --locked ... "
                        "--bin nowpilot`) before the build")
    if not re.search(r"cargo install cargo-chef --locked --version \S+", build_text):
        problems.append("cargo-chef must be installed --locked at a pinned --version")
    first = stages[0]["image"]
    if not re.match(r"rust:\d+\.\d+(\.\d+)?-(bookworm|trixie|slim-bookworm|slim-trixie)$", first):
        problems.append(f"the build starts from {first}: use the official rust image with a "
                        "version and Debian release tag")
    for stage in stages:
        base = stage["image"].split(":")[0]
        if base not in names and ":" not in stage["image"]:
            problems.append(f"FROM {stage['image']} has no tag")
    runtime = stages[-1]
    release = first.rsplit("-", 1)[-1]
    if not (runtime["image"] in (f"debian:{release}-slim",)
            or runtime["image"].startswith("gcr.io/distroless/cc-debian")):
        problems.append(f"the runtime stage {runtime['image']} is not debian:{release}-slim "
                        "(the build's Debian release) or distroless")
    copies = [r for w, r in runtime["steps"] if w == "COPY"]
    if not copies or any("--from=" not in c for c in copies):
        problems.append("the runtime stage must copy only from the build stage")
    if not any(c.rstrip().endswith("/usr/local/bin/nowpilot") for c in copies):
        problems.append("the runtime stage must install the binary as /usr/local/bin/nowpilot")
    users = [r for w, r in runtime["steps"] if w == "USER"]
    if not users or not re.match(r"^[1-9]\d*(:[1-9]\d*)?$", users[-1]):
        problems.append("the runtime must end as a numeric non-root USER (uid:gid)")
    health = [r for w, r in runtime["steps"] if w == "HEALTHCHECK"]
    if not health or "/healthz" not in health[-1]:
        problems.append("the runtime needs a HEALTHCHECK that probes /healthz")
    entry = [r for w, r in runtime["steps"] if w == "ENTRYPOINT"]
    if not entry or "nowpilot" not in entry[-1]:
        problems.append("ENTRYPOINT must be the nowpilot binary")

    ignore = [line.strip() for line in (root / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    for needed in ("target", ".git"):
        if needed not in ignore:
            problems.append(f".dockerignore must exclude {needed}")
    for kept in ("crates", "tests", "Cargo.lock", "Cargo.toml"):
        if kept in ignore:
            problems.append(f".dockerignore must not exclude {kept} (the build needs it)")
    return report(problems, len(stages))


def report(problems: list[str], stages: int = 0) -> int:
    for problem in problems:
        print(f"FAIL: Dockerfile: {problem}", file=sys.stderr)
    print(f"  Dockerfile: {stages} stages: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
