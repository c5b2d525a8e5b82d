# Build the single `porter` binary, then ship it on a slim Debian image.
FROM rust:1-bookworm AS builder
WORKDIR /app
# Only what the build reads: never `COPY . .`, which would put a local `.env` (the compose
# file's credentials) into a build layer.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
RUN cargo build --release --locked -p porter

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home porter
COPY --from=builder /app/target/release/porter /usr/local/bin/porter
USER porter
EXPOSE 8080
ENTRYPOINT ["porter"]
CMD ["gateway", "--listen", "0.0.0.0:8080"]
