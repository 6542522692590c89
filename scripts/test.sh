#!/usr/bin/env bash
# test.sh — the project's test command (`make test`, and so .ci/run): starts
# the stack (scripts/stack.sh), runs the static checks (scripts/lint.sh)
# while the broker boots, runs every test with the race detector against the
# stack, and stops the stack however the run ends. Exits non-zero if any
# step failed. CI=true (set by CI) makes integration tests fail, not skip,
# when a server is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

mkdir -p .stack
up_log=.stack/up.log
up_pid=

stop_stack() {
  # The up may still run (interrupted early): stack.sh's lock makes down
  # wait for it, so nothing it started is left behind.
  if [[ -n $up_pid ]]; then
    wait "$up_pid" 2>/dev/null || true
  fi
  echo "test: stopping the stack"
  scripts/stack.sh down || echo "test: scripts/stack.sh down failed" >&2
  scripts/redis-topology.sh cluster down || echo "test: scripts/redis-topology.sh cluster down failed" >&2
  scripts/redis-topology.sh sentinel down || echo "test: scripts/redis-topology.sh sentinel down failed" >&2
  # Nothing this run started may outlive it: the stack's broker and
  # redis-server, the chaos round's redis-server and workers, the tests'
  # own redis-servers.
  local leftovers
  leftovers="$(pgrep -af "kafka.Kafka $PWD/.stack|$PWD/.stack/bin/arbiter|redis-server .*:1637[9]" || true)"
  for pid in $(pgrep -x redis-server || true); do
    case "$(readlink "/proc/$pid/cwd" 2>/dev/null)" in
      /tmp/arbiter-chaos-* | /tmp/Test* | "$PWD"/.stack/redis-*) leftovers+=$'\n'"$(tr '\0' ' ' <"/proc/$pid/cmdline") (cwd $(readlink "/proc/$pid/cwd"))" ;;
    esac
  done
  if [[ -n ${leftovers//[$'\n ']/} ]]; then
    echo "test: FAILED: processes left running after the run:"
    echo "$leftovers"
    exit 1
  fi
  echo "test: no broker or redis-server of this run is left running"
}
trap stop_stack EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start=$SECONDS
scripts/stack.sh up >"$up_log" 2>&1 &
up_pid=$!

failed=()
scripts/lint.sh || failed+=(lint)

echo "test: waiting for the stack"
up_status=0
wait "$up_pid" || up_status=$?
up_pid=
cat "$up_log"
if ((up_status != 0)); then
  echo "test: FAILED: scripts/stack.sh up exited $up_status (logs: .stack/logs/)"
  exit 1
fi
# shellcheck source=/dev/null
source .stack/env

# The Redis topologies beyond one server (a 3-master Cluster with replicas,
# a Sentinel set-up): a few seconds and a few MB each, so every run has them.
echo "test: starting a Redis Cluster and a Sentinel set-up (scripts/redis-topology.sh)"
if scripts/redis-topology.sh cluster up >.stack/redis-cluster.log 2>&1 &&
  scripts/redis-topology.sh sentinel up >.stack/redis-sentinel.log 2>&1; then
  tail -n 1 .stack/redis-cluster.log .stack/redis-sentinel.log
  # shellcheck source=/dev/null
  source .stack/env.redis-cluster
  # shellcheck source=/dev/null
  source .stack/env.redis-sentinel
else
  cat .stack/redis-cluster.log .stack/redis-sentinel.log 2>/dev/null || true
  failed+=("redis topologies")
fi

echo "test: go test -race -count=1 -timeout 12m ./... (CI=${CI:-})"
go test -race -count=1 -timeout 12m ./... || failed+=("go test")

# A short chaos round against the same stack, after the tests: it restarts
# the broker, which parallel test packages must not see. Every fault kind is
# injected at least once; the round fails on any anomaly in the history.
chaos_seed="${ARBITER_CHAOS_SEED:-$(date +%s)}"
echo "test: arbiter chaos (seed $chaos_seed)"
go build -tags arbiter_faults -o .stack/bin/arbiter ./cmd/arbiter &&
  .stack/bin/arbiter chaos --brokers "$ARBITER_TEST_KAFKA_BROKERS" \
    --duration "${ARBITER_CHAOS_DURATION:-110s}" --rate "${ARBITER_CHAOS_RATE:-200}" \
    --seed "$chaos_seed" --kafka-restart-cmd "scripts/stack.sh restart-kafka" ||
  failed+=("chaos (seed $chaos_seed)")

# The short cluster round: a three-broker Kafka of its own with one broker
# killed (TestBrokerKillRound) and a Redis Cluster of its own with a graceful
# failover and a killed master whose replica lost writes
# (TestChaosRedisClusterFailovers); about 2.5 minutes. make test-cluster runs
# the long rounds too. ARBITER_TEST_CLUSTER=0 leaves it out.
if [[ ${ARBITER_TEST_CLUSTER:-1} != 0 ]]; then
  echo "test: the short cluster round (scripts/test-cluster.sh, ARBITER_CLUSTER_ROUNDS=tests)"
  ARBITER_CLUSTER_ROUNDS=tests scripts/test-cluster.sh || failed+=("cluster round")
fi

echo "test: finished in $((SECONDS - start))s"
if ((${#failed[@]})); then
  echo "test: FAILED: ${failed[*]}"
  exit 1
fi
echo "test: ok"
