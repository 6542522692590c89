#!/usr/bin/env bash
# stack.sh — the real Kafka broker and Redis server that integration tests
# run against, as plain local processes (no Docker needed).
#
#   scripts/stack.sh up       start both (fresh Kafka data each time), wait
#                             until they answer, write .stack/env
#   scripts/stack.sh down     stop both, drop their data, keep the logs
#   scripts/stack.sh status   say what runs (exit 3 if not everything does)
#   scripts/stack.sh logs [-f] show (or follow) the logs
#   scripts/stack.sh env      print the export lines of .stack/env
#   scripts/stack.sh restart-kafka  stop the broker and start it on the same data
#   scripts/stack.sh topics   create the topics the worker uses (commands,
#                             events, conflicts) for a manual run
#
# Then: source .stack/env && go test ./...
#
# Kafka 4.1 (KRaft, broker and controller in one JVM) runs from jars that
# Maven resolves once (deployments/kafka/pom.xml) into
# ${ARBITER_CACHE_DIR:-~/.cache/arbiter}; later runs need no network.
# redis-server and kcat come from apt when missing; java and mvn too.
# Python's confluent-kafka (PyPI, librdkafka inside its wheel), for the tests
# of non-Go producers, is installed once into a virtualenv in the cache; its
# interpreter is exported as ARBITER_TEST_PYTHON.
#
# Settings (environment):
#   ARBITER_CACHE_DIR                jar cache            (~/.cache/arbiter)
#   ARBITER_STACK_KAFKA_PORT         broker port          (19092)
#   ARBITER_STACK_CONTROLLER_PORT    KRaft controller     (broker port + 1)
#   ARBITER_STACK_REDIS_PORT         redis-server port    (16379)
#   ARBITER_STACK_KAFKA_TIMEOUT      readiness timeout, s (180)
#   ARBITER_STACK_TOPIC_PARTITIONS   partitions of each topic `topics` creates (12)
#   ARBITER_STACK_DIR                state, logs and env  (.stack in the repo)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# CI may run with a bare environment; Maven and the cache need a home.
if [[ -z ${HOME:-} ]]; then
  HOME="$(getent passwd "$(id -u)" | cut -d: -f6)"
  export HOME
fi
STATE="${ARBITER_STACK_DIR:-$ROOT/.stack}"
LOGS="$STATE/logs"
POM="$ROOT/deployments/kafka/pom.xml"
SERVER_PROPERTIES="$ROOT/deployments/kafka/server.properties"
LOG4J_CONFIG="$ROOT/deployments/kafka/log4j2.properties"

KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")"
CACHE_DIR="${ARBITER_CACHE_DIR:-$HOME/.cache/arbiter}"
KAFKA_HOME="$CACHE_DIR/kafka-$KAFKA_VERSION"
KAFKA_LIBS="$KAFKA_HOME/libs"
KAFKA_LIBS_MARKER="$KAFKA_HOME/libs.complete"

KAFKA_PORT="${ARBITER_STACK_KAFKA_PORT:-19092}"
CONTROLLER_PORT="${ARBITER_STACK_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
REDIS_PORT="${ARBITER_STACK_REDIS_PORT:-16379}"
KAFKA_TIMEOUT="${ARBITER_STACK_KAFKA_TIMEOUT:-180}"
TOPIC_PARTITIONS="${ARBITER_STACK_TOPIC_PARTITIONS:-12}"
WORKER_TOPICS="commands,events,conflicts"

BROKERS="127.0.0.1:$KAFKA_PORT"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"

KAFKA_PIDFILE="$STATE/kafka.pid"
REDIS_PIDFILE="$STATE/redis.pid"
ENV_FILE="$STATE/env"
STACKCHECK="$STATE/bin/stackcheck"

log() { printf 'stack: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

now() { date +%s.%N; }
elapsed() { awk -v start="$1" -v end="$(now)" 'BEGIN { printf "%.1f", end - start }'; }

# pid_of FILE PATTERN: print the PID in FILE if that process runs and its
# command line contains PATTERN (so a recycled PID is never taken for ours).
pid_of() {
  local pidfile=$1 pattern=$2 pid
  [[ -s $pidfile ]] || return 1
  pid="$(<"$pidfile")"
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$pattern" || return 1
  echo "$pid"
}
kafka_pid() { pid_of "$KAFKA_PIDFILE" kafka.Kafka; }
redis_pid() { pid_of "$REDIS_PIDFILE" redis-server; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ensure_packages: apt-get install whatever of java, mvn, redis-server and
# kcat is missing (a fresh CI machine has java and mvn but not the others).
ensure_packages() {
  local missing=()
  command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || missing+=(maven)
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v kcat >/dev/null || missing+=(kcat)
  # A Debian python3 makes virtualenvs only with python3-venv.
  if ! command -v python3 >/dev/null; then
    missing+=(python3 python3-venv)
  elif ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    missing+=(python3-venv)
  fi
  ((${#missing[@]} == 0)) && return 0

  local sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null || die "missing ${missing[*]}, and not root to apt-get install them"
    sudo=(sudo)
  fi
  command -v apt-get >/dev/null || die "missing ${missing[*]}; install them (no apt-get here)"
  log "installing ${missing[*]} with apt-get"
  local start; start="$(now)"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  log "installed ${missing[*]} in $(elapsed "$start")s"
}

# ensure_python_kafka: confluent-kafka in a virtualenv of the cache, made once
# per version (the examples/python producer and its test need it). A failure
# only warns: the stack is still usable, and the tests that need it fail
# under CI=true with a message saying so.
CONFLUENT_KAFKA_VERSION=2.16.1
PYTHON_VENV="$CACHE_DIR/python-confluent-kafka-$CONFLUENT_KAFKA_VERSION"
ensure_python_kafka() {
  if [[ -x $PYTHON_VENV/bin/python ]] && "$PYTHON_VENV/bin/python" -c 'import confluent_kafka' 2>/dev/null; then
    return 0
  fi
  mkdir -p "$CACHE_DIR"
  (
    flock -w 600 8 || { log "warning: another checkout holds $PYTHON_VENV.lock"; exit 0; }
    if [[ -x $PYTHON_VENV/bin/python ]] && "$PYTHON_VENV/bin/python" -c 'import confluent_kafka' 2>/dev/null; then
      exit 0
    fi
    local start
    start="$(now)"
    log "installing confluent-kafka $CONFLUENT_KAFKA_VERSION with pip into $PYTHON_VENV"
    rm -rf "$PYTHON_VENV"
    # The import check above is what marks the virtualenv complete.
    if python3 -m venv "$PYTHON_VENV" >"$CACHE_DIR/pip.log" 2>&1 &&
      "$PYTHON_VENV/bin/pip" install -q --disable-pip-version-check "confluent-kafka==$CONFLUENT_KAFKA_VERSION" >>"$CACHE_DIR/pip.log" 2>&1; then
      log "installed confluent-kafka in $(elapsed "$start")s"
      exit 0
    fi
    rm -rf "$PYTHON_VENV"
    tail -n 20 "$CACHE_DIR/pip.log" >&2 || true
    log "warning: could not install confluent-kafka (is PyPI reachable?); the Python producer tests will fail under CI"
  ) 8>"$PYTHON_VENV.lock"
}

# ensure_kafka_libs: resolve the broker's jars with Maven once per pom
# content. The marker holds the pom's checksum, so editing the pom (a new
# Kafka or Log4j version) resolves again, and an interrupted download is
# never mistaken for a complete one.
ensure_kafka_libs() {
  [[ -n $KAFKA_VERSION ]] || die "no <kafka.version> in $POM"
  local want; want="$(sha256sum "$POM" | cut -d' ' -f1)"
  if [[ -f $KAFKA_LIBS_MARKER && "$(<"$KAFKA_LIBS_MARKER")" == "$want" ]]; then
    return 0
  fi
  mkdir -p "$KAFKA_HOME"
  # Checkouts share the cache: one resolution at a time (fd 8 is only open
  # in this subshell, so no server inherits it).
  (
    flock -w 600 8 || die "another checkout holds $KAFKA_HOME.lock"
    if [[ -f $KAFKA_LIBS_MARKER && "$(<"$KAFKA_LIBS_MARKER")" == "$want" ]]; then
      exit 0
    fi
    local tmp="$KAFKA_HOME/libs.tmp.$$" start
    start="$(now)"
    log "resolving Kafka $KAFKA_VERSION jars with Maven into $KAFKA_LIBS"
    rm -rf "$tmp"
    if ! mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >"$KAFKA_HOME/mvn.log" 2>&1; then
      cat "$KAFKA_HOME/mvn.log" >&2
      rm -rf "$tmp"
      die "mvn could not resolve the Kafka jars (is Maven Central reachable?)"
    fi
    rm -rf "$KAFKA_LIBS" "$KAFKA_LIBS_MARKER"
    mv "$tmp" "$KAFKA_LIBS"
    echo "$want" >"$KAFKA_LIBS_MARKER"
    log "resolved $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars in $(elapsed "$start")s"
  ) 8>"$KAFKA_HOME.lock"
}

# build_stackcheck: the small Go program that does the readiness round trips.
# Built (not `go run`) so that status and later ups reuse the binary.
build_stackcheck() {
  mkdir -p "$(dirname "$STACKCHECK")"
  (cd "$ROOT" && go build -o "$STACKCHECK" ./internal/cmd/stackcheck)
}

kafka_java_opts=(
  -Xmx1g -Xms256m
  -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError
  -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$LOG4J_CONFIG"
  "-Dkafka.logs.dir=$LOGS/kafka"
)

start_kafka() {
  local dir="$STATE/kafka"
  if port_open "$KAFKA_PORT" || port_open "$CONTROLLER_PORT"; then
    die "port $KAFKA_PORT or $CONTROLLER_PORT is taken by another process; stop it or set ARBITER_STACK_KAFKA_PORT"
  fi
  rm -rf "$dir"
  mkdir -p "$dir/data"
  if [[ -d $LOGS/kafka ]]; then
    rm -rf "$LOGS/kafka.previous"
    mv "$LOGS/kafka" "$LOGS/kafka.previous"
  fi
  mkdir -p "$LOGS/kafka"
  sed -e "s#@LOG_DIRS@#$dir/data#" \
      -e "s#127\.0\.0\.1:19092#127.0.0.1:$KAFKA_PORT#g" \
      -e "s#127\.0\.0\.1:19093#127.0.0.1:$CONTROLLER_PORT#g" \
      "$SERVER_PROPERTIES" >"$dir/server.properties"

  local cluster_id
  cluster_id="$(java -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid)"
  # Kafka 4.x formats with the latest production features, which include
  # transaction.version=2 (KIP-890); stackcheck verifies it below.
  java "${kafka_java_opts[@]}" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool \
    format -t "$cluster_id" -c "$dir/server.properties" >"$LOGS/kafka/format.log" 2>&1 ||
    { cat "$LOGS/kafka/format.log" >&2; die "kafka-storage format failed"; }
  log "$(grep -m1 'Formatting' "$LOGS/kafka/format.log" || echo "formatted $dir/data")"

  # 9>&- : the broker must not inherit the lock on .stack/lock.
  nohup java "${kafka_java_opts[@]}" -cp "$KAFKA_LIBS/*" kafka.Kafka "$dir/server.properties" \
    </dev/null >"$LOGS/kafka/stdout.log" 2>&1 9>&- &
  echo $! >"$KAFKA_PIDFILE"
  log "started Kafka $KAFKA_VERSION (pid $!), logs in ${LOGS#"$ROOT"/}/kafka/"
}

start_redis() {
  if port_open "$REDIS_PORT"; then
    die "port $REDIS_PORT is taken by another process; stop it or set ARBITER_STACK_REDIS_PORT"
  fi
  rm -rf "$STATE/redis" "$REDIS_PIDFILE"
  mkdir -p "$STATE/redis"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" \
    --save '' --appendonly no \
    --daemonize yes --pidfile "$REDIS_PIDFILE" \
    --logfile "$LOGS/redis.log" --dir "$STATE/redis" 9>&-
  local i
  for ((i = 0; i < 100; i++)); do
    redis_pid >/dev/null && break
    sleep 0.1
  done
  redis_pid >/dev/null || { tail -n 20 "$LOGS/redis.log" >&2 || true; die "redis-server did not start"; }
  log "started $(redis-server --version | cut -d' ' -f1-3) (pid $(redis_pid)) on port $REDIS_PORT"
}

# wait_ready [WAIT]: readiness through real round trips (metadata and
# ApiVersions for Kafka, INFO for Redis); prints the finalized features.
wait_ready() {
  local wait=${1:-${KAFKA_TIMEOUT}s} kpid rpid
  kpid="$(kafka_pid || echo 0)"
  rpid="$(redis_pid || echo 0)"
  if [[ -x $STACKCHECK ]]; then
    "$STACKCHECK" -brokers "$BROKERS" -redis "$REDIS_URL" -wait "$wait" \
      -kafka-pid "$kpid" -redis-pid "$rpid" -min-transaction-version 2
    return
  fi
  # Without Go (or if the module does not build): kcat's metadata request.
  log "stackcheck unavailable; checking Kafka with kcat -L (no feature levels)"
  local deadline=$((SECONDS + ${wait%s}))
  until kcat -b "$BROKERS" -L -m 5 2>/dev/null | grep -q '1 brokers'; do
    ((kpid == 0)) || [[ -n "$(kafka_pid)" ]] || return 1
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
  echo "kafka: ready at $BROKERS"
}

write_env() {
  local kpid rpid
  kpid="$(kafka_pid)"
  rpid="$(redis_pid)"
  {
    echo "# Written by scripts/stack.sh up. Use: source .stack/env"
    echo "export ARBITER_TEST_KAFKA_BROKERS=$BROKERS"
    echo "export ARBITER_TEST_REDIS_URL=$REDIS_URL"
    echo "export ARBITER_TEST_KAFKA_PID=$kpid"
    echo "export ARBITER_TEST_REDIS_PID=$rpid"
    if [[ -x $PYTHON_VENV/bin/python ]]; then
      echo "export ARBITER_TEST_PYTHON=$PYTHON_VENV/bin/python"
    fi
  } >"$ENV_FILE.tmp"
  mv "$ENV_FILE.tmp" "$ENV_FILE"
}

print_versions() {
  local version
  version="$(grep -m1 -o 'Kafka version: [^ ]*' "$LOGS/kafka/server.log" 2>/dev/null | cut -d' ' -f3 || true)"
  echo "kafka: Apache Kafka ${version:-$KAFKA_VERSION} (kafka_2.13-$KAFKA_VERSION.jar), pid $(kafka_pid)"
  echo "redis: $(redis-server --version), pid $(redis_pid)"
}

cmd_up() {
  local start kstart
  start="$(now)"
  if kafka_pid >/dev/null && redis_pid >/dev/null && [[ -f $ENV_FILE ]]; then
    log "already up"
    ensure_python_kafka
    write_env
    [[ -x $STACKCHECK ]] || build_stackcheck || true
    wait_ready 10s || die "the stack runs but does not answer; try scripts/stack.sh down && scripts/stack.sh up"
    cat "$ENV_FILE"
    return 0
  fi
  ensure_packages
  ensure_python_kafka
  command -v go >/dev/null || die "go is not on PATH"
  mkdir -p "$LOGS"

  kafka_pid >/dev/null || {
    ensure_kafka_libs
    kstart="$(now)"
    start_kafka
  }
  redis_pid >/dev/null || start_redis

  # Build while the JVM starts.
  build_stackcheck || { log "could not build internal/cmd/stackcheck"; rm -f "$STACKCHECK"; }
  if ! wait_ready; then
    log "last lines of ${LOGS#"$ROOT"/}/kafka/server.log:"
    tail -n 30 "$LOGS/kafka/server.log" >&2 2>/dev/null || true
    tail -n 30 "$LOGS/kafka/stdout.log" >&2 2>/dev/null || true
    die "the stack did not become ready within ${KAFKA_TIMEOUT}s (scripts/stack.sh down cleans up)"
  fi
  [[ -z ${kstart:-} ]] || log "Kafka ready $(elapsed "$kstart")s after its start"
  print_versions
  write_env
  log "up in $(elapsed "$start")s; environment (also in .stack/env):"
  cat "$ENV_FILE"
}

# stop_pid NAME PID TIMEOUT: SIGTERM, wait, then SIGKILL.
stop_pid() {
  local name=$1 pid=$2 timeout=$3 start
  start="$(now)"
  kill -TERM "$pid" 2>/dev/null || return 0
  local deadline=$((SECONDS + timeout))
  while kill -0 "$pid" 2>/dev/null && [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]]; do
    if ((SECONDS >= deadline)); then
      log "$name (pid $pid) still runs ${timeout}s after SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  log "stopped $name (pid $pid) in $(elapsed "$start")s"
}

cmd_down() {
  local pid stopped=0
  if pid="$(redis_pid)"; then
    stop_pid redis-server "$pid" 10
    stopped=1
  fi
  if pid="$(kafka_pid)"; then
    stop_pid Kafka "$pid" 60
    stopped=1
  fi
  rm -rf "$KAFKA_PIDFILE" "$REDIS_PIDFILE" "$ENV_FILE" "$STATE/kafka" "$STATE/redis"
  ((stopped)) || log "already down"
}

# cmd_restart_kafka: stop the broker and start it again on the same data,
# for fault-injection runs (arbiter chaos); waits until it answers again.
cmd_restart_kafka() {
  local pid dir="$STATE/kafka" start
  [[ -f $dir/server.properties ]] || die "Kafka was not started by scripts/stack.sh up"
  start="$(now)"
  if pid="$(kafka_pid)"; then
    stop_pid Kafka "$pid" 60
  fi
  mv "$LOGS/kafka/server.log" "$LOGS/kafka/server.log.before-restart" 2>/dev/null || true
  nohup java "${kafka_java_opts[@]}" -cp "$KAFKA_LIBS/*" kafka.Kafka "$dir/server.properties" \
    </dev/null >>"$LOGS/kafka/stdout.log" 2>&1 9>&- &
  echo $! >"$KAFKA_PIDFILE"
  wait_ready >/dev/null || die "Kafka did not come back after the restart (logs: ${LOGS#"$ROOT"/}/kafka/)"
  write_env
  log "restarted Kafka (pid $(kafka_pid)) in $(elapsed "$start")s"
}

cmd_status() {
  local pid all=0
  if pid="$(kafka_pid)"; then
    echo "kafka: running, pid $pid, $BROKERS"
  else
    echo "kafka: not running"
    all=3
  fi
  if pid="$(redis_pid)"; then
    echo "redis: running, pid $pid, $REDIS_URL"
  else
    echo "redis: not running"
    all=3
  fi
  if ((all == 0)) && [[ -x $STACKCHECK ]]; then
    "$STACKCHECK" -brokers "$BROKERS" -redis "$REDIS_URL" || all=3
  fi
  return "$all"
}

cmd_logs() {
  local files=()
  for f in "$LOGS/kafka/server.log" "$LOGS/kafka/stdout.log" "$LOGS/redis.log"; do
    [[ -f $f ]] && files+=("$f")
  done
  ((${#files[@]})) || die "no logs in $LOGS yet"
  if [[ ${1:-} == -f ]]; then
    exec tail -n 20 -F "${files[@]}"
  fi
  tail -n 50 "${files[@]}"
}

cmd_env() {
  [[ -f $ENV_FILE ]] || die "the stack is not up (no $ENV_FILE); run scripts/stack.sh up"
  cat "$ENV_FILE"
}

cmd_topics() {
  kafka_pid >/dev/null || die "Kafka is not running; run scripts/stack.sh up"
  [[ -x $STACKCHECK ]] || build_stackcheck
  "$STACKCHECK" -brokers "$BROKERS" -create-topics "$WORKER_TOPICS" -partitions "$TOPIC_PARTITIONS"
}

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
  exit 2
}

main() {
  local command=${1:-}
  [[ -n $command ]] || usage
  shift
  mkdir -p "$STATE"
  case $command in
    up | down | topics | restart-kafka)
      # One up/down at a time per checkout: an up racing a down would leave
      # half a stack. Children started while it is held close fd 9.
      exec 9>"$STATE/lock"
      flock -w 300 9 || die "another scripts/stack.sh holds $STATE/lock"
      ;;
  esac
  case $command in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    logs) cmd_logs "$@" ;;
    env) cmd_env ;;
    topics) cmd_topics ;;
    restart-kafka) cmd_restart_kafka ;;
    -h | --help | help) usage ;;
    *) log "unknown command: $command"; usage ;;
  esac
}

main "$@"
