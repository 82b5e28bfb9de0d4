# Build stage: compile the release binary.
FROM rust:1.95-slim-bookworm AS build
# make: jemalloc, the server's allocator, is built from C source.
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
# Built into the binary: the API description it serves.
COPY docs/openapi.json ./docs/openapi.json
COPY tests ./tests
RUN cargo build --release --locked --bin hoop

# Runtime stage: the binary and its config, running as an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data hoop \
    && mkdir -p /data /etc/hoop && chown hoop /data
COPY --from=build /src/target/release/hoop /usr/local/bin/hoop
COPY deploy/hoop.toml /etc/hoop/hoop.toml
USER hoop
WORKDIR /data
ENV HOOP_CONFIG=/etc/hoop/hoop.toml
EXPOSE 8080
# `serve` runs migrations at start and shuts down gracefully on SIGTERM.
ENTRYPOINT ["hoop"]
CMD ["serve"]
