#!/usr/bin/env bash
# outcome.sh — wait for the outcome of a command and print it, reading the
# events and conflicts topics with kcat (read_committed).
#
#   examples/kcat/outcome.sh <command-id> [timeout-seconds]
#
# Prints the command's events (JSON, one per line) or its one conflict record
# and exits 0 when it was applied, 5 when it was not (the conflict's reason
# is in the record), 1 when no outcome came in time.
#
# Settings (environment): ARBITER_BROKERS (127.0.0.1:9092),
# ARBITER_EVENTS_TOPIC (events), ARBITER_CONFLICTS_TOPIC (conflicts).
#
# It reads both topics from their start on every try: simple and fine for an
# example or a small topic. A service should instead follow the topics from
# their end offsets, taken before it produces, as the Go client does.
set -euo pipefail

command_id="${1:?usage: outcome.sh <command-id> [timeout-seconds]}"
timeout="${2:-30}"
brokers="${ARBITER_BROKERS:-127.0.0.1:9092}"
events_topic="${ARBITER_EVENTS_TOPIC:-events}"
conflicts_topic="${ARBITER_CONFLICTS_TOPIC:-conflicts}"

# read TOPIC: the values of the records answering the command. Outcome
# records carry the header arbiter-command-id; -f prints it before the value.
read_topic() {
  kcat -C -b "$brokers" -t "$1" -o beginning -e -q \
    -X isolation.level=read_committed \
    -f '%h\t%s\n' |
    awk -F '\t' -v want="arbiter-command-id=$command_id" '
      { n = split($1, headers, ","); for (i = 1; i <= n; i++) if (headers[i] == want) { print $2; next } }'
}

deadline=$((SECONDS + timeout))
while ((SECONDS < deadline)); do
  conflict="$(read_topic "$conflicts_topic")"
  if [[ -n $conflict ]]; then
    echo "$conflict"
    # A duplicate of an applied command means the command succeeded.
    if [[ $conflict == *'"originalReason":"applied"'* ]]; then exit 0; fi
    exit 5
  fi
  # A command's events are one transaction: read_committed shows all or none.
  applied="$(read_topic "$events_topic")"
  if [[ -n $applied ]]; then
    echo "$applied"
    exit 0
  fi
  sleep 0.5
done
echo "no outcome for command $command_id within ${timeout}s: is a worker running?" >&2
exit 1
