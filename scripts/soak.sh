#!/usr/bin/env bash
# soak.sh — a long chaos run (`make soak`): starts the stack, runs
# `arbiter chaos` for ARBITER_SOAK_DURATION (default 30m) at
# ARBITER_SOAK_RATE commands/s (default 300) with every fault kind, checks
# the history, and stops the stack. Exits non-zero on any anomaly.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

trap 'scripts/stack.sh down || true' EXIT
scripts/stack.sh up
# shellcheck source=/dev/null
source .stack/env
go build -tags arbiter_faults -o .stack/bin/arbiter ./cmd/arbiter
seed="${ARBITER_CHAOS_SEED:-$(date +%s)}"
.stack/bin/arbiter chaos --brokers "$ARBITER_TEST_KAFKA_BROKERS" \
  --duration "${ARBITER_SOAK_DURATION:-30m}" --rate "${ARBITER_SOAK_RATE:-300}" \
  --aggregates "${ARBITER_SOAK_AGGREGATES:-2000}" --seed "$seed" \
  --kafka-restart-cmd "scripts/stack.sh restart-kafka" --dir ".stack/soak-$seed"
