# syntax=docker/dockerfile:1
# The stompede binary (reference server and load harness) in a slim runtime image.
# Used by docker-compose.yml for server-1 and server-2:
#
#   docker build -t stompede:local .
#   docker run --rm stompede:local --help

FROM rust:1-bookworm AS builder
# librdkafka is compiled from source by rdkafka-sys (configure + make, C/C++ toolchain);
# libz-sys links the system zlib found through pkg-config. cmake covers the cmake-build
# feature of rdkafka-sys should it be switched on.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake make g++ pkg-config zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the registry and build artefacts between builds; the binary is copied
# out of the cached target dir in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin stompede \
    && install -m 0755 target/release/stompede /usr/local/bin/stompede

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 stompede \
    && useradd --system --uid 10001 --gid stompede --home-dir /var/lib/stompede \
       --create-home --shell /usr/sbin/nologin stompede
COPY --from=builder /usr/local/bin/stompede /usr/local/bin/stompede
USER stompede
WORKDIR /var/lib/stompede
# STOMP over WebSocket, and the metrics endpoint.
EXPOSE 8080 9090
ENTRYPOINT ["stompede"]
CMD ["--help"]
