// Package verify checks a recorded history of Arbiter's topics against the
// guarantees the processor makes: every command record gets exactly one
// outcome (its events, or one conflict record), each aggregate's event
// versions run 1, 2, 3… without gaps or repeats, a command applied with
// expectedVersion N starts at version N+1, no record of an aborted
// transaction is visible to read_committed consumers, and Redis holds each
// aggregate's last event version.
//
// Read takes the history from Kafka, RedisVersions the versions from Redis,
// and Check compares them without any I/O. Run it on a quiescent system
// (workers caught up, no producer mid-transaction): a command whose outcome
// is still in flight is reported as having none.
package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sort"
	"sync"

	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/internal/topicread"
)

// Config configures Read.
type Config struct {
	// Brokers are the Kafka seed brokers. Required.
	Brokers []string
	// CommandsTopic is the topic services produce commands to.
	// default: "commands"
	CommandsTopic string
	// EventsTopic is the topic the workers publish events to.
	// default: "events"
	EventsTopic string
	// ConflictsTopic is the topic the workers publish conflicts to.
	// default: "conflicts"
	ConflictsTopic string
	// KafkaOptions are added, after Read's own, to the options of every
	// Kafka client Read creates: TLS, SASL, client ID. Options that choose
	// what to consume or the isolation level would break the read.
	KafkaOptions []kgo.Opt
	// KcatProperties are the librdkafka properties of CrossCheck's kcat
	// read (kafkaclient.Config.LibrdkafkaProperties): security settings
	// matching KafkaOptions. default: none
	KcatProperties map[string]string
}

func (c *Config) setDefaults() {
	events.SetDefaultTopics(&c.CommandsTopic, &c.EventsTopic, &c.ConflictsTopic)
}

// Validate reports every problem of the configuration at once.
func (c Config) Validate() error {
	var problems []error
	if len(c.Brokers) == 0 {
		problems = append(problems, errors.New("verify: Brokers is empty"))
	}
	c.setDefaults() // a copy: empty names stand for the defaults
	if err := events.ValidateTopics(c.CommandsTopic, c.EventsTopic, c.ConflictsTopic); err != nil {
		problems = append(problems, errors.Wrap(err, "verify"))
	}
	return errors.Join(problems...)
}

// Position locates a record in its topic.
type Position struct {
	Partition int32
	Offset    int64
}

// String returns "partition/offset".
func (p Position) String() string { return fmt.Sprintf("%d/%d", p.Partition, p.Offset) }

func comparePositions(a, b Position) int {
	if a.Partition != b.Partition {
		if a.Partition < b.Partition {
			return -1
		}
		return 1
	}
	switch {
	case a.Offset < b.Offset:
		return -1
	case a.Offset > b.Offset:
		return 1
	}
	return 0
}

// History is what the three topics held when Read ran: every record visible
// to a read_committed consumer, in partition then offset order, plus the
// positions of the records that aborted transactions left in the events and
// conflicts topics.
type History struct {
	// CommandsTopic is the name conflicts' Source.Topic must carry; empty
	// accepts any.
	CommandsTopic string
	// Commands are the command records.
	Commands []CommandRecord
	// Events are the event records, control records left out.
	Events []EventRecord
	// Conflicts are the conflict records, control records left out.
	Conflicts []ConflictRecord
	// AbortedEvents are the positions of event records written in
	// transactions that were aborted, found by a read_uncommitted pass
	// from each producer's transaction markers. None of them may appear in
	// Events.
	AbortedEvents []Position
	// AbortedConflicts are the same for the conflicts topic.
	AbortedConflicts []Position
}

// CommandRecord is one record of the commands topic.
type CommandRecord struct {
	Position
	// Key is the record key, which should be the aggregate ID.
	Key string
	// Command is the decoded command; when Err is set, the fields that
	// could be read.
	Command commands.Command
	// Err is why the record is not a valid command (an
	// *commands.InvalidError), nil when it is one. The processor answers
	// such a record with an invalid conflict.
	Err error
}

// EventRecord is one record of the events topic.
type EventRecord struct {
	Position
	Event events.Event
	// Err is set when the record value is not an event.
	Err error
}

// ConflictRecord is one record of the conflicts topic.
type ConflictRecord struct {
	Position
	Conflict events.Conflict
	// Err is set when the record value is not a conflict.
	Err error
}

// Read reads the commands, events and conflicts topics from their start to
// the end they had when Read began, with read_committed, and reads them a
// second time with read_uncommitted to find the records of aborted
// transactions. It stops when ctx is done.
//
// The read ends where internal/topicread's Stable end is: the uncommitted
// pass, besides the aborted records, tells the committed pass which record
// is the last one it will be given below the last stable offset. That is not
// always the record just before it: when an aborted transaction's marker
// lies past the last stable offset (another transaction was still open), its
// records end the committed range and are filtered out, and waiting for them
// would never end.
func Read(ctx context.Context, cfg Config) (*History, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	records := make(map[string][]*kgo.Record, 3)
	ends, err := topicread.Read(ctx, topicread.Config{
		Topics:       []string{cfg.CommandsTopic, cfg.EventsTopic, cfg.ConflictsTopic},
		End:          topicread.Stable,
		KafkaOptions: slices.Concat([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...)}, cfg.KafkaOptions),
	}, func(rec *kgo.Record) error {
		records[rec.Topic] = append(records[rec.Topic], rec)
		return nil
	})
	if err != nil {
		return nil, err
	}
	h := &History{
		CommandsTopic:    cfg.CommandsTopic,
		AbortedEvents:    abortedPositions(ends[cfg.EventsTopic]),
		AbortedConflicts: abortedPositions(ends[cfg.ConflictsTopic]),
	}
	decodeRecords(h, records[cfg.CommandsTopic], records[cfg.EventsTopic], records[cfg.ConflictsTopic])
	return h, nil
}

func abortedPositions(partitions map[int32]topicread.Partition) []Position {
	var positions []Position
	for partition, p := range partitions {
		for _, offset := range p.Aborted {
			positions = append(positions, Position{Partition: partition, Offset: offset})
		}
	}
	slices.SortFunc(positions, comparePositions)
	return positions
}

// decodeRecords decodes the committed records into h, in partition and
// offset order, spreading the work over the CPUs.
func decodeRecords(h *History, commandRecords, eventRecords, conflictRecords []*kgo.Record) {
	byPosition := func(records []*kgo.Record) {
		sort.Slice(records, func(i, j int) bool {
			a, b := records[i], records[j]
			return a.Partition < b.Partition || a.Partition == b.Partition && a.Offset < b.Offset
		})
	}
	byPosition(commandRecords)
	byPosition(eventRecords)
	byPosition(conflictRecords)
	h.Commands = make([]CommandRecord, len(commandRecords))
	h.Events = make([]EventRecord, len(eventRecords))
	h.Conflicts = make([]ConflictRecord, len(conflictRecords))
	position := func(rec *kgo.Record) Position { return Position{Partition: rec.Partition, Offset: rec.Offset} }
	parallel(len(commandRecords), func(i int) {
		rec := commandRecords[i]
		// No size limit: a record the workers refuse as too large still
		// names its command, and its invalid conflict is matched by source.
		cmd, err := commands.Decode(rec.Key, rec.Value, math.MaxInt)
		h.Commands[i] = CommandRecord{Position: position(rec), Key: string(rec.Key), Command: cmd, Err: err}
	})
	parallel(len(eventRecords), func(i int) {
		rec := eventRecords[i]
		h.Events[i].Position = position(rec)
		if err := json.Unmarshal(rec.Value, &h.Events[i].Event); err != nil {
			h.Events[i].Err = errors.Wrapf(err, "decode the event at %s of topic %s", position(rec), rec.Topic)
		}
	})
	parallel(len(conflictRecords), func(i int) {
		rec := conflictRecords[i]
		h.Conflicts[i].Position = position(rec)
		if err := json.Unmarshal(rec.Value, &h.Conflicts[i].Conflict); err != nil {
			h.Conflicts[i].Err = errors.Wrapf(err, "decode the conflict at %s of topic %s", position(rec), rec.Topic)
		}
	})
}

// parallel runs fn(0..n-1) on up to GOMAXPROCS goroutines and returns when
// all calls have.
func parallel(n int, fn func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n/256+1)
	if workers <= 1 {
		for i := range n {
			fn(i)
		}
		return
	}
	var wg sync.WaitGroup
	chunk := (n + workers - 1) / workers
	for start := 0; start < n; start += chunk {
		end := min(start+chunk, n)
		wg.Go(func() {
			for i := start; i < end; i++ {
				fn(i)
			}
		})
	}
	wg.Wait()
}
