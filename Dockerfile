# The one c19 binary, which runs both the operator and the agent sidecar.
# No Docker engine exists on the project's build machines: the build step below is the same
# `cargo build --release --locked` that CI runs (scripts/test builds and tests the same sources).

# Pinned builder: Rust 1.95 on Debian bookworm.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Tests, benches, examples and the test harness (a workspace member) are not part of the image,
# but Cargo.toml names them.
COPY tests ./tests
COPY harness ./harness
COPY benches ./benches
COPY crds ./crds
RUN cargo build --release --locked --bin c19 \
 && cp target/release/c19 /c19

# Minimal runtime: distroless with glibc, no shell, non-root (uid 65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /c19 /usr/local/bin/c19
USER 65532:65532
EXPOSE 3097 4097 8080
ENTRYPOINT ["/usr/local/bin/c19"]
CMD ["--config", "/etc/c19/config.yaml"]
