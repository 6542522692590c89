#!/usr/bin/env bash
# kafka-cluster.sh — a three-broker KRaft Kafka for the rounds that claim
# something about a replicated Kafka (broker kills, leader moves), as plain
# local JVMs from the jars scripts/stack.sh resolves (no Docker):
#
#   scripts/kafka-cluster.sh up          three nodes, each broker and controller, replication
#                                        factor 3, min.insync.replicas 2, small heaps
#   scripts/kafka-cluster.sh down
#   scripts/kafka-cluster.sh kill N      SIGKILL node N (1..3)
#   scripts/kafka-cluster.sh stop N      stop node N gracefully (SIGTERM: a controlled shutdown
#                                        that moves its leaders away first) and wait for its exit
#   scripts/kafka-cluster.sh start N     start node N again on its data and wait until the
#                                        cluster has three brokers again
#   scripts/kafka-cluster.sh status
#
# `up` writes $STATE/env.kafka-cluster:
#   ARBITER_TEST_KAFKA_CLUSTER_BROKERS   the three bootstrap addresses
#   ARBITER_TEST_KAFKA_CLUSTER_PIDS      the three PIDs, in node order
#
# Settings (environment):
#   ARBITER_STACK_DIR                    state, logs and env files (.stack in the repo)
#   ARBITER_KAFKA_CLUSTER_BASE_PORT      node N listens on BASE+N-1, its controller on BASE+10+N-1 (19192)
#   ARBITER_KAFKA_CLUSTER_HEAP           -Xmx of each JVM (512m)
#   ARBITER_CACHE_DIR                    the jar cache (~/.cache/arbiter), filled by stack.sh up
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z ${HOME:-} ]]; then
  HOME="$(getent passwd "$(id -u)" | cut -d: -f6)"
  export HOME
fi
STATE="${ARBITER_STACK_DIR:-$ROOT/.stack}"
DIR="$STATE/kafka-cluster"
POM="$ROOT/deployments/kafka/pom.xml"
SERVER_PROPERTIES="$ROOT/deployments/kafka/server.properties"
LOG4J_CONFIG="$ROOT/deployments/kafka/log4j2.properties"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")"
KAFKA_LIBS="${ARBITER_CACHE_DIR:-$HOME/.cache/arbiter}/kafka-$KAFKA_VERSION/libs"
BASE="${ARBITER_KAFKA_CLUSTER_BASE_PORT:-19192}"
HEAP="${ARBITER_KAFKA_CLUSTER_HEAP:-512m}"
NODES=(1 2 3)

log() { printf 'kafka-cluster: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
broker_port() { echo $((BASE + $1 - 1)); }
controller_port() { echo $((BASE + 10 + $1 - 1)); }

brokers() {
  local out=() n
  for n in "${NODES[@]}"; do out+=("127.0.0.1:$(broker_port "$n")"); done
  local IFS=,
  echo "${out[*]}"
}

node_pid() {
  local pidfile="$DIR/node-$1.pid" pid
  [[ -s $pidfile ]] || return 1
  pid="$(<"$pidfile")"
  [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF kafka.Kafka || return 1
  echo "$pid"
}

java_opts() {
  echo "-Xmx$HEAP -Xms128m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError" \
    "-Djava.awt.headless=true -Dlog4j2.configurationFile=$LOG4J_CONFIG -Dkafka.logs.dir=$DIR/logs-$1"
}

# node_properties N: the single-node test broker's settings, made a member of
# a three-node quorum with replicated internal topics.
node_properties() {
  local n=$1 voters="" m
  for m in "${NODES[@]}"; do voters+="${voters:+,}$m@127.0.0.1:$(controller_port "$m")"; done
  sed -e "s#@LOG_DIRS@#$DIR/data-$n#" \
    -e "s#^node.id=.*#node.id=$n#" \
    -e "s#^controller.quorum.voters=.*#controller.quorum.voters=$voters#" \
    -e "s#127\.0\.0\.1:19092#127.0.0.1:$(broker_port "$n")#g" \
    -e "s#127\.0\.0\.1:19093#127.0.0.1:$(controller_port "$n")#g" \
    -e "s#^offsets.topic.replication.factor=.*#offsets.topic.replication.factor=3#" \
    -e "s#^transaction.state.log.replication.factor=.*#transaction.state.log.replication.factor=3#" \
    -e "s#^transaction.state.log.min.isr=.*#transaction.state.log.min.isr=2#" \
    -e "s#^share.coordinator.state.topic.replication.factor=.*#share.coordinator.state.topic.replication.factor=3#" \
    -e "s#^share.coordinator.state.topic.min.isr=.*#share.coordinator.state.topic.min.isr=2#" \
    -e "s#^default.replication.factor=.*#default.replication.factor=3#" \
    "$SERVER_PROPERTIES"
  echo "min.insync.replicas=2"
  echo "unclean.leader.election.enable=false"
}

start_node() {
  local n=$1
  # shellcheck disable=SC2046
  nohup java $(java_opts "$n") -cp "$KAFKA_LIBS/*" kafka.Kafka "$DIR/node-$n.properties" \
    </dev/null >>"$DIR/logs-$n/stdout.log" 2>&1 9>&- &
  echo $! >"$DIR/node-$n.pid"
}

# wait_brokers N: until a metadata request lists N brokers (120 s).
wait_brokers() {
  local want=$1 deadline=$((SECONDS + 120))
  until [[ "$(kcat -b "$(brokers)" -L -m 5 2>/dev/null | grep -c '^  broker ')" == "$want" ]]; do
    ((SECONDS < deadline)) || die "the cluster did not list $want brokers within 120s (logs in $DIR/logs-*)"
    sleep 0.5
  done
}

write_env() {
  local pids=() n
  for n in "${NODES[@]}"; do pids+=("$(node_pid "$n" || echo 0)"); done
  local IFS=,
  {
    echo "# Written by scripts/kafka-cluster.sh"
    echo "export ARBITER_TEST_KAFKA_CLUSTER_BROKERS=$(brokers)"
    echo "export ARBITER_TEST_KAFKA_CLUSTER_PIDS=${pids[*]}"
  } >"$STATE/env.kafka-cluster"
}

cmd_up() {
  local start=$SECONDS n cluster_id
  [[ -d $KAFKA_LIBS ]] || die "no Kafka jars in $KAFKA_LIBS: run scripts/stack.sh up once first"
  command -v kcat >/dev/null || die "kcat is missing (scripts/stack.sh up installs it)"
  cmd_down >/dev/null 2>&1 || true
  mkdir -p "$DIR"
  for n in "${NODES[@]}"; do
    if port_open "$(broker_port "$n")" || port_open "$(controller_port "$n")"; then
      die "port $(broker_port "$n") or $(controller_port "$n") is taken; set ARBITER_KAFKA_CLUSTER_BASE_PORT"
    fi
  done
  cluster_id="$(java -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid)"
  for n in "${NODES[@]}"; do
    mkdir -p "$DIR/data-$n" "$DIR/logs-$n"
    node_properties "$n" >"$DIR/node-$n.properties"
    # shellcheck disable=SC2046
    java $(java_opts "$n") -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format -t "$cluster_id" \
      -c "$DIR/node-$n.properties" >"$DIR/logs-$n/format.log" 2>&1 ||
      { cat "$DIR/logs-$n/format.log" >&2; die "kafka-storage format of node $n failed"; }
    start_node "$n"
  done
  wait_brokers 3
  write_env
  log "three-broker Kafka $KAFKA_VERSION up in $((SECONDS - start))s at $(brokers)"
  cat "$STATE/env.kafka-cluster"
}

cmd_down() {
  local n pid
  for n in "${NODES[@]}"; do
    if pid="$(node_pid "$n")"; then
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  for n in "${NODES[@]}"; do
    if pid="$(node_pid "$n")"; then
      for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$DIR" "$STATE/env.kafka-cluster"
  log "down"
}

cmd_kill() {
  local n=${1:?node number} pid
  pid="$(node_pid "$n")" || die "node $n is not running"
  kill -KILL "$pid"
  log "killed node $n (pid $pid)"
}

cmd_stop() {
  local n=${1:?node number} pid start=$SECONDS
  pid="$(node_pid "$n")" || die "node $n is not running"
  kill -TERM "$pid"
  for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid"
    die "node $n (pid $pid) did not stop within 120s: killed"
  fi
  log "stopped node $n (pid $pid) in $((SECONDS - start))s"
}

cmd_start() {
  local n=${1:?node number} start=$SECONDS
  node_pid "$n" >/dev/null && die "node $n already runs"
  start_node "$n"
  # The others may still list the killed node: wait for the node itself.
  local deadline=$((SECONDS + 120))
  until kcat -b "127.0.0.1:$(broker_port "$n")" -L -m 5 2>/dev/null | grep -q "^  broker $n at"; do
    node_pid "$n" >/dev/null || die "node $n exited (logs in $DIR/logs-$n)"
    ((SECONDS < deadline)) || die "node $n did not answer within 120s (logs in $DIR/logs-$n)"
    sleep 0.5
  done
  wait_brokers 3
  write_env
  log "node $n back in $((SECONDS - start))s"
}

cmd_status() {
  local n rc=0
  for n in "${NODES[@]}"; do
    if node_pid "$n" >/dev/null; then
      echo "node $n: running, pid $(node_pid "$n"), 127.0.0.1:$(broker_port "$n")"
    else
      echo "node $n: not running"; rc=3
    fi
  done
  return $rc
}

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
  exit 2
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  kill) cmd_kill "${2:-}" ;;
  stop) cmd_stop "${2:-}" ;;
  start) cmd_start "${2:-}" ;;
  status) cmd_status ;;
  *) usage ;;
esac
