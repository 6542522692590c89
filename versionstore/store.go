// Package versionstore keeps each aggregate's version and state snapshot in
// Redis, and advances them with an atomic Lua compare-and-set that also
// records the outcome decided for each command.
//
// # Key layout
//
// Every key of one aggregate shares the hash tag {<aggregateId>}, so one
// script call touches one Redis Cluster slot. In keys, '\' in an aggregate ID
// is written "\\" and '}' is written "\]", so the tag always spans the whole
// ID and keys of different aggregates never coincide:
//
//	<prefix>:{<aggregateId>}            hash: v = version, t = aggregate type, s = state snapshot
//	<prefix>:{<aggregateId>}:d:<bucket> hash: command ID -> its decision (a few bytes), for the
//	                                    commands decided in one DedupeTTL-long time bucket;
//	                                    expires at the end of the next bucket
//	<prefix>:{<aggregateId>}:e          list: the aggregate's last events (version, type, small
//	                                    payload), at most RecentEvents, for version conflicts'
//	                                    eventsSince and rebases
//	<prefix>:{<aggregateId>}:c:<cmdId>  string: the decided outcome's records, for replays (OutcomeTTL;
//	                                    deleted once the outcome's Kafka transaction committed)
//	<prefix>:initialized                string: the marker that this Redis holds Arbiter's data
//	                                    (on Redis Cluster one per slot: <prefix>:{<slot tag>}:initialized)
//	<prefix>:decided, <prefix>:committed sorted sets: the watermarks per commands partition
//	                                    (see watermark.go; decided is per slot on Redis Cluster)
//	<prefix>:settings                   hash: the DedupeTTL Redis was initialised with
//
// The prefix defaults to "arbiter". Command IDs are scoped per aggregate:
// duplicate detection covers one aggregate's commands for at least DedupeTTL
// (at most twice that). Decisions are fields of small per-aggregate hashes,
// not keys of their own: a key with a TTL costs Redis about 100 bytes before
// its name and value, a field of a small hash a few.
//
// The marker guards against amnesia: a Redis that lost its data (restarted
// without persistence, failed over to an empty replica) must not be decided
// against, since every aggregate would look new. Every compare-and-set checks
// the marker and fails with ErrAmnesia without it; Init writes it, after
// rebuilding the versions from the events topic when there are any. A Redis
// that went back in time keeps its marker; the decided watermarks catch it
// (RollbackError).
package versionstore

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/cockroachdb/errors"
	"github.com/redis/go-redis/v9"
)

// Options configures a Store.
type Options struct {
	// KeyPrefix starts every key. default: "arbiter"
	KeyPrefix string
	// OutcomeTTL is how long a decided outcome's records are kept for a
	// replay when its Kafka transaction never commits: a worker that dies
	// between the compare-and-set and the commit must be replaced within
	// it. Workers delete the records once the transaction committed, so
	// this bounds memory only in that failure. default: 24h
	OutcomeTTL time.Duration
	// DedupeTTL is how long the short decision record of each command is
	// kept at least (at most twice as long): the window in which a second
	// record with the same command ID is recognised as a duplicate.
	// default: 24h
	DedupeTTL time.Duration
	// RecentEvents is how many of each aggregate's last events the
	// compare-and-set keeps in a list beside the version, for the
	// eventsSince of version conflicts and for rebases; negative keeps
	// none. Each entry holds the version, the type and the payload when it
	// is at most RecentPayloadBytes, so the list of one aggregate costs at
	// most RecentEvents × (RecentPayloadBytes + type length + 16) bytes
	// plus 256 for the list itself, by Redis's MEMORY USAGE
	// (TestRedisRecentEventsMemory checks it; BENCHMARKS.md has the
	// figures). At most MaxRecentEvents. default: 20
	RecentEvents int
	// RecentPayloadBytes is the largest event payload kept in the
	// recent-events list; a larger one is kept as "left out".
	// default: 128
	RecentPayloadBytes int
}

func (o *Options) setDefaults() {
	if o.KeyPrefix == "" {
		o.KeyPrefix = "arbiter"
	}
	if o.OutcomeTTL <= 0 {
		o.OutcomeTTL = 24 * time.Hour
	}
	if o.DedupeTTL <= 0 {
		o.DedupeTTL = 24 * time.Hour
	}
	switch {
	case o.RecentEvents == 0:
		o.RecentEvents = DefaultRecentEvents
	case o.RecentEvents < 0:
		o.RecentEvents = 0
	case o.RecentEvents > MaxRecentEvents:
		o.RecentEvents = MaxRecentEvents
	}
	if o.RecentPayloadBytes <= 0 {
		o.RecentPayloadBytes = DefaultRecentPayloadBytes
	}
}

// Store reads and advances aggregate versions in Redis. It is safe for
// concurrent use.
type Store struct {
	client  redis.UniversalClient
	opts    Options
	cluster bool
	now     func() time.Time
	// slotTags holds, on Redis Cluster, one hash tag per slot for the
	// per-slot amnesia markers; computed on first use.
	slotTagsOnce sync.Once
	slotTags     []string
}

// New returns a Store over a Redis client (a plain, failover or cluster
// client).
func New(client redis.UniversalClient, opts Options) *Store {
	opts.setDefaults()
	_, cluster := client.(*redis.ClusterClient)
	return &Store{client: client, opts: opts, cluster: cluster, now: time.Now}
}

// Options returns the store's options, defaults applied.
func (s *Store) Options() Options { return s.opts }

// Client returns the Redis client the store uses.
func (s *Store) Client() redis.UniversalClient { return s.client }

// Aggregate is an aggregate's state as Redis holds it. It is
// commands.Aggregate, so that *Store is a commands.Reader and a service that
// only sends commands needs no Redis client in its imports.
type Aggregate = commands.Aggregate

// CommandRef names a command whose recorded outcome is wanted.
type CommandRef struct {
	AggregateID string
	CommandID   string
}

func (s *Store) aggregateKey(aggregateID string) string {
	var b strings.Builder
	b.Grow(len(s.opts.KeyPrefix) + len(aggregateID) + 3)
	b.WriteString(s.opts.KeyPrefix)
	b.WriteString(":{")
	writeEscaped(&b, aggregateID)
	b.WriteString("}")
	return b.String()
}

func (s *Store) outcomeKey(aggregateID, commandID string) string {
	return s.commandKey(aggregateID, "}:c:", commandID)
}

// decisionKey returns the decision hash of an aggregate for one time bucket.
func (s *Store) decisionKey(aggregateID string, bucket int64) string {
	return s.commandKey(aggregateID, "}:d:", strconv.FormatInt(bucket, 10))
}

// decisionBuckets returns the time bucket of now and the keys of the
// decision hashes a lookup reads: the buckets before, of and after now, so
// that workers whose clocks differ by less than a bucket see each other's
// decisions.
func (s *Store) decisionBuckets(aggregateID string) (bucket int64, keys [3]string) {
	width := max(s.opts.DedupeTTL.Milliseconds(), 1)
	bucket = s.now().UnixMilli() / width
	for i := range keys {
		keys[i] = s.decisionKey(aggregateID, bucket-1+int64(i))
	}
	return bucket, keys
}

func (s *Store) commandKey(aggregateID, kind, commandID string) string {
	var b strings.Builder
	b.Grow(len(s.opts.KeyPrefix) + len(aggregateID) + len(commandID) + 6)
	b.WriteString(s.opts.KeyPrefix)
	b.WriteString(":{")
	writeEscaped(&b, aggregateID)
	b.WriteString(kind)
	b.WriteString(commandID)
	return b.String()
}

// markerKey returns the amnesia marker that guards an aggregate: one per
// Redis, or on Redis Cluster one per slot, in the aggregate's slot.
func (s *Store) markerKey(aggregateID string) string {
	if !s.cluster {
		return s.opts.KeyPrefix + ":initialized"
	}
	var b strings.Builder
	writeEscaped(&b, aggregateID)
	return s.slotMarkerKey(clusterSlot(b.String()))
}

func (s *Store) slotMarkerKey(slot int) string {
	s.slotTagsOnce.Do(func() { s.slotTags = slotTags() })
	return s.opts.KeyPrefix + ":{" + s.slotTags[slot] + "}:initialized"
}

// markerKeys returns every marker key.
func (s *Store) markerKeys() []string {
	if !s.cluster {
		return []string{s.opts.KeyPrefix + ":initialized"}
	}
	keys := make([]string, clusterSlots)
	for slot := range keys {
		keys[slot] = s.slotMarkerKey(slot)
	}
	return keys
}

// ErrAmnesia is returned when Redis has lost Arbiter's data: its marker is
// missing. Deciding against it would take every aggregate for new. Rebuild
// the versions from the events topic (arbiter rebuild-versions), which
// writes the marker again.
var ErrAmnesia = errors.New("redis has lost arbiter's data (no initialization marker): stop the workers or let them wait, and run 'arbiter rebuild-versions'")

// Initialized reports whether every amnesia marker is present.
func (s *Store) Initialized(ctx context.Context) (bool, error) {
	keys := s.markerKeys()
	pipe := s.client.Pipeline()
	cmds := make([]*redis.IntCmd, len(keys))
	for i, key := range keys {
		cmds[i] = pipe.Exists(ctx, key)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return false, errors.Wrap(err, "check the initialization marker")
	}
	for _, cmd := range cmds {
		if cmd.Val() == 0 {
			return false, nil
		}
	}
	return true, nil
}

// Init writes the amnesia markers: this Redis now holds Arbiter's data. Call
// it on a fresh deployment (no events yet) or after rebuilding the versions
// from the events topic, never on a Redis that lost data without a rebuild.
func (s *Store) Init(ctx context.Context) error {
	pipe := s.client.Pipeline()
	for _, key := range s.markerKeys() {
		// A new value each time: a worker waiting for a rebuild of a Redis
		// that went back in time (marker still there) sees it change.
		pipe.Set(ctx, key, time.Now().UTC().Format(time.RFC3339Nano), 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return errors.Wrap(err, "write the initialization marker")
	}
	return nil
}

// writeEscaped writes an aggregate ID so that it holds no '}': the hash tag
// then always spans the whole ID, and no aggregate's key can be mistaken for
// another's or for an outcome key. '\' becomes "\\" and '}' becomes "\]".
func writeEscaped(b *strings.Builder, aggregateID string) {
	if !strings.ContainsAny(aggregateID, `}\`) {
		b.WriteString(aggregateID)
		return
	}
	for i := 0; i < len(aggregateID); i++ {
		switch c := aggregateID[i]; c {
		case '\\':
			b.WriteString(`\\`)
		case '}':
			b.WriteString(`\]`)
		default:
			b.WriteByte(c)
		}
	}
}

// unescapeAggregateID is the inverse of writeEscaped.
func unescapeAggregateID(escaped string) (string, bool) {
	if !strings.Contains(escaped, `\`) {
		return escaped, true
	}
	var b strings.Builder
	for i := 0; i < len(escaped); i++ {
		if escaped[i] != '\\' {
			b.WriteByte(escaped[i])
			continue
		}
		if i+1 == len(escaped) {
			return "", false
		}
		i++
		switch escaped[i] {
		case '\\':
			b.WriteByte('\\')
		case ']':
			b.WriteByte('}')
		default:
			return "", false
		}
	}
	return b.String(), true
}

// Get returns one aggregate's version, type and state snapshot. An aggregate
// that does not exist has version 0.
func (s *Store) Get(ctx context.Context, aggregateID string) (Aggregate, error) {
	aggregates, _, err := s.Load(ctx, []string{aggregateID}, nil)
	if err != nil {
		return Aggregate{}, err
	}
	return aggregates[aggregateID], nil
}

// LoadRequest lists what one batch needs from Redis.
type LoadRequest struct {
	// AggregateIDs are the aggregates to read.
	AggregateIDs []string
	// Commands are the commands whose decisions are wanted.
	Commands []CommandRef
	// Forget are commands whose outcome records are no longer needed (their
	// transaction committed); they are deleted in the same round trip.
	Forget []CommandRef
	// Committed raises the committed watermarks (commands partition ->
	// the offset after the last record whose outcome committed), in the
	// same round trip.
	Committed map[int32]int64
	// Floors raises the committed floors on Redis Cluster (the decided
	// watermarks committed batches wrote per slot; see RaiseCommitted), in
	// the same round trip. Ignored on a single Redis.
	Floors map[ShardFloor]int64
}

// Load reads, in one pipelined round trip, the given aggregates and the
// decisions recorded for the given commands. Aggregates that do not exist
// are returned at version 0; commands without a decision are absent from the
// second map.
func (s *Store) Load(ctx context.Context, aggregateIDs []string, refs []CommandRef) (map[string]Aggregate, map[CommandRef]Decision, error) {
	return s.LoadBatch(ctx, LoadRequest{AggregateIDs: aggregateIDs, Commands: refs})
}

// LoadBatch is Load that also deletes the outcome records of req.Forget in
// the same round trip.
func (s *Store) LoadBatch(ctx context.Context, req LoadRequest) (map[string]Aggregate, map[CommandRef]Decision, error) {
	aggregates := make(map[string]Aggregate, len(req.AggregateIDs))
	decisions := make(map[CommandRef]Decision)
	if len(req.AggregateIDs) == 0 && len(req.Commands) == 0 && len(req.Forget) == 0 && len(req.Committed) == 0 && len(req.Floors) == 0 {
		return aggregates, decisions, nil
	}
	pipe := s.client.Pipeline()
	aggregateCmds := make([]*redis.SliceCmd, len(req.AggregateIDs))
	for i, id := range req.AggregateIDs {
		aggregateCmds[i] = pipe.HMGet(ctx, s.aggregateKey(id), "v", "t", "s")
	}
	// One HMGET per aggregate and bucket, for all its commands.
	type lookup struct {
		refs []CommandRef
		cmds [2]*redis.SliceCmd
	}
	lookups := make(map[string]*lookup)
	var lookupOrder []*lookup
	for _, ref := range req.Commands {
		l, ok := lookups[ref.AggregateID]
		if !ok {
			l = &lookup{}
			lookups[ref.AggregateID] = l
			lookupOrder = append(lookupOrder, l)
		}
		l.refs = append(l.refs, ref)
	}
	for _, l := range lookupOrder {
		fields := make([]string, len(l.refs))
		for i, ref := range l.refs {
			fields[i] = ref.CommandID
		}
		// The previous and the current bucket. A decision a worker whose
		// clock runs ahead wrote into the next bucket is not read here; the
		// compare-and-set, which checks all three, refuses to decide it
		// again, and the batch is retried once this clock has caught up.
		_, keys := s.decisionBuckets(l.refs[0].AggregateID)
		for i, key := range keys[:2] {
			l.cmds[i] = pipe.HMGet(ctx, key, fields...)
		}
	}
	for _, ref := range req.Forget {
		pipe.Unlink(ctx, s.outcomeKey(ref.AggregateID, ref.CommandID))
	}
	s.raiseCommitted(ctx, pipe, req.Committed, req.Floors)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, nil, errors.Wrapf(err, "load %d aggregates and %d command decisions", len(req.AggregateIDs), len(req.Commands))
	}
	for i, id := range req.AggregateIDs {
		aggregate, err := parseAggregate(id, aggregateCmds[i].Val())
		if err != nil {
			return nil, nil, err
		}
		aggregates[id] = aggregate
	}
	for _, l := range lookupOrder {
		for _, cmd := range l.cmds {
			if err := cmd.Err(); err != nil {
				return nil, nil, errors.Wrapf(err, "load the decisions on %d commands of aggregate %s", len(l.refs), l.refs[0].AggregateID)
			}
			for i, value := range cmd.Val() {
				text, ok := value.(string)
				if !ok {
					continue
				}
				ref := l.refs[i]
				decision, err := decodeDecision(ref.CommandID, []byte(text))
				if err != nil {
					return nil, nil, errors.Wrapf(err, "aggregate %s", ref.AggregateID)
				}
				decisions[ref] = decision
			}
		}
	}
	return aggregates, decisions, nil
}

// ErrOutcomeExpired is returned by LoadOutcomes when a command's decision is
// recorded but its outcome records are gone: its transaction never committed
// and OutcomeTTL passed before a worker replayed it.
var ErrOutcomeExpired = errors.New("the outcome records of a decided command expired before its replay")

// LoadOutcomes reads the outcome records of decided commands, for replaying
// them, in one pipelined round trip.
func (s *Store) LoadOutcomes(ctx context.Context, refs []CommandRef) (map[CommandRef]Outcome, error) {
	outcomes := make(map[CommandRef]Outcome, len(refs))
	if len(refs) == 0 {
		return outcomes, nil
	}
	pipe := s.client.Pipeline()
	cmds := make([]*redis.StringCmd, len(refs))
	for i, ref := range refs {
		cmds[i] = pipe.Get(ctx, s.outcomeKey(ref.AggregateID, ref.CommandID))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, errors.Wrapf(err, "load %d command outcomes", len(refs))
	}
	for i, ref := range refs {
		value, err := cmds[i].Bytes()
		if errors.Is(err, redis.Nil) {
			return nil, errors.Wrapf(ErrOutcomeExpired, "command %s of aggregate %s (raise OutcomeTTL / --outcome-ttl)", ref.CommandID, ref.AggregateID)
		}
		if err != nil {
			return nil, errors.Wrapf(err, "load outcome of command %s of aggregate %s", ref.CommandID, ref.AggregateID)
		}
		outcome, err := decodeOutcome(ref.CommandID, value)
		if err != nil {
			return nil, errors.Wrapf(err, "aggregate %s", ref.AggregateID)
		}
		outcomes[ref] = outcome
	}
	return outcomes, nil
}

func parseAggregate(id string, fields []any) (Aggregate, error) {
	aggregate := Aggregate{ID: id}
	if len(fields) != 3 || fields[0] == nil {
		return aggregate, nil
	}
	versionText, _ := fields[0].(string)
	version, err := strconv.ParseInt(versionText, 10, 64)
	if err != nil || version < 0 {
		return aggregate, errors.Newf("aggregate %s: stored version %q is not a version", id, versionText)
	}
	aggregate.Version = version
	if t, ok := fields[1].(string); ok {
		aggregate.Type = t
	}
	if state, ok := fields[2].(string); ok && state != "" {
		aggregate.State = []byte(state)
	}
	return aggregate, nil
}

// Put overwrites aggregates' versions, types and snapshots, pipelined in one
// round trip. It is for recovery tools (rebuilding Redis from the events
// topic) and must not run while workers process the same aggregates.
func (s *Store) Put(ctx context.Context, aggregates []Aggregate) error {
	if len(aggregates) == 0 {
		return nil
	}
	pipe := s.client.Pipeline()
	for _, a := range aggregates {
		pipe.HSet(ctx, s.aggregateKey(a.ID), "v", strconv.FormatInt(a.Version, 10), "t", a.Type, "s", a.State)
		// The list may not match the rewritten version; without it a
		// stale command is an ordinary conflict until new events come.
		pipe.Unlink(ctx, s.recentKey(a.ID))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return errors.Wrapf(err, "write %d aggregate versions", len(aggregates))
	}
	return nil
}

// Versions returns the version of every aggregate under the store's key
// prefix, read with SCAN in pages: a slow full pass for checkers and tools,
// never for the processing path. On a cluster client it scans every master.
func (s *Store) Versions(ctx context.Context) (map[string]int64, error) {
	versions := make(map[string]int64)
	prefix := s.opts.KeyPrefix + ":{"
	pattern := globEscape(prefix) + "*}"
	scan := func(ctx context.Context, client redis.UniversalClient) error {
		iter := client.Scan(ctx, 0, pattern, 1000).Iterator()
		var keys []string
		flush := func() error {
			if len(keys) == 0 {
				return nil
			}
			pipe := client.Pipeline()
			cmds := make([]*redis.StringCmd, len(keys))
			for i, key := range keys {
				cmds[i] = pipe.HGet(ctx, key, "v")
			}
			if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
				return errors.Wrap(err, "read aggregate versions")
			}
			for i, key := range keys {
				escaped := key[len(prefix) : len(key)-1]
				aggregateID, ok := unescapeAggregateID(escaped)
				if !ok {
					continue
				}
				version, err := cmds[i].Int64()
				if err != nil {
					continue
				}
				versions[aggregateID] = version
			}
			keys = keys[:0]
			return nil
		}
		for iter.Next(ctx) {
			key := iter.Val()
			// Command and decision keys hold "}:c:" or "}:d:" inside; an
			// aggregate key's escaped ID holds no '}'.
			if len(key) < len(prefix)+2 || strings.Contains(key[len(prefix):len(key)-1], "}") {
				continue
			}
			keys = append(keys, key)
			if len(keys) == 1000 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if err := iter.Err(); err != nil {
			return errors.Wrap(err, "scan aggregate keys")
		}
		return flush()
	}
	if cluster, ok := s.client.(*redis.ClusterClient); ok {
		var mu sync.Mutex
		err := cluster.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			mu.Lock()
			defer mu.Unlock()
			return scan(ctx, node)
		})
		return versions, err
	}
	return versions, scan(ctx, s.client)
}

// globEscape escapes the characters Redis's MATCH treats as special.
func globEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
