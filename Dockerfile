# Fluxbase container image.
#
# No Docker engine runs on the development machines, so CI does not build or exercise
# this file; keep it simple and check it by reading.
#
#   docker build -t fluxbase .
#   docker run -p 8080:8080 -v fluxbase-data:/data fluxbase
#
# With no FLUXBASE_DATABASE__URL, Fluxbase runs a managed Postgres in /data/pg using
# the PostgreSQL 15 binaries installed below (found through PG_BIN).

# --- Stage 1: build --------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin fluxbase

# --- Stage 2: runtime ------------------------------------------------------------
FROM debian:bookworm-slim

# postgresql-15 provides the binaries for the managed Postgres. Installing postgresql-common
# first and disabling its default "main" cluster keeps the image free of an unused cluster.
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates postgresql-common; \
    sed -ri 's/#(create_main_cluster) .*$/\1 = false/' /etc/postgresql-common/createcluster.conf; \
    apt-get install -y --no-install-recommends postgresql-15; \
    rm -rf /var/lib/apt/lists/*

COPY --from=build /src/target/release/fluxbase /usr/local/bin/fluxbase

# Run as an unprivileged user; it owns the data directory, so the managed Postgres runs as it too.
RUN useradd --system --create-home --user-group fluxbase \
    && mkdir -p /data \
    && chown fluxbase:fluxbase /data

ENV FLUXBASE_SERVER__HOST=0.0.0.0 \
    FLUXBASE_SERVER__DATA_DIR=/data \
    PG_BIN=/usr/lib/postgresql/15/bin

USER fluxbase
WORKDIR /data
EXPOSE 8080
ENTRYPOINT ["fluxbase"]
CMD ["serve"]
