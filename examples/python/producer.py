#!/usr/bin/env python3
"""Send Arbiter commands from Python with confluent-kafka, and wait for their
outcomes.

    pip install confluent-kafka
    python3 examples/python/producer.py --brokers 127.0.0.1:9092 --wait < commands.jsonl

Reads one command JSON per line of stdin, produces each to the commands topic
keyed by its aggregateId, and with --wait prints each outcome the way
`arbiter send --wait` does:

    c-1 prod-123: applied at version 6
    c-2 prod-123: version_conflict: expected version 5, but found 6

Exit code: 0 when every command was applied (or, without --wait, sent); 1 when
a line is not a command, a send failed or an outcome did not come in time; 5
when some command was not applied.

The settings that matter (docs/producers.md):

- partitioner=murmur2_random: librdkafka's default partitioner,
  consistent_random, hashes keys with CRC32, so an aggregate's commands land
  on another partition than those of the Java client, of Arbiter's Go client
  and of the arbiter CLI, and commands for one aggregate from different
  producers lose their order. Correctness still holds (Redis decides every
  version), but order does not.
- enable.idempotence=true: a produce retried by the client never writes a
  command twice.
- isolation.level=read_committed on the outcome consumer (librdkafka's
  default, set here anyway): records of aborted transactions are published
  again later, and a read_uncommitted reader would see them twice.
"""

import argparse
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--brokers", default="127.0.0.1:9092")
    p.add_argument("--commands-topic", default="commands")
    p.add_argument("--events-topic", default="events")
    p.add_argument("--conflicts-topic", default="conflicts")
    p.add_argument("--wait", action="store_true", help="wait for and print each outcome")
    p.add_argument("--wait-timeout", type=float, default=60.0, help="seconds to wait for the outcomes")
    return p.parse_args()


def header(msg, name):
    for key, value in msg.headers() or []:
        if key == name:
            return value.decode("utf-8")
    return None


class OutcomeFollower:
    """Follows the events and conflicts topics from their current ends.

    Start it before producing: the outcome of a command produced afterwards is
    at or after those offsets. Records are matched on the record key (the
    aggregate ID) and the header arbiter-command-id, so unrelated records are
    never decoded.
    """

    def __init__(self, brokers, events_topic, conflicts_topic):
        self.events_topic = events_topic
        self.consumer = Consumer({
            "bootstrap.servers": brokers,
            # Partitions are assigned by hand; the group is never joined
            # nor committed to, but librdkafka wants a group.id.
            "group.id": "arbiter-example-" + uuid.uuid4().hex,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        })
        assignment = []
        for topic in (events_topic, conflicts_topic):
            metadata = self.consumer.list_topics(topic, timeout=10)
            partitions = metadata.topics[topic].partitions
            if metadata.topics[topic].error is not None or not partitions:
                raise KafkaException(f"topic {topic} does not exist; create it (arbiter topics create)")
            for partition in partitions:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                assignment.append(TopicPartition(topic, partition, high))
        self.consumer.assign(assignment)

    def wait(self, awaited, timeout):
        """Yields (command, outcome line, applied) until every awaited
        command -- a dict of (aggregateId, id) to command -- is answered or
        the timeout passes."""
        # Events of one command are contiguous on their partition and in one
        # transaction. This example takes a command's events as complete at
        # the next record on that partition or when a poll comes back empty;
        # Arbiter's Go client is exact (it also reads the transaction
        # markers, which librdkafka does not hand over).
        collecting = {}  # partition -> (key, [events])
        deadline = time.monotonic() + timeout

        def finish(partition):
            key, evts = collecting.pop(partition)
            command = awaited.pop(key, None)
            if command is not None:
                return command, f"{command['id']} {command['aggregateId']}: applied at version {evts[-1]['version']}", True
            return None

        while awaited and time.monotonic() < deadline:
            msg = self.consumer.poll(0.5)
            if msg is None:
                for partition in list(collecting):
                    done = finish(partition)
                    if done:
                        yield done
                continue
            if msg.error():
                print(f"reading outcomes: {msg.error()}", file=sys.stderr)
                continue
            key = (msg.key().decode("utf-8") if msg.key() else "", header(msg, "arbiter-command-id"))
            if msg.topic() == self.events_topic:
                partition = msg.partition()
                if partition in collecting and collecting[partition][0] != key:
                    done = finish(partition)
                    if done:
                        yield done
                if key in awaited:
                    collecting.setdefault(partition, (key, []))[1].append(json.loads(msg.value()))
                continue
            if key not in awaited:
                continue
            command = awaited.pop(key)
            conflict = json.loads(msg.value())
            if conflict["reason"] == "duplicate" and conflict.get("originalReason") == "applied":
                yield command, f"{command['id']} {command['aggregateId']}: applied at version {conflict['originalVersion']} (a resend: it was applied before)", True
            else:
                yield command, f"{command['id']} {command['aggregateId']}: {conflict['reason']}: {conflict['message']}", False
        for partition in list(collecting):
            done = finish(partition)
            if done:
                yield done

    def close(self):
        self.consumer.close()


def main():
    args = parse_args()
    follower = OutcomeFollower(args.brokers, args.events_topic, args.conflicts_topic) if args.wait else None
    producer = Producer({
        "bootstrap.servers": args.brokers,
        "partitioner": "murmur2_random",
        "enable.idempotence": True,
        "linger.ms": 5,
    })
    failed = 0
    awaited = {}

    def delivered(err, msg):
        nonlocal failed
        if err is not None:
            failed += 1
            print(f"command for aggregate {msg.key().decode()}: not sent: {err}", file=sys.stderr)

    for number, line in enumerate(sys.stdin, start=1):
        if not line.strip():
            continue
        try:
            command = json.loads(line)
            aggregate_id = command["aggregateId"]
            command_id = command["id"]
            if not isinstance(aggregate_id, str) or not isinstance(command_id, str):
                raise ValueError("id and aggregateId must be strings")
        except (ValueError, KeyError, TypeError) as e:
            failed += 1
            print(f"line {number}: not a command: {e}; not sent", file=sys.stderr)
            continue
        if follower is not None:
            awaited[(aggregate_id, command_id)] = command
        # The record key must be the aggregateId, byte for byte.
        producer.produce(args.commands_topic, key=aggregate_id.encode("utf-8"), value=line.strip().encode("utf-8"), on_delivery=delivered)
        producer.poll(0)
    if producer.flush(30) > 0:
        failed += 1
        print("some commands were not acknowledged within 30 s", file=sys.stderr)

    not_applied = 0
    if follower is not None:
        for _command, outcome, applied in follower.wait(awaited, args.wait_timeout):
            print(outcome, flush=True)
            if not applied:
                not_applied += 1
        follower.close()
        if awaited:
            failed += len(awaited)
            print(f"{len(awaited)} commands got no outcome within {args.wait_timeout} s: is a worker running?", file=sys.stderr)
    if failed:
        return 1
    return 5 if not_applied else 0


if __name__ == "__main__":
    sys.exit(main())
