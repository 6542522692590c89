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
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sort"
	"sync"

	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/events"
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
// Both reads use explicit partition assignments, no consumer group, and keep
// control records, so that each knows it has reached a partition's end even
// when a transaction marker is the last record before it.
func Read(ctx context.Context, cfg Config) (*History, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	topics := []string{cfg.CommandsTopic, cfg.EventsTopic, cfg.ConflictsTopic}

	base := []kgo.Opt{kgo.SeedBrokers(cfg.Brokers...), kgo.KeepControlRecords()}
	uncommitted, err := kgo.NewClient(slices.Concat(base, []kgo.Opt{kgo.FetchIsolationLevel(kgo.ReadUncommitted())}, cfg.KafkaOptions)...)
	if err != nil {
		return nil, errors.Wrap(err, "create the read_uncommitted Kafka client")
	}
	defer uncommitted.Close()
	bounds, err := listBounds(ctx, kadm.NewClient(uncommitted), topics)
	if err != nil {
		return nil, err
	}

	// The uncommitted pass comes first: besides the aborted records, it
	// tells the committed pass which record is the last one it will be
	// given below the last stable offset. That is not always the record
	// just before it: when an aborted transaction's marker lies past the
	// last stable offset (another transaction was still open), its records
	// end the committed range and are filtered out, and waiting for them
	// would never end.
	scans := make(map[string]map[int32]*transactionScan)
	uncommittedSpans := make(map[string]map[int32]*span)
	for topic, partitions := range bounds {
		scans[topic] = make(map[int32]*transactionScan)
		uncommittedSpans[topic] = make(map[int32]*span)
		for partition, b := range partitions {
			scans[topic][partition] = newTransactionScan(b.stable)
			uncommittedSpans[topic][partition] = &span{start: b.start, last: b.end - 1, limit: b.end}
		}
	}
	err = consume(ctx, uncommitted, uncommittedSpans, func(rec *kgo.Record) {
		scans[rec.Topic][rec.Partition].add(rec)
	})
	if err != nil {
		return nil, errors.Wrap(err, "read_uncommitted pass")
	}
	uncommitted.Close()
	for _, partitions := range scans {
		for _, scan := range partitions {
			scan.finish()
		}
	}

	committed, err := kgo.NewClient(slices.Concat(base, []kgo.Opt{kgo.FetchIsolationLevel(kgo.ReadCommitted())}, cfg.KafkaOptions)...)
	if err != nil {
		return nil, errors.Wrap(err, "create the read_committed Kafka client")
	}
	defer committed.Close()
	committedSpans := make(map[string]map[int32]*span)
	for topic, partitions := range bounds {
		committedSpans[topic] = make(map[int32]*span)
		for partition, b := range partitions {
			committedSpans[topic][partition] = &span{start: b.start, last: scans[topic][partition].lastVisible, limit: b.stable}
		}
	}
	records := make(map[string][]*kgo.Record, len(topics))
	err = consume(ctx, committed, committedSpans, func(rec *kgo.Record) {
		if !rec.Attrs.IsControl() {
			records[rec.Topic] = append(records[rec.Topic], rec)
		}
	})
	if err != nil {
		return nil, errors.Wrap(err, "read_committed pass")
	}
	committed.Close()

	h := &History{
		CommandsTopic:    cfg.CommandsTopic,
		AbortedEvents:    abortedPositions(scans[cfg.EventsTopic]),
		AbortedConflicts: abortedPositions(scans[cfg.ConflictsTopic]),
	}
	decodeRecords(h, records[cfg.CommandsTopic], records[cfg.EventsTopic], records[cfg.ConflictsTopic])
	return h, nil
}

// bounds are the offsets of one partition when Read began.
type bounds struct {
	start  int64 // log start offset
	stable int64 // last stable offset: the end for read_committed
	end    int64 // high watermark: the end for read_uncommitted
}

// listBounds lists the start, last stable and end offsets of every partition
// of topics. The last stable offsets are listed before the end offsets, so
// every transaction still open at the first listing starts at or after the
// last stable offset, and every marker of a transaction that ends below it
// lies below the end offset.
func listBounds(ctx context.Context, admin *kadm.Client, topics []string) (map[string]map[int32]bounds, error) {
	list := func(what string, fn func(context.Context, ...string) (kadm.ListedOffsets, error)) (kadm.ListedOffsets, error) {
		listed, err := fn(ctx, topics...)
		if err == nil {
			err = listed.Error()
		}
		if err != nil {
			return nil, errors.Wrapf(err, "list the %s offsets of topics %v (do they exist?)", what, topics)
		}
		return listed, nil
	}
	starts, err := list("start", admin.ListStartOffsets)
	if err != nil {
		return nil, err
	}
	stables, err := list("last stable", admin.ListCommittedOffsets)
	if err != nil {
		return nil, err
	}
	ends, err := list("end", admin.ListEndOffsets)
	if err != nil {
		return nil, err
	}
	result := make(map[string]map[int32]bounds, len(topics))
	for _, topic := range topics {
		result[topic] = make(map[int32]bounds)
	}
	var missing error
	ends.Each(func(end kadm.ListedOffset) {
		start, okStart := starts.Lookup(end.Topic, end.Partition)
		stable, okStable := stables.Lookup(end.Topic, end.Partition)
		if !okStart || !okStable {
			missing = errors.Newf("partition %d of topic %s appeared while its offsets were listed", end.Partition, end.Topic)
			return
		}
		result[end.Topic][end.Partition] = bounds{start: start.Offset, stable: min(stable.Offset, end.Offset), end: end.Offset}
	})
	if missing != nil {
		return nil, missing
	}
	return result, nil
}

// span is the part of a partition one pass reads.
type span struct {
	start int64 // the first offset to fetch
	last  int64 // the pass is done with the partition once it is given this offset or a later one
	limit int64 // records at or after this offset are past the snapshot and dropped
	done  bool
}

// consume reads every span with client, handing fn the records below each
// span's limit, until each span has been given its last offset.
func consume(ctx context.Context, client *kgo.Client, spans map[string]map[int32]*span, fn func(*kgo.Record)) error {
	assign := make(map[string]map[int32]kgo.Offset)
	remaining := 0
	for topic, partitions := range spans {
		for partition, s := range partitions {
			if s.last < s.start {
				s.done = true
				continue
			}
			if assign[topic] == nil {
				assign[topic] = make(map[int32]kgo.Offset)
			}
			assign[topic][partition] = kgo.NewOffset().At(s.start)
			remaining++
		}
	}
	if remaining == 0 {
		return nil
	}
	client.AddConsumePartitions(assign)
	for remaining > 0 {
		fetches := client.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return errors.Wrapf(err, "%d partitions not read to their end", remaining)
		}
		var fetchErr error
		fetches.EachError(func(topic string, partition int32, err error) {
			if fetchErr == nil {
				fetchErr = errors.Wrapf(err, "fetch partition %d of topic %s", partition, topic)
			}
		})
		if fetchErr != nil {
			return fetchErr
		}
		finished := make(map[string][]int32)
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			s := spans[p.Topic][p.Partition]
			if s == nil || s.done {
				return
			}
			for _, rec := range p.Records {
				if rec.Offset < s.limit {
					fn(rec)
				}
			}
			if n := len(p.Records); n > 0 && p.Records[n-1].Offset >= s.last {
				s.done = true
				remaining--
				finished[p.Topic] = append(finished[p.Topic], p.Partition)
			}
		})
		if len(finished) > 0 {
			client.RemoveConsumePartitions(finished)
		}
	}
	return nil
}

// Control record types, from the second int16 of a control record's key.
const (
	controlAbort  = 0
	controlCommit = 1
)

// transactionScan follows the transactions of one partition through a
// read_uncommitted pass.
type transactionScan struct {
	stable int64
	// open holds, per producer ID, the offsets of its transactional
	// records since its last marker.
	open    map[int64][]int64
	aborted []int64
	// lastVisible is the highest offset below stable that read_committed
	// (keeping control records) delivers; -1 when there is none.
	lastVisible int64
}

func newTransactionScan(stable int64) *transactionScan {
	return &transactionScan{stable: stable, open: make(map[int64][]int64), lastVisible: -1}
}

func (s *transactionScan) visible(offset int64) {
	if offset < s.stable && offset > s.lastVisible {
		s.lastVisible = offset
	}
}

func (s *transactionScan) add(rec *kgo.Record) {
	switch {
	case rec.Attrs.IsControl():
		s.visible(rec.Offset)
		if len(rec.Key) < 4 {
			return
		}
		switch binary.BigEndian.Uint16(rec.Key[2:4]) {
		case controlAbort:
			s.aborted = append(s.aborted, s.open[rec.ProducerID]...)
		case controlCommit:
			for _, offset := range s.open[rec.ProducerID] {
				s.visible(offset)
			}
		}
		delete(s.open, rec.ProducerID)
	case rec.Attrs.IsTransactional():
		s.open[rec.ProducerID] = append(s.open[rec.ProducerID], rec.Offset)
	default:
		s.visible(rec.Offset)
	}
}

// finish counts the records of transactions without a marker as visible when
// they lie below the last stable offset. That cannot happen with a broker
// keeping its promises (those transactions started at or after the last
// stable offset); if it did, the committed pass would wait for them until its
// context ends rather than stop early without them.
func (s *transactionScan) finish() {
	for _, offsets := range s.open {
		for _, offset := range offsets {
			s.visible(offset)
		}
	}
}

func abortedPositions(scans map[int32]*transactionScan) []Position {
	var positions []Position
	for partition, scan := range scans {
		for _, offset := range scan.aborted {
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
