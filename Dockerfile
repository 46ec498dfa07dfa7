# syntax=docker/dockerfile:1
#
# The nowpilot image: one binary, every role. Pick the role with the command:
#   docker run IMAGE ingress | worker | run | sim ... | connect ... | dlq list | plans check
# Configuration: /etc/nowpilot/nowpilot.toml (the working directory, so the default path finds
# it), or NOWPILOT_<SECTION>__<KEY> environment variables. docs/operations.md, "Running the
# image", explains ports, probes and volumes.
#
# Build:  docker build -t nowpilot .
# The first build compiles every dependency once (the `cook` layer); later builds reuse that
# layer until Cargo.lock or a Cargo.toml changes, and recompile only nowpilot's own crates.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# --- Tools: cargo-chef turns the workspace's manifests into a dependency-only "recipe". ------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

# --- The recipe: changes only when a manifest or Cargo.lock changes. --------------------------
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# --- Build: dependencies first (cached layer), then nowpilot itself. -------------------------
FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin nowpilot
COPY . .
RUN cargo build --release --locked --bin nowpilot \
    && install -D -m 0755 target/release/nowpilot /out/nowpilot

# --- Runtime: Debian slim with CA certificates (ServiceNow is HTTPS; the client trusts the
# system store), a non-root user, and the binary. Same Debian release as the build stage, so
# the glibc the binary was linked against is the one it runs on.
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 nowpilot \
    && useradd --system --uid 10001 --gid nowpilot --home-dir /etc/nowpilot \
        --shell /usr/sbin/nologin nowpilot \
    && install -d -o nowpilot -g nowpilot -m 0750 /etc/nowpilot
COPY --from=builder /out/nowpilot /usr/local/bin/nowpilot

# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /etc/nowpilot
# 8080: the ingress (webhook, /healthz, /readyz, /metrics). 9091: a worker's or `run`'s admin
# address (/healthz, /readyz, /metrics, status page, admin API) — set
# NOWPILOT_WORKER__ADMIN_LISTEN=0.0.0.0:9091 to reach it from outside the container.
EXPOSE 8080 9091
ENV NOWPILOT_HEALTH_PORT=8080

# The image has no curl: bash's /dev/tcp sends one HTTP/1.0 request to /healthz on
# 127.0.0.1:$NOWPILOT_HEALTH_PORT and wants a 200 status line. Set NOWPILOT_HEALTH_PORT=9091
# for a worker. (Kubernetes ignores HEALTHCHECK and uses the HTTP probes in deploy/kubernetes.)
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${NOWPILOT_HEALTH_PORT} && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]

# SIGTERM starts nowpilot's graceful shutdown (ingress drains, workers requeue waiting events).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/nowpilot"]
CMD ["--help"]
