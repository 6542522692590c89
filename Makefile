# Entry points of the project; the logic lives in scripts/.
#
#   make test        the test command: stack up, lint, go test -race ./..., a chaos round,
#                    the short cluster round (scripts/test-cluster.sh, tests only), stack down
#   make lint        gofmt, go vet, staticcheck
#   make build       build every package (also with the arbiter_faults tag of the
#                    tests and the chaos runner) and bin/arbiter, the release binary
#   make stack-up    start Kafka and Redis for tests (then: source .stack/env)
#   make stack-down  stop them
#   make redis-cluster-up / redis-sentinel-up (and -down)
#                    a Redis Cluster (3 masters + 3 replicas) or a Sentinel set-up
#                    (1 master, 1 replica, 3 sentinels); make test starts both
#   make kafka-cluster-up / -down  a three-broker KRaft Kafka (RF 3, min ISR 2)
#   make test-cluster  the chaos rounds on clusters: broker kills and restarts on a
#                    three-broker Kafka of its own, 0 anomalies or it fails
#   make bench       the benchmark of BENCHMARKS.md on a stack of its own (BENCH_ARGS adds flags)
#   make soak        a 30-minute chaos run with every fault kind, then the history check

.PHONY: test test-cluster lint build bench soak stack-up stack-down stack-status stack-logs stack-topics redis-cluster-up redis-cluster-down redis-sentinel-up redis-sentinel-down kafka-cluster-up kafka-cluster-down

test:
	scripts/test.sh

# The chaos rounds on clusters (scripts/test-cluster.sh): a three-broker
# Kafka of its own with broker kills and restarts; fails on any anomaly.
test-cluster:
	scripts/test-cluster.sh

lint:
	scripts/lint.sh

build:
	go build ./...
	go build -tags arbiter_faults ./...
	CGO_ENABLED=0 go build -trimpath -o bin/arbiter ./cmd/arbiter

bench:
	scripts/bench.sh $(BENCH_ARGS)

stack-up:
	scripts/stack.sh up

stack-down:
	scripts/stack.sh down

stack-status:
	scripts/stack.sh status

stack-logs:
	scripts/stack.sh logs

# The worker's topics (commands, events, conflicts; 12 partitions each, as
# in docker-compose.yml), for running the worker by hand against the stack.
stack-topics:
	scripts/stack.sh topics

# A long chaos run: every fault kind for 30 minutes (ARBITER_SOAK_DURATION),
# then the history checker; see scripts/soak.sh.
soak:
	scripts/soak.sh

# Redis topologies beyond one server (scripts/redis-topology.sh): then
# source .stack/env.redis-cluster or .stack/env.redis-sentinel.
redis-cluster-up:
	scripts/redis-topology.sh cluster up

redis-cluster-down:
	scripts/redis-topology.sh cluster down

redis-sentinel-up:
	scripts/redis-topology.sh sentinel up

redis-sentinel-down:
	scripts/redis-topology.sh sentinel down

# A three-broker KRaft Kafka (scripts/kafka-cluster.sh; needs the jars of
# one scripts/stack.sh up): then source .stack/env.kafka-cluster.
kafka-cluster-up:
	scripts/kafka-cluster.sh up

kafka-cluster-down:
	scripts/kafka-cluster.sh down
