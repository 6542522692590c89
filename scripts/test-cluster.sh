#!/usr/bin/env bash
# test-cluster.sh — the chaos rounds on clusters (`make test-cluster`): builds
# the arbiter binary with the fault hooks (-tags arbiter_faults), starts a
# three-broker KRaft Kafka (scripts/kafka-cluster.sh: replication factor 3,
# min.insync.replicas 2), runs TestBrokerKillRound (one broker kill, asserted
# to come back) and an `arbiter chaos --kafka-brokers 3` round with broker
# kills, graceful broker restarts, worker kills and stalls; then, on the same
# Kafka, TestChaosRedisClusterFailovers and an `arbiter chaos --redis-cluster`
# round (a Redis Cluster of the run's own, 3 masters + 3 replicas) with
# graceful CLUSTER FAILOVERs and killed masters whose promoted replica lost
# writes (detected, rebuilt, resumed), worker kills and stalls; then
# TestChaosRedisSentinelFailovers and an `arbiter chaos --redis-sentinel`
# round (a master, a replica and 3 sentinels of the run's own) with graceful
# SENTINEL FAILOVERs and killed masters that lost writes; and stops
# everything it started however the run ends. Exits non-zero on any anomaly
# in a history, a broker that did not come back, a lost write not detected,
# or a process left running.
# CI=true makes the test fail, not skip, when the cluster is missing.
#
# Settings (environment):
#   ARBITER_STACK_DIR                  state and logs (.stack), as in kafka-cluster.sh
#   ARBITER_KAFKA_CLUSTER_BASE_PORT    the cluster's first port (19192), as in kafka-cluster.sh
#   ARBITER_CLUSTER_CHAOS_DURATION     production time of the chaos round (100s)
#   ARBITER_CLUSTER_CHAOS_FAULTS       its fault kinds (broker-kill,broker-restart,kill,stall)
#   ARBITER_REDIS_CLUSTER_CHAOS_DURATION  production time of the Redis Cluster round (100s)
#   ARBITER_REDIS_SENTINEL_CHAOS_DURATION production time of the Sentinel round (60s)
#   ARBITER_CLUSTER_ROUNDS             "all" (default), or "tests": only TestBrokerKillRound and
#                                      TestChaosRedisClusterFailovers, the short round make test runs
#   ARBITER_CHAOS_SEED                 its seed (the current time)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

rounds="${ARBITER_CLUSTER_ROUNDS:-all}"
case "$rounds" in
  all | tests) ;;
  *) echo "test-cluster: ARBITER_CLUSTER_ROUNDS=$rounds: use all or tests" >&2; exit 2 ;;
esac

STATE="${ARBITER_STACK_DIR:-$PWD/.stack}"
export ARBITER_STACK_DIR="$STATE"
BIN="$STATE/bin/arbiter"
RUN_DIR="$STATE/cluster-chaos"
REDIS_RUN_DIR="$STATE/redis-cluster-chaos"
SENTINEL_RUN_DIR="$STATE/redis-sentinel-chaos"
mkdir -p "$STATE/bin"

stop_all() {
  echo "test-cluster: stopping the three-broker Kafka"
  scripts/kafka-cluster.sh down || echo "test-cluster: scripts/kafka-cluster.sh down failed" >&2
  # Nothing this run started may outlive it: the brokers, the workers and
  # redis-servers of the chaos round and of the test.
  local leftovers pid
  leftovers="$(pgrep -af "kafka.Kafka $STATE/kafka-cluster/|$BIN |/TestBrokerKillRound[^ ]*/arbiter |/TestChaosRedisClusterFailovers[^ ]*/arbiter |/TestChaosRedisSentinelFailovers[^ ]*/arbiter " || true)"
  for pid in $(pgrep -x redis-server || true); do
    case "$(readlink "/proc/$pid/cwd" 2>/dev/null)" in
      "$RUN_DIR"/* | "$REDIS_RUN_DIR"/* | "$SENTINEL_RUN_DIR"/* | /tmp/TestBrokerKillRound* | /tmp/TestChaosRedisClusterFailovers* | /tmp/TestChaosRedisSentinelFailovers*) leftovers+=$'\n'"$(tr '\0' ' ' <"/proc/$pid/cmdline") (cwd $(readlink "/proc/$pid/cwd"))" ;;
    esac
  done
  if [[ -n ${leftovers//[$'\n ']/} ]]; then
    echo "test-cluster: FAILED: processes left running after the run:"
    echo "$leftovers"
    exit 1
  fi
  echo "test-cluster: no broker, worker or redis-server of this run is left running"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start=$SECONDS
echo "test-cluster: go build -tags arbiter_faults -o $BIN ./cmd/arbiter"
go build -tags arbiter_faults -o "$BIN" ./cmd/arbiter

scripts/kafka-cluster.sh up
# shellcheck source=/dev/null
source "$STATE/env.kafka-cluster"

failed=()
echo "test-cluster: go test -tags arbiter_faults -run TestBrokerKillRound ./internal/chaos/ (CI=${CI:-})"
go test -tags arbiter_faults -race -count=1 -timeout 10m -run 'TestBrokerKillRound$' ./internal/chaos/ ||
  failed+=(TestBrokerKillRound)

seed="${ARBITER_CHAOS_SEED:-$(date +%s)}"
if [[ $rounds == all ]]; then
  rm -rf "$RUN_DIR"
  echo "test-cluster: arbiter chaos --kafka-brokers 3 (seed $seed)"
  if "$BIN" chaos --brokers "$ARBITER_TEST_KAFKA_CLUSTER_BROKERS" --kafka-brokers 3 \
    --kafka-cluster-cmd scripts/kafka-cluster.sh \
    --faults "${ARBITER_CLUSTER_CHAOS_FAULTS:-broker-kill,broker-restart,kill,stall}" \
    --duration "${ARBITER_CLUSTER_CHAOS_DURATION:-100s}" --seed "$seed" --dir "$RUN_DIR"; then
    rm -rf "$RUN_DIR"
  else
    failed+=("chaos --kafka-brokers 3 (seed $seed, logs in $RUN_DIR)")
  fi
fi

echo "test-cluster: go test -tags arbiter_faults -run TestChaosRedisClusterFailovers ./app/ (on the three-broker Kafka)"
ARBITER_TEST_KAFKA_BROKERS="$ARBITER_TEST_KAFKA_CLUSTER_BROKERS" \
  go test -tags arbiter_faults -race -count=1 -timeout 10m -run 'TestChaosRedisClusterFailovers$' ./app/ ||
  failed+=(TestChaosRedisClusterFailovers)

if [[ $rounds == all ]]; then
  rm -rf "$REDIS_RUN_DIR"
  echo "test-cluster: arbiter chaos --redis-cluster (seed $seed)"
  if "$BIN" chaos --brokers "$ARBITER_TEST_KAFKA_CLUSTER_BROKERS" --kafka-brokers 3 \
    --kafka-cluster-cmd scripts/kafka-cluster.sh --redis-cluster \
    --faults redis-failover,redis-master-kill,kill,stall --fault-interval 10s \
    --duration "${ARBITER_REDIS_CLUSTER_CHAOS_DURATION:-100s}" --seed "$seed" --dir "$REDIS_RUN_DIR"; then
    rm -rf "$REDIS_RUN_DIR"
  else
    failed+=("chaos --redis-cluster (seed $seed, logs in $REDIS_RUN_DIR)")
  fi
fi

if [[ $rounds == all ]]; then
  echo "test-cluster: go test -tags arbiter_faults -run TestChaosRedisSentinelFailovers ./app/ (on the three-broker Kafka)"
  ARBITER_TEST_KAFKA_BROKERS="$ARBITER_TEST_KAFKA_CLUSTER_BROKERS" \
    go test -tags arbiter_faults -race -count=1 -timeout 10m -run 'TestChaosRedisSentinelFailovers$' ./app/ ||
    failed+=(TestChaosRedisSentinelFailovers)

  rm -rf "$SENTINEL_RUN_DIR"
  echo "test-cluster: arbiter chaos --redis-sentinel (seed $seed)"
  if "$BIN" chaos --brokers "$ARBITER_TEST_KAFKA_CLUSTER_BROKERS" --kafka-brokers 3 \
    --kafka-cluster-cmd scripts/kafka-cluster.sh --redis-sentinel \
    --faults sentinel-failover,sentinel-master-kill,kill,stall --fault-interval 8s \
    --duration "${ARBITER_REDIS_SENTINEL_CHAOS_DURATION:-60s}" --seed "$seed" --dir "$SENTINEL_RUN_DIR"; then
    rm -rf "$SENTINEL_RUN_DIR"
  else
    failed+=("chaos --redis-sentinel (seed $seed, logs in $SENTINEL_RUN_DIR)")
  fi
fi

echo "test-cluster: finished in $((SECONDS - start))s"
if ((${#failed[@]})); then
  echo "test-cluster: FAILED: ${failed[*]}"
  exit 1
fi
echo "test-cluster: ok"
