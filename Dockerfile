# syntax=docker/dockerfile:1
# The tenant-registry image: the server and the migrate binary on a minimal Debian, run as a
# non-root user, fit for a read-only root filesystem. The defaults build from public images;
# `cargo xtask image` passes locally made ones instead (docs/deployment.md).

# Kept equal to rust-toolchain.toml's channel (`cargo xtask deploy-check` compares them).
ARG RUST_VERSION=1.95.0
ARG BUILDER_IMAGE=docker.io/library/rust:${RUST_VERSION}-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${BUILDER_IMAGE} AS build
ARG RUST_VERSION
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY . .
# A builder image whose toolchain is not the pinned one fails here, not in a subtle way later.
# The caches keep crates and incremental artefacts between builds on one machine; the
# binaries are copied out of them because a cache mount is not part of the layer.
RUN --mount=type=cache,target=/cargo-home/registry \
    --mount=type=cache,target=/src/target \
    test "$(rustc --version | cut -d' ' -f2)" = "$RUST_VERSION" \
    && CARGO_HOME=/cargo-home cargo build --release --locked \
        --bin tenant-registry --bin tenant-registry-migrate \
    && install -D -m 0755 -t /out target/release/tenant-registry target/release/tenant-registry-migrate

FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="tenant-registry" \
      org.opencontainers.image.description="Multi-tenant control plane: tenants, entitlements, API keys, SSO configuration, audit log" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
# ca-certificates: the binaries carry their own root certificates, but pg_dump (libpq) reads
# the system's, e.g. sslrootcert=/etc/ssl/certs/ca-certificates.crt. postgresql-client-15:
# tenant backups run pg_dump, whose version must match the PostgreSQL 15 server's.
# Versions are not pinned: the base image's release fixes them, and a pinned point release
# would stop installing once Debian publishes the next one.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates postgresql-client-15 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 tenant-registry \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin tenant-registry
COPY --from=build /out/ /usr/local/bin/
# Numeric, so that Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 10001:10001
# Relative paths (dev's generated key file) land on /tmp, the one writable place in a pod.
WORKDIR /tmp
EXPOSE 8090 8091
# The migrate binary is the init container's command: tenant-registry-migrate up.
CMD ["tenant-registry"]
