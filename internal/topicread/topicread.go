// Package topicread reads transactional topics to their end: the one place
// that knows what "the end" of a partition is for a read_committed reader,
// used by the rebuild (processor.Rebuild), verify (internal/verify) and
// tail (app).
//
// A read_committed reader is given the records below a partition's last
// stable offset (LSO) that committed transactions or plain producers wrote,
// and, when it keeps control records, the transaction markers. It cannot
// wait for the record just before the LSO: when that record belongs to an
// aborted transaction whose marker lies past the LSO (another transaction
// was still open), it is filtered out and the marker is not given until the
// open transaction ends. So the end is named per partition as Last, the
// highest offset the reader will be given, found one of two ways (End).
package topicread

import (
	"context"
	"encoding/binary"
	"slices"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// End says which end of its partitions a read stops at.
type End int

const (
	// Stable ends at the last stable offsets the partitions had when the
	// read began: transactions open then are left out, aborted ones are
	// listed. Last is found by a read_uncommitted pass over the
	// transaction markers, which costs a second read of the range.
	// Verify's and tail's end.
	Stable End = iota
	// Settled first waits (up to SettleTimeout) until no transaction is
	// open on the topics, then ends at their high watermarks: nothing
	// written before the read began is left out. With no transaction open
	// the last record of each partition is a marker or a committed record,
	// which a reader keeping control records is given: no second pass.
	// The rebuild's end.
	Settled
	// Follow has no end: the reader follows the topics (tail without
	// --exit-at-end). Only the start offsets are listed; every partition
	// is Empty.
	Follow
)

// SettleTimeout bounds Settled's wait for open transactions to end; they
// end within their transaction timeout once their producers stop.
const SettleTimeout = 5 * time.Minute

// Config says what to read.
type Config struct {
	// Topics are read, every partition of each.
	Topics []string
	// End is where each partition's read stops. default: Stable
	End End
	// FromStable starts every partition at its last stable offset instead
	// of its log start offset: only what is decided from now on.
	FromStable bool
	// KafkaOptions make the clients: seed brokers, TLS, SASL, client ID.
	// The isolation level and KeepControlRecords are the reader's own.
	KafkaOptions []kgo.Opt
	// Logger is told while Settled waits. default: zap.NewNop()
	Logger *zap.Logger
	// ListTimeout bounds each listing of the offsets, so that unreachable
	// brokers fail fast. default: none (ctx alone)
	ListTimeout time.Duration
}

// Partition is one partition's range when the read began.
type Partition struct {
	// Start is the first offset to read; LogStart, LastStable and
	// HighWatermark the partition's offsets.
	Start, LogStart, LastStable, HighWatermark int64
	// Last is the highest offset a read_committed reader that keeps
	// control records is given below LastStable: the read of the partition
	// is done once it is given Last or a later offset. Start-1 when there
	// is nothing to read.
	Last int64
	// Aborted are the offsets of the records of aborted transactions at or
	// after Start, found by Stable's read_uncommitted pass; nil for
	// Settled.
	Aborted []int64
}

// Done tells whether a reader given offset is done with the partition.
func (p Partition) Done(offset int64) bool { return offset >= p.Last }

// Empty tells whether there is nothing to read in the partition.
func (p Partition) Empty() bool { return p.Last < p.Start }

// Ends are the partitions of the topics read, by topic then partition.
type Ends map[string]map[int32]Partition

// FindEnds lists the offsets of every partition of the topics and finds
// where a read_committed read of each ends.
func FindEnds(ctx context.Context, cfg Config) (Ends, error) {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	client, err := kgo.NewClient(slices.Concat([]kgo.Opt{kgo.KeepControlRecords()}, cfg.KafkaOptions, []kgo.Opt{kgo.FetchIsolationLevel(kgo.ReadUncommitted())})...)
	if err != nil {
		return nil, errors.Wrap(err, "create the read_uncommitted Kafka client")
	}
	defer client.Close()
	admin := kadm.NewClient(client)
	var ends Ends
	if cfg.End == Settled {
		ends, err = awaitSettled(ctx, admin, cfg)
	} else {
		ends, err = listOffsets(ctx, admin, cfg)
	}
	if err != nil {
		return nil, err
	}
	for _, partitions := range ends {
		for partition, p := range partitions {
			if cfg.FromStable {
				p.Start = p.LastStable
			}
			p.Last = p.Start - 1
			if cfg.End == Settled {
				p.Last = max(p.Last, p.HighWatermark-1)
			}
			partitions[partition] = p
		}
	}
	if cfg.End == Stable {
		if err := scanTransactions(ctx, client, ends); err != nil {
			return nil, err
		}
	}
	return ends, nil
}

// Read reads the topics from each partition's Start to its end with
// read_committed, handing fn every record that is not a control record, in
// offset order within a partition; an error from fn stops the read and is
// returned. It returns the ends it read to.
func Read(ctx context.Context, cfg Config, fn func(*kgo.Record) error) (Ends, error) {
	ends, err := FindEnds(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return ends, ReadEnds(ctx, cfg, ends, fn)
}

// ReadEnds is Read to ends found earlier by FindEnds with the same cfg.
func ReadEnds(ctx context.Context, cfg Config, ends Ends, fn func(*kgo.Record) error) error {
	client, err := kgo.NewClient(slices.Concat([]kgo.Opt{kgo.KeepControlRecords()}, cfg.KafkaOptions, []kgo.Opt{kgo.FetchIsolationLevel(kgo.ReadCommitted())})...)
	if err != nil {
		return errors.Wrap(err, "create the read_committed Kafka client")
	}
	defer client.Close()
	var fnErr error
	err = consume(ctx, client, ends, func(rec *kgo.Record) bool { return rec.Offset < ends[rec.Topic][rec.Partition].LastStable }, func(rec *kgo.Record) error {
		if rec.Attrs.IsControl() {
			return nil
		}
		fnErr = fn(rec)
		return fnErr
	})
	if fnErr != nil {
		return fnErr
	}
	return errors.Wrap(err, "read_committed pass")
}

// Remaining tracks the partitions a reader has not yet read to their end;
// a reader that follows a topic past its end (tail) tells it each record.
type Remaining struct {
	ends Ends
	left map[string]map[int32]bool
	n    int
}

// NewRemaining starts tracking the non-empty partitions of ends.
func NewRemaining(ends Ends) *Remaining {
	r := &Remaining{ends: ends, left: make(map[string]map[int32]bool)}
	for topic, partitions := range ends {
		for partition, p := range partitions {
			if p.Empty() {
				continue
			}
			if r.left[topic] == nil {
				r.left[topic] = make(map[int32]bool)
			}
			r.left[topic][partition] = true
			r.n++
		}
	}
	return r
}

// Seen records that the reader was given rec (control records included)
// and tells whether that finished its partition.
func (r *Remaining) Seen(rec *kgo.Record) bool {
	if !r.left[rec.Topic][rec.Partition] || !r.ends[rec.Topic][rec.Partition].Done(rec.Offset) {
		return false
	}
	delete(r.left[rec.Topic], rec.Partition)
	r.n--
	return true
}

// Len returns the number of partitions not yet read to their end.
func (r *Remaining) Len() int { return r.n }

// consume reads every non-empty partition of ends with client from its Start
// until it is given its Last offset, handing fn the records keep accepts; an
// error from fn stops it.
func consume(ctx context.Context, client *kgo.Client, ends Ends, keep func(*kgo.Record) bool, fn func(*kgo.Record) error) error {
	remaining := NewRemaining(ends)
	if remaining.Len() == 0 {
		return nil
	}
	client.AddConsumePartitions(ends.Offsets(remaining))
	for remaining.Len() > 0 {
		fetches := client.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return errors.Wrapf(err, "%d partitions not read to their end", remaining.Len())
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
		var fnErr error
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			if fnErr != nil || !remaining.left[p.Topic][p.Partition] {
				return
			}
			for _, rec := range p.Records {
				if keep(rec) {
					if fnErr = fn(rec); fnErr != nil {
						return
					}
				}
				if remaining.Seen(rec) {
					finished[p.Topic] = append(finished[p.Topic], p.Partition)
					break
				}
			}
		})
		if fnErr != nil {
			return fnErr
		}
		if len(finished) > 0 {
			client.RemoveConsumePartitions(finished)
		}
	}
	return nil
}

// Offsets returns the Start of the partitions of ends that remain, for
// kgo's ConsumePartitions or AddConsumePartitions; every partition when
// remaining is nil.
func (ends Ends) Offsets(remaining *Remaining) map[string]map[int32]kgo.Offset {
	offsets := make(map[string]map[int32]kgo.Offset)
	for topic, partitions := range ends {
		for partition, p := range partitions {
			if remaining != nil && !remaining.left[topic][partition] {
				continue
			}
			if offsets[topic] == nil {
				offsets[topic] = make(map[int32]kgo.Offset)
			}
			offsets[topic][partition] = kgo.NewOffset().At(p.Start)
		}
	}
	return offsets
}

// listOffsets lists the start, last stable and end offsets of every
// partition of topics. The last stable offsets are listed before the end
// offsets, so every transaction still open at the first listing starts at
// or after the last stable offset, and every marker of a transaction that
// ends below it lies below the end offset.
func listOffsets(ctx context.Context, admin *kadm.Client, cfg Config) (Ends, error) {
	topics := cfg.Topics
	if cfg.ListTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.ListTimeout)
		defer cancel()
	}
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
	highs, err := list("end", admin.ListEndOffsets)
	if err != nil {
		return nil, err
	}
	ends := make(Ends, len(topics))
	for _, topic := range topics {
		ends[topic] = make(map[int32]Partition)
	}
	var missing error
	highs.Each(func(high kadm.ListedOffset) {
		start, okStart := starts.Lookup(high.Topic, high.Partition)
		stable, okStable := stables.Lookup(high.Topic, high.Partition)
		if !okStart || !okStable {
			missing = errors.Newf("partition %d of topic %s appeared while its offsets were listed", high.Partition, high.Topic)
			return
		}
		ends[high.Topic][high.Partition] = Partition{
			Start: start.Offset, LogStart: start.Offset, LastStable: min(stable.Offset, high.Offset), HighWatermark: high.Offset,
		}
	})
	if missing != nil {
		return nil, missing
	}
	return ends, nil
}

// awaitSettled returns the offsets of the topics' partitions once no
// transaction is open on them: their last stable offsets equal their high
// watermarks.
func awaitSettled(ctx context.Context, admin *kadm.Client, cfg Config) (Ends, error) {
	topics, log := cfg.Topics, cfg.Logger
	deadline := time.Now().Add(SettleTimeout)
	for {
		ends, err := listOffsets(ctx, admin, cfg)
		if err != nil {
			return nil, err
		}
		open := 0
		for _, partitions := range ends {
			for _, p := range partitions {
				if p.LastStable != p.HighWatermark {
					open++
				}
			}
		}
		if open == 0 {
			return ends, nil
		}
		if time.Now().After(deadline) {
			return nil, errors.Newf("%d partitions of topics %v still have an open transaction after %v; stop their producers and retry", open, topics, SettleTimeout)
		}
		log.Info("waiting for open transactions to end (stop their producers)", zap.Strings("topics", topics), zap.Int("partitions", open))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// scanTransactions reads every partition of ends from its Start to its high
// watermark with client (read_uncommitted, keeping control records) and sets
// its Last and Aborted from the transaction markers.
func scanTransactions(ctx context.Context, client *kgo.Client, ends Ends) error {
	scans := make(map[string]map[int32]*transactionScan)
	whole := make(Ends)
	for topic, partitions := range ends {
		scans[topic] = make(map[int32]*transactionScan)
		whole[topic] = make(map[int32]Partition)
		for partition, p := range partitions {
			scans[topic][partition] = newTransactionScan(p.Start, p.LastStable)
			whole[topic][partition] = Partition{Start: p.Start, Last: p.HighWatermark - 1}
		}
	}
	err := consume(ctx, client, whole, func(rec *kgo.Record) bool { return rec.Offset <= whole[rec.Topic][rec.Partition].Last }, func(rec *kgo.Record) error {
		scans[rec.Topic][rec.Partition].add(rec)
		return nil
	})
	if err != nil {
		return errors.Wrap(err, "read_uncommitted pass")
	}
	for topic, partitions := range ends {
		for partition, p := range partitions {
			scan := scans[topic][partition]
			scan.finish()
			p.Last, p.Aborted = scan.lastVisible, scan.aborted
			partitions[partition] = p
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
	// (keeping control records) delivers; start-1 when there is none.
	lastVisible int64
}

func newTransactionScan(start, stable int64) *transactionScan {
	return &transactionScan{stable: stable, open: make(map[int64][]int64), lastVisible: start - 1}
}

func (s *transactionScan) visible(offset int64) {
	if offset < s.stable && offset > s.lastVisible {
		s.lastVisible = offset
	}
}

func (s *transactionScan) add(rec *kgo.Record) {
	s.addRecord(scanned{offset: rec.Offset, producerID: rec.ProducerID, control: rec.Attrs.IsControl(), transactional: rec.Attrs.IsTransactional(), key: rec.Key})
}

// scanned is what transactionScan reads of a record.
type scanned struct {
	offset, producerID     int64
	control, transactional bool
	key                    []byte
}

func (s *transactionScan) addRecord(rec scanned) {
	switch {
	case rec.control:
		s.visible(rec.offset)
		if len(rec.key) < 4 {
			return
		}
		switch binary.BigEndian.Uint16(rec.key[2:4]) {
		case controlAbort:
			s.aborted = append(s.aborted, s.open[rec.producerID]...)
		case controlCommit:
			for _, offset := range s.open[rec.producerID] {
				s.visible(offset)
			}
		}
		delete(s.open, rec.producerID)
	case rec.transactional:
		s.open[rec.producerID] = append(s.open[rec.producerID], rec.offset)
	default:
		s.visible(rec.offset)
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
