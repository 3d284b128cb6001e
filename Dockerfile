# syntax=docker/dockerfile:1
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/upgrade-server ./cmd/upgrade-server

FROM debian:bookworm-slim
# PostgreSQL client tools (pg_dump, pg_restore, psql) for the pipeline, the
# server binaries for the embedded default, curl for the health check.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl postgresql postgresql-client \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --home-dir /var/lib/upgrade-server upgrade
COPY --from=build /out/upgrade-server /usr/local/bin/upgrade-server
USER upgrade
WORKDIR /var/lib/upgrade-server
ENV UPGRADE_HTTP_ADDR=:8080 \
    UPGRADE_DATA_DIR=/var/lib/upgrade-server/data
EXPOSE 8080 2200
VOLUME ["/var/lib/upgrade-server/data"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD curl -fsS http://localhost:8080/readyz || exit 1
ENTRYPOINT ["/usr/local/bin/upgrade-server"]
