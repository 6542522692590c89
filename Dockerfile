# syntax=docker/dockerfile:1
# The arbiter binary on distroless: docker build -t arbiter . (or docker compose up).
# A release build: without the arbiter_faults tag, it carries no fault-injection
# hooks (no ARBITER_TEST_* variables) and no chaos subcommand.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /arbiter ./cmd/arbiter

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /arbiter /arbiter
USER nonroot:nonroot
ENTRYPOINT ["/arbiter"]
