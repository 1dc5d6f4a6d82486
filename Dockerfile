# syntax=docker/dockerfile:1
# parley in a small image: a static (musl) binary and nothing else, run as a non-root user,
# its data in a volume. Build: docker build -t parley .
# Run:   docker run -p 8080:8080 -v parley-data:/data parley
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin parley \
    && install -D target/x86_64-unknown-linux-musl/release/parley /out/parley \
    && install -d -m 0700 -o 10001 -g 10001 /out/data

FROM scratch
COPY --from=build /out/parley /parley
COPY --from=build --chown=10001:10001 /out/data /data
USER 10001:10001
ENV PARLEY_LISTEN=0.0.0.0:8080 PARLEY_DATA=/data
VOLUME /data
EXPOSE 8080
# The image has no shell or curl: the binary asks its own /readyz.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/parley", "probe"]
ENTRYPOINT ["/parley"]
CMD ["serve"]
