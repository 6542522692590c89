#!/usr/bin/env bash
# bench.sh — `make bench`: the measurement behind BENCHMARKS.md. It starts a
# stack of its own (scripts/stack.sh, state in .stack/bench, ports apart from
# the test stack's), builds bin/arbiter, runs `arbiter bench` with the
# targets' settings of issue 6 — 12 partitions, 10,000 aggregates, 10% stale
# commands, exactly-once on, the per-command baseline in the same run and an
# offered-load sweep — and stops the stack however the run ends.
#
# Writes docs/bench/latest.txt (the table), docs/bench/latest.json and
# docs/bench/throughput-latency.png. Extra arguments go to `arbiter bench`
# and override the defaults below (the last of a repeated flag wins).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export ARBITER_STACK_DIR="${ARBITER_STACK_DIR:-$PWD/.stack/bench}"
export ARBITER_STACK_KAFKA_PORT="${ARBITER_STACK_KAFKA_PORT:-19292}"
export ARBITER_STACK_REDIS_PORT="${ARBITER_STACK_REDIS_PORT:-16579}"

trap 'scripts/stack.sh down || echo "bench: scripts/stack.sh down failed" >&2' EXIT
scripts/stack.sh up
# shellcheck source=/dev/null
source "$ARBITER_STACK_DIR/env"

mkdir -p bin docs/bench
CGO_ENABLED=0 go build -trimpath -o bin/arbiter ./cmd/arbiter
echo "bench: load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
bin/arbiter bench \
  --brokers "$ARBITER_TEST_KAFKA_BROKERS" \
  --redis "$ARBITER_TEST_REDIS_URL" \
  --broker-pid "$ARBITER_TEST_KAFKA_PID" \
  -n 300000 --aggregates 10000 --stale 0.1 --partitions 12 \
  --worker-processes 1 --concurrency 3 --batch 2000 \
  --warmup-n 200000 \
  --baseline --baseline-n 3000 \
  --sweep 0.25,0.5,0.75,1,1.25 --sweep-duration 10s \
  --plot docs/bench/throughput-latency.png \
  --json-out docs/bench/latest.json \
  "$@" | tee docs/bench/latest.txt
