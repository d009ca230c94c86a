# The consortium's programs as one image (flcoord, flnode, flctl, flaudit);
# docker-compose.yml runs the coordinator and each hospital from it.
# See docs/deployment.md.
#
#   docker build -t flc .
#
# Stage 1 builds with the -dev packages; stage 2 carries only the runtime
# libraries, the four binaries, the deploy/ scripts and templates, and the
# bundled public data set (for the key-setup service's shards).

FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      gcc libc6-dev make cmake pkg-config \
      libzmq3-dev libsodium-dev libssl-dev libprotobuf-c-dev protobuf-c-compiler \
      libopenblas-dev libinih-dev libsqlite3-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DFL_BUILD_TESTS=OFF -DFL_BUILD_BENCH=OFF \
 && cmake --build /build -j "$(nproc)" --target flcoord flnode flctl flaudit \
 && install -d /out/bin \
 && install -m 0755 /build/coordinator/flcoord /build/node/flnode \
      /build/ctl/flctl /build/audit/flaudit /out/bin/ \
 && strip --strip-unneeded /out/bin/*

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libzmq5 libsodium23 libssl3 libprotobuf-c1 libopenblas0 libinih1 libsqlite3-0 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 flc \
 && useradd --system --uid 10001 --gid flc --home-dir /var/lib/flc --shell /usr/sbin/nologin flc \
 && install -d -o flc -g flc -m 0700 /var/lib/flc /var/lib/flc/keys /var/lib/flc/data \
      /var/lib/flc/state /var/lib/flc/ledger
COPY --from=build /out/bin/ /usr/local/bin/
COPY deploy/ /opt/flc/deploy/
COPY data/wdbc/ /opt/flc/share/wdbc/
# One BLAS thread per daemon: the models are small and the host is shared.
ENV OPENBLAS_NUM_THREADS=1 \
    FLC_HOME=/var/lib/flc \
    FLC_CONFIG_DIR=/tmp/flc
USER flc
WORKDIR /var/lib/flc
EXPOSE 7451
ENTRYPOINT ["/opt/flc/deploy/entrypoint.sh"]
CMD ["--help"]
