#!/usr/bin/env bash
# send.sh — produce Arbiter commands with kcat, one command JSON per line of
# stdin, each keyed by its aggregate ID.
#
#   examples/kcat/send.sh < commands.jsonl
#   echo '{"id":"c-1","aggregateId":"prod-123","type":"ChangePrice","expectedVersion":5,"payload":{"newPrice":22}}' | examples/kcat/send.sh
#
# Settings (environment): ARBITER_BROKERS (127.0.0.1:9092),
# ARBITER_COMMANDS_TOPIC (commands).
#
# The two librdkafka settings that matter (see docs/producers.md):
#   partitioner=murmur2_random  the Java client's (and Arbiter's Go client's)
#                               partitioner; librdkafka's default,
#                               consistent_random (CRC32), puts an aggregate's
#                               commands on another partition than theirs, so
#                               commands from different producers for one
#                               aggregate lose their order
#   enable.idempotence=true     a retried produce never writes a command twice
#                               (a second copy would only get a `duplicate`)
set -euo pipefail

brokers="${ARBITER_BROKERS:-127.0.0.1:9092}"
topic="${ARBITER_COMMANDS_TOPIC:-commands}"

# kcat -K takes "key<TAB>value" lines. The key must be the aggregateId byte
# for byte; it is cut out of the JSON with sed, which is enough for IDs
# without escaped quotes (use a JSON tool such as jq for anything else:
#   jq -rc '"\(.aggregateId)\t\(.)"').
sed -n 's/.*"aggregateId"[[:space:]]*:[[:space:]]*"\([^"\\]*\)".*/\1\t&/p' |
  kcat -P -b "$brokers" -t "$topic" -K $'\t' \
    -X partitioner=murmur2_random \
    -X enable.idempotence=true \
    -X linger.ms=5
