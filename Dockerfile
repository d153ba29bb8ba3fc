# One image per Meshop binary, built from the repository root (the Go
# workspace needs every module of go.work in the context):
#
#   docker build --build-arg SERVICE=order -t meshop/order:dev .
#   docker build --build-arg SERVICE=controlplane --build-arg PKG=./controlplane/cmd/controlplane -t meshop/controlplane:dev .
#
# The binaries are static (CGO_ENABLED=0; the SQLite driver is pure Go), so
# the final image is scratch: the binary, launch (resolves ADVERTISE_ADDR,
# then execs it), probe (the health check), CA certificates, an empty /tmp,
# and a non-root user. docker-compose.yml builds it for each service.
# BuildKit (Docker's default builder) is needed for the cache mounts; no
# "# syntax=" line, so no unpinned frontend image is pulled.

ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-alpine AS build
ARG SERVICE
ARG PKG=./services/${SERVICE}/cmd/${SERVICE}
ENV CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    test -n "${SERVICE}" || { echo "build with --build-arg SERVICE=<name>" >&2; exit 1; }; \
    go build -trimpath -ldflags="-s -w" -o /rootfs/usr/local/bin/app "${PKG}" \
 && go build -trimpath -ldflags="-s -w" -o /rootfs/usr/local/bin/ ./deploy/cmd/launch ./deploy/cmd/probe \
 && mkdir -p /rootfs/tmp /rootfs/etc/ssl/certs \
 && chmod 1777 /rootfs/tmp \
 && cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/

FROM scratch
ARG SERVICE
LABEL org.opencontainers.image.title="meshop-${SERVICE}" \
      org.opencontainers.image.source="https://github.com/meshop/meshop"
COPY --from=build /rootfs/ /
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/launch", "/usr/local/bin/app"]
