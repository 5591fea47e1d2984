# syntax=docker/dockerfile:1
# Vexil images, from one build of the workspace:
#   docker build --target control -t vexil/vexil-control:0.1.0 .
#   docker build --target proxy   -t vexil/vexil-proxy:0.1.0 .
# Both run as non-root users on debian-slim: vexil-control as 10001 (the uid of k8s/base), the
# vexil-proxy sidecar as 65532 (the uid the injection webhook gives it).

ARG RUST_VERSION=1.95
ARG DEBIAN=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p vexil-control -p vexil-proxy \
    && install -D -m 0755 target/release/vexil-control /out/vexil-control \
    && install -D -m 0755 target/release/vexil-proxy /out/vexil-proxy

FROM debian:${DEBIAN}-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

FROM runtime AS control
RUN groupadd --system --gid 10001 vexil \
    && useradd --system --uid 10001 --gid vexil --home-dir /var/lib/vexil --create-home vexil \
    && install -d -o vexil -g vexil -m 0755 /var/lib/vexil/tls
COPY --from=build /out/vexil-control /usr/local/bin/vexil-control
COPY config/control.toml /etc/vexil/control.toml
COPY config/flags /etc/vexil/flags
USER 10001:10001
# The default SQLite store and development TLS (tls/, owned by vexil so that a fresh volume mounted
# there is too) land here.
WORKDIR /var/lib/vexil
EXPOSE 8080/tcp 7443/udp 9443/tcp
ENTRYPOINT ["vexil-control"]
CMD ["serve", "--admin-addr", "0.0.0.0:8080", "--sync-addr", "0.0.0.0:7443", "--webhook-addr", "off"]

FROM runtime AS proxy
RUN groupadd --system --gid 65532 vexil \
    && useradd --system --uid 65532 --gid vexil --home-dir /var/lib/vexil --create-home vexil
COPY --from=build /out/vexil-proxy /usr/local/bin/vexil-proxy
USER 65532:65532
WORKDIR /var/lib/vexil
EXPOSE 15101/tcp 8013/tcp 8014/tcp 8016/tcp
ENTRYPOINT ["vexil-proxy"]
