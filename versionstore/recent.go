package versionstore

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"strconv"

	"github.com/cockroachdb/errors"
	"github.com/redis/go-redis/v9"
)

// Defaults of the recent-events list kept per aggregate.
const (
	// DefaultRecentEvents is how many of an aggregate's last events are
	// kept for version conflicts and rebases.
	DefaultRecentEvents = 20
	// MaxRecentEvents bounds Options.RecentEvents: the commit script
	// passes the entries to one RPUSH, and Lua's stack takes a few
	// thousand arguments at most.
	MaxRecentEvents = 1000
	// DefaultRecentPayloadBytes is the largest event payload kept in the
	// list; a larger one is marked as left out.
	DefaultRecentPayloadBytes = 128
)

// RecentEvent is one of an aggregate's last events as the recent-events list
// keeps it: enough to tell a stale command's sender what changed since its
// expectedVersion, and to tell whether a rebase is safe, without reading the
// events topic.
type RecentEvent struct {
	// Version is the event's version.
	Version int64
	// Type is the event's type.
	Type string
	// Payload is the event's payload; nil when it has none or when it was
	// over Options.RecentPayloadBytes (then PayloadOmitted is set).
	Payload json.RawMessage
	// PayloadOmitted is set when the event has a payload that was too
	// large to keep.
	PayloadOmitted bool
}

// Payload markers of an encoded RecentEvent.
const (
	recentNoPayload = 0
	recentPayload   = 1
	recentOmitted   = 2
)

// encodeRecent encodes an entry of the recent-events list: version (varint),
// type length (uvarint), type, a payload marker byte, then the payload. The
// payload is dropped (and marked) when it is over limit bytes.
func encodeRecent(e RecentEvent, limit int) []byte {
	payload := e.Payload
	marker := byte(recentNoPayload)
	switch {
	case e.PayloadOmitted || len(payload) > limit:
		marker, payload = recentOmitted, nil
	case len(payload) > 0:
		marker = recentPayload
	}
	buf := make([]byte, 0, 2*binary.MaxVarintLen64+len(e.Type)+1+len(payload))
	buf = binary.AppendVarint(buf, e.Version)
	buf = binary.AppendUvarint(buf, uint64(len(e.Type)))
	buf = append(buf, e.Type...)
	buf = append(buf, marker)
	return append(buf, payload...)
}

// decodeRecent is the inverse of encodeRecent.
func decodeRecent(buf []byte) (RecentEvent, error) {
	var e RecentEvent
	version, n := binary.Varint(buf)
	if n <= 0 {
		return e, errors.New("recent event: bad version")
	}
	buf = buf[n:]
	typeLen, n := binary.Uvarint(buf)
	if n <= 0 || typeLen >= uint64(len(buf)-n) {
		return e, errors.New("recent event: bad type")
	}
	buf = buf[n:]
	e.Version, e.Type = version, string(buf[:typeLen])
	buf = buf[typeLen:]
	switch buf[0] {
	case recentNoPayload:
	case recentPayload:
		e.Payload = json.RawMessage(buf[1:])
	case recentOmitted:
		e.PayloadOmitted = true
	default:
		return e, errors.Newf("recent event: unknown payload marker %d", buf[0])
	}
	return e, nil
}

// recentKey returns the list of an aggregate's last events.
func (s *Store) recentKey(aggregateID string) string {
	return s.commandKey(aggregateID, "}:e", "")
}

// recentArgs returns the commit script's trailing arguments for a change:
// the list's length limit, then the encoded entries of its last events.
func (s *Store) recentArgs(change Change) []any {
	limit := s.opts.RecentEvents
	events := change.Events
	if len(events) > limit {
		events = events[len(events)-limit:]
	}
	args := make([]any, 0, 1+len(events))
	args = append(args, strconv.Itoa(limit))
	for _, e := range events {
		args = append(args, encodeRecent(e, s.opts.RecentPayloadBytes))
	}
	return args
}

// RecentWant names an aggregate whose recent events LoadRecent reads, and
// how many of its last ones are wanted.
type RecentWant struct {
	AggregateID string
	// Last is how many of the list's last entries to read: the events
	// after the oldest version a caller needs, up to the version it loaded.
	// 0 or less reads the whole list.
	Last int64
}

// LoadRecent reads the recent-events lists of the given aggregates in one
// pipelined round trip, each in version order, holding at most
// Options.RecentEvents of the aggregate's last events (fewer for a new
// aggregate, after `arbiter rebuild-versions`, or after Redis lost data),
// and of those only the wanted last ones. A store that keeps no recent
// events (Options.RecentEvents -1) answers without a round trip.
//
// A list is written by the same compare-and-set as the version, but read
// apart from it: a caller that needs the events up to a version it loaded
// must check the versions it got (another worker may have moved the
// aggregate since), as the processor does.
func (s *Store) LoadRecent(ctx context.Context, wants []RecentWant) (map[string][]RecentEvent, error) {
	recent := make(map[string][]RecentEvent, len(wants))
	if len(wants) == 0 || s.opts.RecentEvents <= 0 {
		return recent, nil
	}
	pipe := s.client.Pipeline()
	cmds := make([]*redis.StringSliceCmd, len(wants))
	for i, want := range wants {
		start := int64(0)
		if want.Last > 0 && want.Last < int64(s.opts.RecentEvents) {
			start = -want.Last
		}
		cmds[i] = pipe.LRange(ctx, s.recentKey(want.AggregateID), start, -1)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, errors.Wrapf(err, "load the recent events of %d aggregates", len(wants))
	}
	for i, want := range wants {
		id := want.AggregateID
		entries, err := cmds[i].Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, errors.Wrapf(err, "load the recent events of aggregate %s", id)
		}
		list := make([]RecentEvent, 0, len(entries))
		for _, entry := range entries {
			e, err := decodeRecent([]byte(entry))
			if err != nil {
				return nil, errors.Wrapf(err, "aggregate %s", id)
			}
			list = append(list, e)
		}
		recent[id] = list
	}
	return recent, nil
}

// RecentMemory returns what Redis reports (MEMORY USAGE) for an aggregate's
// recent-events list, in bytes; 0 when it has none. For benchmarks and tests
// that measure the per-aggregate memory budget.
func (s *Store) RecentMemory(ctx context.Context, aggregateID string) (int64, error) {
	n, err := s.client.MemoryUsage(ctx, s.recentKey(aggregateID), 0).Result()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return n, errors.Wrapf(err, "memory usage of the recent events of aggregate %s", aggregateID)
}
