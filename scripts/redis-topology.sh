#!/usr/bin/env bash
# redis-topology.sh — the Redis topologies beyond one server, for the tests
# and chaos rounds that claim something about them, as plain local
# redis-server processes (Debian's package; no Docker):
#
#   scripts/redis-topology.sh cluster up     a Redis Cluster: 3 masters + 3 replicas
#                                            (cluster mode, loopback ports BASE..BASE+5)
#   scripts/redis-topology.sh cluster down
#   scripts/redis-topology.sh sentinel up    1 master, 1 replica, 3 sentinels (master name
#                                            "arbiter"; ports BASE+10..BASE+14)
#   scripts/redis-topology.sh sentinel down
#   scripts/redis-topology.sh status
#
# `up` waits until the topology answers (cluster_state:ok with every slot
# covered and every replica linked; the sentinels agreeing on the master and
# seeing the replica), then writes $STATE/env.redis-cluster or
# $STATE/env.redis-sentinel with the URLs in go-redis's forms:
#
#   ARBITER_TEST_REDIS_CLUSTER_URL   redis://127.0.0.1:P1?addr=127.0.0.1:P2&addr=…
#   ARBITER_TEST_REDIS_SENTINEL_URL  redis://127.0.0.1:S1?master_name=arbiter&addr=…:S2&addr=…:S3
#
# and the PIDs (ARBITER_TEST_REDIS_CLUSTER_PIDS, ARBITER_TEST_REDIS_SENTINEL_PIDS,
# in port order) for fault injection. Persistence is AOF with fsync always,
# as the README advises for production.
#
# Settings (environment):
#   ARBITER_STACK_DIR                 state, logs and env files (.stack in the repo)
#   ARBITER_REDIS_TOPOLOGY_BASE_PORT  first port (17000); cluster nodes also take their
#                                     bus ports, port + 10000 (27000..27005)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${ARBITER_STACK_DIR:-$ROOT/.stack}"
BASE="${ARBITER_REDIS_TOPOLOGY_BASE_PORT:-17000}"
CLUSTER_PORTS=("$BASE" "$((BASE + 1))" "$((BASE + 2))" "$((BASE + 3))" "$((BASE + 4))" "$((BASE + 5))")
SENTINEL_MASTER_PORT=$((BASE + 10))
SENTINEL_REPLICA_PORT=$((BASE + 11))
SENTINEL_PORTS=("$((BASE + 12))" "$((BASE + 13))" "$((BASE + 14))")
MASTER_NAME=arbiter

log() { printf 'redis-topology: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ensure_redis() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return 0
  command -v apt-get >/dev/null || die "redis-server is missing and there is no apt-get"
  log "installing redis-server with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
}

# start_server DIR PORT ARGS...: one daemonized redis-server with its own
# directory, log and pidfile.
start_server() {
  local dir=$1 port=$2
  shift 2
  port_open "$port" && die "port $port is taken; set ARBITER_REDIS_TOPOLOGY_BASE_PORT"
  mkdir -p "$dir"
  redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" "$@" 9>&-
}

# wait_port PORT: until redis answers PING there (10 s).
wait_port() {
  local i
  for ((i = 0; i < 100; i++)); do
    [[ "$(redis-cli -p "$1" ping 2>/dev/null)" == PONG ]] && return 0
    sleep 0.1
  done
  die "redis on port $1 did not answer"
}

pids_of() {
  local dir=$1 out=() f
  shift
  for f in "$@"; do
    [[ -s $dir/$f/redis.pid ]] && out+=("$(<"$dir/$f/redis.pid")")
  done
  local IFS=,
  echo "${out[*]}"
}

stop_dir() {
  local dir=$1 pidfile pid
  [[ -d $dir ]] || return 0
  for pidfile in "$dir"/*/redis.pid; do
    [[ -s $pidfile ]] || continue
    pid="$(<"$pidfile")"
    if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q redis-; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$dir"
}

cluster_up() {
  local dir="$STATE/redis-cluster" start=$SECONDS port nodes=()
  ensure_redis
  stop_dir "$dir"
  for port in "${CLUSTER_PORTS[@]}"; do
    port_open $((port + 10000)) && die "cluster bus port $((port + 10000)) (port + 10000) is taken; set ARBITER_REDIS_TOPOLOGY_BASE_PORT"
    start_server "$dir/$port" "$port" --cluster-enabled yes --cluster-config-file nodes.conf \
      --cluster-node-timeout 2000 --appendonly yes --appendfsync always --save ''
    nodes+=("127.0.0.1:$port")
  done
  for port in "${CLUSTER_PORTS[@]}"; do wait_port "$port"; done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 ||
    { cat "$dir/create.log" >&2; die "redis-cli --cluster create failed"; }
  local deadline=$((SECONDS + 60)) info
  until info="$(redis-cli -p "${CLUSTER_PORTS[0]}" cluster info 2>/dev/null)" &&
    grep -q 'cluster_state:ok' <<<"$info" && grep -q 'cluster_slots_ok:16384' <<<"$info" &&
    [[ "$(redis-cli -p "${CLUSTER_PORTS[0]}" cluster nodes | grep -c 'slave.*connected')" == 3 ]]; do
    ((SECONDS < deadline)) || die "the cluster did not reach cluster_state:ok with 3 linked replicas in 60s"
    sleep 0.2
  done
  local url="redis://${nodes[0]}?" sep=""
  for node in "${nodes[@]:1}"; do url+="${sep}addr=$node"; sep="&"; done
  {
    echo "# Written by scripts/redis-topology.sh cluster up"
    echo "export ARBITER_TEST_REDIS_CLUSTER_URL='$url'"
    echo "export ARBITER_TEST_REDIS_CLUSTER_PIDS=$(pids_of "$dir" "${CLUSTER_PORTS[@]}")"
  } >"$STATE/env.redis-cluster"
  log "Redis Cluster of 3 masters and 3 replicas up in $((SECONDS - start))s ($(redis-server --version | cut -d' ' -f3)); env in $STATE/env.redis-cluster"
  cat "$STATE/env.redis-cluster"
}

sentinel_up() {
  local dir="$STATE/redis-sentinel" start=$SECONDS port
  ensure_redis
  stop_dir "$dir"
  start_server "$dir/$SENTINEL_MASTER_PORT" "$SENTINEL_MASTER_PORT" --appendonly yes --appendfsync always --save ''
  wait_port "$SENTINEL_MASTER_PORT"
  start_server "$dir/$SENTINEL_REPLICA_PORT" "$SENTINEL_REPLICA_PORT" --appendonly yes --appendfsync always --save '' \
    --replicaof 127.0.0.1 "$SENTINEL_MASTER_PORT"
  wait_port "$SENTINEL_REPLICA_PORT"
  for port in "${SENTINEL_PORTS[@]}"; do
    mkdir -p "$dir/$port"
    cat >"$dir/$port/sentinel.conf" <<EOF
port $port
bind 127.0.0.1
dir $dir/$port
sentinel monitor $MASTER_NAME 127.0.0.1 $SENTINEL_MASTER_PORT 2
sentinel down-after-milliseconds $MASTER_NAME 2000
sentinel failover-timeout $MASTER_NAME 10000
sentinel parallel-syncs $MASTER_NAME 1
EOF
    port_open "$port" && die "port $port is taken; set ARBITER_REDIS_TOPOLOGY_BASE_PORT"
    redis-server "$dir/$port/sentinel.conf" --sentinel --daemonize yes \
      --pidfile "$dir/$port/redis.pid" --logfile "$dir/$port/redis.log" 9>&-
  done
  for port in "${SENTINEL_PORTS[@]}"; do wait_port "$port"; done
  local deadline=$((SECONDS + 60))
  until [[ "$(redis-cli -p "$SENTINEL_MASTER_PORT" info replication | tr -d '\r' | grep -c '^slave0:.*state=online')" == 1 ]] &&
    for port in "${SENTINEL_PORTS[@]}"; do
      [[ "$(redis-cli -p "$port" sentinel master "$MASTER_NAME" 2>/dev/null | tr -d '\r' | sed -n '/^num-other-sentinels$/{n;p}')" == 2 ]] || exit 1
    done; do
    ((SECONDS < deadline)) || die "the sentinels did not see each other and the replica within 60s"
    sleep 0.2
  done
  local url="redis://127.0.0.1:${SENTINEL_PORTS[0]}?master_name=$MASTER_NAME&addr=127.0.0.1:${SENTINEL_PORTS[1]}&addr=127.0.0.1:${SENTINEL_PORTS[2]}"
  {
    echo "# Written by scripts/redis-topology.sh sentinel up"
    echo "export ARBITER_TEST_REDIS_SENTINEL_URL='$url'"
    echo "export ARBITER_TEST_REDIS_SENTINEL_MASTER_PID=$(<"$dir/$SENTINEL_MASTER_PORT/redis.pid")"
    echo "export ARBITER_TEST_REDIS_SENTINEL_REPLICA_PID=$(<"$dir/$SENTINEL_REPLICA_PORT/redis.pid")"
    echo "export ARBITER_TEST_REDIS_SENTINEL_PIDS=$(pids_of "$dir" "${SENTINEL_PORTS[@]}")"
  } >"$STATE/env.redis-sentinel"
  log "Redis Sentinel set-up (1 master, 1 replica, 3 sentinels) up in $((SECONDS - start))s; env in $STATE/env.redis-sentinel"
  cat "$STATE/env.redis-sentinel"
}

status() {
  local rc=0
  if [[ -f $STATE/env.redis-cluster ]]; then
    echo "cluster: $(redis-cli -p "${CLUSTER_PORTS[0]}" cluster info 2>/dev/null | tr -d '\r' | grep cluster_state || echo 'not answering')"
  else
    echo "cluster: not up"; rc=3
  fi
  if [[ -f $STATE/env.redis-sentinel ]]; then
    echo "sentinel: master at $(redis-cli -p "${SENTINEL_PORTS[0]}" sentinel get-master-addr-by-name "$MASTER_NAME" 2>/dev/null | tr '\n' ' ' || echo 'not answering')"
  else
    echo "sentinel: not up"; rc=3
  fi
  return $rc
}

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
  exit 2
}

mkdir -p "$STATE"
case "${1:-} ${2:-}" in
  "cluster up") cluster_up ;;
  "cluster down") stop_dir "$STATE/redis-cluster"; rm -f "$STATE/env.redis-cluster"; log "cluster down" ;;
  "sentinel up") sentinel_up ;;
  "sentinel down") stop_dir "$STATE/redis-sentinel"; rm -f "$STATE/env.redis-sentinel"; log "sentinel set-up down" ;;
  "status "*) status ;;
  *) usage ;;
esac
