package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const tailUsage = "usage: arbiter tail events|conflicts [--json] [--aggregate ID] [--from-start] [--limit N] [--exit-at-end] [flags]"

// runTail prints the records of the events or conflicts topic, read with
// read_committed, as they come.
func runTail(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f commonFlags
	fs := flag.NewFlagSet("tail", flag.ContinueOnError)
	f.register(fs)
	asJSON := fs.Bool("json", false, "print each record's JSON value, one per line")
	aggregateID := fs.String("aggregate", "", "only the records of this aggregate")
	fromStart := fs.Bool("from-start", false, "start at the beginning of the topic (default: at its end, now)")
	limit := fs.Int("limit", 0, "exit after printing N records (0: no limit)")
	exitAtEnd := fs.Bool("exit-at-end", false, "exit once every partition is read up to where it ended when tail started")
	// The topic may come before or after the flags.
	var which string
	if len(args) > 0 && (args[0] == "events" || args[0] == "conflicts") {
		which, args = args[0], args[1:]
	}
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if which == "" && fs.NArg() > 0 {
		which = fs.Arg(0)
		if err := parse(fs, fs.Args()[1:], stderr); err != nil {
			return err
		}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments %q\n%s", fs.Args(), tailUsage)
	}
	var topic string
	switch which {
	case "events":
		topic = f.eventsTopic
	case "conflicts":
		topic = f.conflictsTopic
	default:
		return usagef("tail what? %q\n%s", which, tailUsage)
	}
	if *limit < 0 {
		return usagef("--limit %d: give N >= 0", *limit)
	}
	if err := f.checkTopics(ctx, topic); err != nil {
		return err
	}
	opts, err := f.kafkaOpts()
	if err != nil {
		return err
	}
	client, err := kgo.NewClient(append(opts,
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Control records tell where a partition ends when a transaction
		// marker is its last record.
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(500*time.Millisecond),
	)...)
	if err != nil {
		return usagef("--brokers %q: %v", f.brokers, err)
	}
	defer client.Close()
	admin := kadm.NewClient(client)
	listCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	// The last stable offsets: everything before them is decided.
	ends, err := admin.ListCommittedOffsets(listCtx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return &unreachableError{err: errors.Wrapf(err, "list the end offsets of topic %s; check --brokers", topic)}
	}
	starts := ends
	if *fromStart {
		if starts, err = admin.ListStartOffsets(listCtx, topic); err == nil {
			err = starts.Error()
		}
		if err != nil {
			return &unreachableError{err: errors.Wrapf(err, "list the start offsets of topic %s; check --brokers", topic)}
		}
	}
	remaining := make(map[int32]int64) // partition → end offset, until read to it
	assign := make(map[int32]kgo.Offset)
	ends.Each(func(end kadm.ListedOffset) {
		start, _ := starts.Lookup(end.Topic, end.Partition)
		assign[end.Partition] = kgo.NewOffset().At(start.Offset)
		if end.Offset > start.Offset {
			remaining[end.Partition] = end.Offset
		}
	})
	client.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: assign})

	out := bufio.NewWriterSize(stdout, 64<<10)
	defer func() { _ = out.Flush() }()
	printed := 0
	for {
		if *exitAtEnd && len(remaining) == 0 {
			return nil
		}
		fetches := client.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			fmt.Fprintf(stderr, "arbiter: reading %s partition %d: %v (retrying)\n", topic, partition, err)
		})
		var printErr error
		iter := fetches.RecordIter()
		for !iter.Done() {
			rec := iter.Next()
			if end, ok := remaining[rec.Partition]; ok && rec.Offset+1 >= end {
				delete(remaining, rec.Partition)
			}
			if rec.Attrs.IsControl() || (*aggregateID != "" && string(rec.Key) != *aggregateID) {
				continue
			}
			if printErr = printRecord(out, which, rec, *asJSON); printErr != nil {
				return printErr
			}
			printed++
			if *limit > 0 && printed >= *limit {
				return nil
			}
		}
		if err := out.Flush(); err != nil {
			return errors.Wrap(err, "write to stdout")
		}
	}
}

func printRecord(out *bufio.Writer, which string, rec *kgo.Record, asJSON bool) error {
	if asJSON {
		_, _ = out.Write(rec.Value)
		return out.WriteByte('\n')
	}
	switch which {
	case "events":
		var e events.Event
		if err := json.Unmarshal(rec.Value, &e); err != nil {
			_, err = fmt.Fprintf(out, "partition %d offset %d: not an event: %v\n", rec.Partition, rec.Offset, err)
			return err
		}
		_, err := fmt.Fprintf(out, "%s %s %s (command %s)", e.Timestamp.Format(time.RFC3339Nano), e.ID, e.Type, e.CommandID)
		if len(e.Payload) > 0 {
			_, err = fmt.Fprintf(out, " %s", e.Payload)
		}
		if err == nil {
			err = out.WriteByte('\n')
		}
		return err
	default:
		var c events.Conflict
		if err := json.Unmarshal(rec.Value, &c); err != nil {
			_, err = fmt.Fprintf(out, "partition %d offset %d: not a conflict record: %v\n", rec.Partition, rec.Offset, err)
			return err
		}
		commandID := c.CommandID
		if commandID == "" {
			commandID = "(no id)"
		}
		_, err := fmt.Fprintf(out, "%s %s command %s %s: %s\n", c.Timestamp.Format(time.RFC3339Nano), c.AggregateID, commandID, c.Reason, c.Message)
		return err
	}
}
