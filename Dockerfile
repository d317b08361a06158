# Gearwork in a container: a static binary on an empty base, run as a
# non-root user, its data on a volume.
#
# scripts/check-deploy.sh (part of make test) builds this image, runs it
# and waits for its HEALTHCHECK to pass; where docker.io cannot be reached
# it builds on a stand-in Go image (GO_IMAGE below). See docs/operations.md.
#
#   docker build -t gearwork .        (or: podman build -t gearwork .)
#   docker run -d --name gearwork -p 127.0.0.1:4730:4730 -p 127.0.0.1:4780:4780 \
#       -v gearwork-data:/data gearwork
#
# Exposure and authentication: inside the container the server must listen
# on all interfaces (0.0.0.0) to be reachable through the published ports,
# and Gearwork refuses to listen on a non-loopback address without
# authentication. This image therefore needs one of, given as flags after
# the image name or as GEARWORK_* environment variables:
#   - client certificates on both ports (mutual TLS):
#       -e GEARWORK_TLS_CERT=/etc/gearwork/server.pem -e GEARWORK_TLS_KEY=/etc/gearwork/server.key
#       -e GEARWORK_TLS_CLIENT_CA=/etc/gearwork/clients-ca.pem -v /etc/gearwork:/etc/gearwork:ro
#   - authorization rules for the Gearman port (an auth: section in
#     GEARWORK_CONFIG) and bearer tokens for the HTTP API (GEARWORK_HTTP_TOKENS);
#   - or, when the published ports are reachable only from this host (as
#     with -p 127.0.0.1:... above) and every local user is trusted,
#     -e GEARWORK_INSECURE=true. Without one of these the container exits
#     at once with a message saying so. See docs/security.md.

# Build stage: a static binary (no cgo), version and commit from the build
# information Go embeds ("gearwork --version"). GO_IMAGE is the official Go
# image; any image with Go on its PATH and /bin/sh can stand in for it
# (--build-arg GO_IMAGE=...), as scripts/check-deploy.sh does where
# docker.io cannot be reached.
ARG GO_IMAGE=docker.io/library/golang:1.26-bookworm
FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/gearwork ./cmd/gearwork \
 && mkdir -p /out/data

# Run stage: nothing but the binary (time zones for schedules are compiled
# in); no shell, no package manager, no CA bundle: a PostgreSQL store with
# sslmode=verify-full needs one mounted (sslrootcert=...).
FROM scratch
COPY --from=build /out/gearwork /usr/local/bin/gearwork
COPY --from=build --chown=65532:65532 /out/data /data
# A fixed unprivileged user and group ("nonroot"); the volume is its own.
USER 65532:65532
VOLUME ["/data"]
ENV GEARWORK_STORE=pebble:/data \
    GEARWORK_LISTEN=0.0.0.0:4730 \
    GEARWORK_HTTP=0.0.0.0:4780 \
    GEARWORK_LOG_FORMAT=json
EXPOSE 4730 4780
# Ready while the broker accepts and hands out jobs (503 while draining or
# after a store failure). The image has no curl: the binary checks itself.
# With TLS on the HTTP port, change the URL to https://; with client
# certificates required there, use your orchestrator's own check instead.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/gearwork", "health", "--url", "http://127.0.0.1:4780/readyz"]
# docker stop sends SIGTERM: the HTTP port closes, then the Gearman port,
# and the store is flushed. STOPSIGNAL SIGUSR1 would make it graceful
# (running jobs may finish for --shutdown-timeout); raise docker stop's
# --time above that timeout if you choose it.
ENTRYPOINT ["/usr/local/bin/gearwork", "serve"]
