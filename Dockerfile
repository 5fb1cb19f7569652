# The same recipe `make image` follows without Docker: a static binary on scratch with a CA
# bundle, running as a non-root user, no shell in the final stage.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target x86_64-unknown-linux-gnu \
 && install -D target/x86_64-unknown-linux-gnu/release/wharf /out/wharf \
 && install -d -m 1777 /out/tmp && install -d -o 65532 -g 65532 /out/data

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/ /
USER 65532:65532
ENTRYPOINT ["/wharf"]
