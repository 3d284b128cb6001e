# syntax=docker/dockerfile:1
FROM golang:1.26-trixie AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/upgrade-server ./cmd/upgrade-server

FROM debian:trixie-slim
# PostgreSQL 17 client tools (pg_dump, pg_restore, psql: the newest Debian
# offers, so the pipeline reads dumps made by PostgreSQL 17 and older and
# dumps servers up to 17), the 17 server binaries for the embedded default,
# rsync (3.5 or newer, from trixie-security) for Odoo's upgrade script's
# transfers, curl for the health check.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl postgresql-17 postgresql-client-17 rsync \
 && rm -rf /var/lib/apt/lists/* \
 && { rsync --help | grep -q -- --confine-root \
      || { echo "rsync 3.5 or newer is needed (trixie-security); this image has $(rsync --version | head -1)" >&2; exit 1; }; } \
 && useradd --system --create-home --home-dir /var/lib/upgrade-server upgrade
ENV PATH=/usr/lib/postgresql/17/bin:$PATH
COPY --from=build /out/upgrade-server /usr/local/bin/upgrade-server
USER upgrade
WORKDIR /var/lib/upgrade-server
ENV UPGRADE_HTTP_ADDR=:8080 \
    UPGRADE_DATA_DIR=/var/lib/upgrade-server/data
EXPOSE 8080 8443 2200
VOLUME ["/var/lib/upgrade-server/data"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD curl -fsS http://localhost:8080/readyz || exit 1
ENTRYPOINT ["/usr/local/bin/upgrade-server"]
