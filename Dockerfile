# syntax=docker/dockerfile:1
# flashsale: one static binary (node, cluster, broker, bench, reconcile).

FROM golang:1.26-alpine AS build
WORKDIR /src
# Modules first, so a code change does not re-download them.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w" -o /out/flashsale ./cmd/flashsale

# Alpine rather than distroless: the compose health checks use busybox wget.
FROM alpine:3.22
RUN addgroup -S -g 10001 flashsale \
 && adduser -S -D -H -u 10001 -G flashsale flashsale \
 && mkdir -p /var/lib/flashsale/stat \
 && chown -R 10001:10001 /var/lib/flashsale
COPY --from=build /out/flashsale /usr/local/bin/flashsale
# Non-root. The stat.log directory is owned by this user, so a named volume
# mounted there starts writable.
USER 10001:10001
WORKDIR /var/lib/flashsale
ENV FLASHSALE_HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/flashsale"]
CMD ["node"]
