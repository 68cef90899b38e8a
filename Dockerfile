# syntax=docker/dockerfile:1
# Build: docker build -t remodel .
# Run:   docker run --rm -v $PWD/remodel.toml:/etc/remodel/remodel.toml:ro \
#          -e REMODEL__SOURCE__URL=... -e REMODEL__TARGET__URL=... -p 9898:9898 remodel

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY rust-toolchain.toml Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# The demo compiles in config/examples/guarantors.toml.
COPY config ./config
RUN cargo build --release --locked --bin remodel \
 && strip target/release/remodel

FROM debian:bookworm-slim
# Security updates come with the base image; pinning Debian package versions would break the
# build at each point release, so they are not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin remodel \
 && mkdir -p /etc/remodel /run/remodel && chown remodel /run/remodel
COPY --from=build /src/target/release/remodel /usr/local/bin/remodel
COPY config/examples/identity.toml /etc/remodel/remodel.toml
# Numeric, so Kubernetes' runAsNonRoot can check it.
USER 10001:10001
# In a container the metrics endpoint must listen beyond loopback.
ENV REMODEL__METRICS__LISTEN=0.0.0.0:9898 \
    REMODEL__CONTROL__PIDFILE=/run/remodel/remodel.pid
EXPOSE 9898
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["curl", "-fsS", "http://127.0.0.1:9898/healthz"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/remodel"]
CMD ["run", "--config", "/etc/remodel/remodel.toml"]
