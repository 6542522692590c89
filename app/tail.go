package app

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/internal/topicread"
	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"
)

const tailUsage = "usage: arbiter tail events|conflicts [--json] [--aggregate ID] [--from-start] [--limit N] [--exit-at-end] [flags]"

func (c *cli) tailCommand() *cobra.Command {
	var f commonFlags
	var opts tailOptions
	cmd := &cobra.Command{
		Use:       "tail events|conflicts",
		Short:     "print events or conflict records as they come (--json, --aggregate, --from-start, --limit N, --exit-at-end)",
		ValidArgs: []string{"events", "conflicts"},
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 || (args[0] != "events" && args[0] != "conflicts") {
				return usagef("tail what? %q\n%s", args, tailUsage)
			}
			return nil
		},
		RunE: c.run(func(ctx context.Context, args []string) error {
			return runTail(ctx, f, args[0], opts, c.stdout, c.stderr)
		}),
	}
	fs := cmd.Flags()
	f.register(fs)
	fs.BoolVar(&opts.asJSON, "json", false, "print each record's JSON value, one per line")
	fs.StringVar(&opts.aggregateID, "aggregate", "", "only the records of this aggregate")
	fs.BoolVar(&opts.fromStart, "from-start", false, "start at the beginning of the topic (default: at its end, now)")
	fs.IntVar(&opts.limit, "limit", 0, "exit after printing N records (0: no limit)")
	fs.BoolVar(&opts.exitAtEnd, "exit-at-end", false, "exit once every partition is read up to where it ended when tail started")
	return cmd
}

// tailOptions are tail's own flags.
type tailOptions struct {
	asJSON      bool
	aggregateID string
	fromStart   bool
	limit       int
	exitAtEnd   bool
}

// runTail prints the records of the events or conflicts topic, read with
// read_committed, as they come.
func runTail(ctx context.Context, f commonFlags, which string, opts tailOptions, stdout, stderr io.Writer) error {
	var topic string
	switch which {
	case "events":
		topic = f.eventsTopic
	case "conflicts":
		topic = f.conflictsTopic
	default:
		return usagef("tail what? %q\n%s", which, tailUsage)
	}
	if opts.limit < 0 {
		return usagef("--limit %d: give N >= 0", opts.limit)
	}
	if err := f.checkTopics(ctx, topic); err != nil {
		return err
	}
	clientOpts, err := f.kafkaOpts()
	if err != nil {
		return err
	}
	end := topicread.Follow
	if opts.exitAtEnd {
		end = topicread.Stable
	}
	// Without --from-start, at the last stable offsets: everything before
	// them is decided.
	ends, err := topicread.FindEnds(ctx, topicread.Config{
		Topics: []string{topic}, End: end, FromStable: !opts.fromStart, KafkaOptions: clientOpts, ListTimeout: 15 * time.Second,
	})
	switch {
	case ctx.Err() != nil:
		return nil
	case err != nil:
		return &unreachableError{err: errors.Wrapf(err, "list the offsets of topic %s; check --brokers", topic)}
	}
	client, err := kgo.NewClient(append(clientOpts,
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Control records tell where a partition ends when a transaction
		// marker is its last record.
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(500*time.Millisecond),
		kgo.ConsumePartitions(ends.Offsets(nil)),
	)...)
	if err != nil {
		return usagef("--brokers %q: %v", f.brokers, err)
	}
	defer client.Close()
	remaining := topicread.NewRemaining(ends)

	out := bufio.NewWriterSize(stdout, 64<<10)
	defer func() { _ = out.Flush() }()
	printed := 0
	for {
		if opts.exitAtEnd && remaining.Len() == 0 {
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
			remaining.Seen(rec)
			if rec.Attrs.IsControl() || (opts.aggregateID != "" && string(rec.Key) != opts.aggregateID) {
				continue
			}
			if printErr = printRecord(out, which, rec, opts.asJSON); printErr != nil {
				return printErr
			}
			printed++
			if opts.limit > 0 && printed >= opts.limit {
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
