package versionstore

import (
	"context"
	"strconv"
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/redis/go-redis/v9"
)

// commitScript advances one aggregate atomically: it checks Redis still
// holds Arbiter's data (the amnesia marker), checks the aggregate is still at
// the version the decision was made on (fencing off any other worker that
// moved it meanwhile), checks no command is decided yet, then writes the new
// version and snapshot and records each command's decision and outcome.
//
// KEYS[1]      the aggregate hash
// KEYS[2]      the amnesia marker of the aggregate's slot
// KEYS[3..5]   the decision hashes of the time buckets before, of and after now
// KEYS[6]      the decided watermarks of the aggregate's slot (partition -> next offset)
// KEYS[6+i]    the outcome key of the i-th command (i = 1..n)
// KEYS[7+n]    the aggregate's recent-events list (the last key)
// ARGV[1]      the version the decision was made on
// ARGV[2]      the new version
// ARGV[3]      the aggregate type
// ARGV[4]      the new state snapshot
// ARGV[5]      the outcome TTL in milliseconds
// ARGV[6]      when the current bucket's decision hash expires (Unix ms)
// ARGV[7]      the commands partition of the decided records
// ARGV[8]      the next offset after the last of them ("0": none)
// ARGV[9]      the watermark Redis must hold for that partition ("0": none)
// ARGV[9+3i-2] the i-th command's ID
// ARGV[9+3i-1] its encoded decision
// ARGV[9+3i]   its encoded outcome
// ARGV[10+3n]  how many entries the recent-events list keeps
// ARGV[11+3n..] the applied events' encoded recent-events entries, in order
//
// Each Redis call a script makes costs about as much again as the command
// itself, so the script makes few: one HMGET per decision bucket for all the
// commands, one HSET for all their decisions, and the decided watermark is
// only raised when it moves (the changes of a batch mostly find it raised by
// the batch's other aggregates).
//
// It returns {1, newVersion} on success, {0, actualVersion} when the version
// moved, {2, i} when the i-th command was already decided, {3, 0} when the
// marker is missing, and {4, heldWatermark} when Redis holds a lower
// watermark than ARGV[9]: it went back in time.
var commitScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 0 then
  return {3, 0}
end
local held = 0
if ARGV[9] ~= '0' or ARGV[8] ~= '0' then
  held = tonumber(redis.call('ZSCORE', KEYS[6], ARGV[7]) or '0')
  if held < tonumber(ARGV[9]) then
    return {4, held}
  end
end
local current = redis.call('HGET', KEYS[1], 'v') or '0'
if current ~= ARGV[1] then
  return {0, tonumber(current)}
end
local n = #KEYS - 7
local ids = {}
for i = 1, n do
  ids[i] = ARGV[9 + 3 * i - 2]
end
if n > 0 then
  for bucket = 3, 5 do
    local found = redis.call('HMGET', KEYS[bucket], unpack(ids))
    for i = 1, n do
      if found[i] then
        return {2, i}
      end
    end
  end
end
if ARGV[2] ~= ARGV[1] then
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 't', ARGV[3], 's', ARGV[4])
  local first = 11 + 3 * n
  if #ARGV >= first then
    redis.call('RPUSH', KEYS[#KEYS], unpack(ARGV, first, #ARGV))
    redis.call('LTRIM', KEYS[#KEYS], -tonumber(ARGV[first - 1]), -1)
  end
end
if n > 0 then
  local decisions = {}
  for i = 1, n do
    decisions[2 * i - 1] = ids[i]
    decisions[2 * i] = ARGV[9 + 3 * i - 1]
  end
  redis.call('HSET', KEYS[4], unpack(decisions))
  for i = 1, n do
    redis.call('SET', KEYS[6 + i], ARGV[9 + 3 * i], 'PX', ARGV[5])
  end
  redis.call('PEXPIREAT', KEYS[4], ARGV[6])
  if tonumber(ARGV[8]) > held then
    redis.call('ZADD', KEYS[6], 'GT', ARGV[8], ARGV[7])
  end
end
return {1, tonumber(ARGV[2])}
`)

// Change is the decided advance of one aggregate: from the version the
// decisions were made on to its new version, with the new state snapshot and
// the outcome of every command decided against it.
type Change struct {
	AggregateID string
	// FromVersion is the version the decisions were made on.
	FromVersion int64
	// ToVersion is the version after the applied commands' events; equal
	// to FromVersion when none was applied.
	ToVersion int64
	// Type is the aggregate type that produced State.
	Type string
	// State is the snapshot at ToVersion.
	State []byte
	// Outcomes are recorded under their command IDs.
	Outcomes []Outcome
	// Events are the applied commands' events, in version order, for the
	// recent-events list; the store keeps the last Options.RecentEvents of
	// them and drops payloads over Options.RecentPayloadBytes.
	Events []RecentEvent
	// Partition is the commands partition the outcomes' records came
	// from, and NextOffset the offset after the last of them: the script
	// raises the partition's decided watermark in the aggregate's slot to
	// it. 0: the watermark is left alone.
	Partition  int32
	NextOffset int64
	// Floor is the decided watermark Redis must hold for Partition in the
	// aggregate's slot: the worker saw it there, or wrote it itself. A
	// lower one means Redis went back in time, and nothing is written
	// (a *RollbackError). 0: not checked.
	Floor int64
}

// ErrFenced is returned by Commit when an aggregate was no longer at the
// version its decisions were made on, or one of its commands was already
// decided: another worker got there first. Nothing of that aggregate's change
// was written; reload and decide again. Use errors.As with *FencedError for
// the details.
var ErrFenced = errors.New("aggregate changed since it was loaded")

// FencedError names the aggregate whose change was refused.
type FencedError struct {
	AggregateID string
	// ExpectedVersion is the version the change was decided on.
	ExpectedVersion int64
	// ActualVersion is the version Redis holds; equal to ExpectedVersion
	// when a command outcome was already recorded.
	ActualVersion int64
	// CommandID is set when a command's outcome was already recorded.
	CommandID string
}

// Error implements error.
func (e *FencedError) Error() string {
	if e.CommandID != "" {
		return "aggregate " + e.AggregateID + ": command " + e.CommandID + " was already decided by another worker"
	}
	return "aggregate " + e.AggregateID + ": decided on version " + strconv.FormatInt(e.ExpectedVersion, 10) +
		" but Redis holds version " + strconv.FormatInt(e.ActualVersion, 10)
}

// Is makes errors.Is(err, ErrFenced) true.
func (e *FencedError) Is(target error) bool { return target == ErrFenced }

// Commit applies the changes, one script call per aggregate, pipelined in one
// round trip (per Redis node on a cluster). Each aggregate's change is atomic;
// changes of different aggregates are independent. It returns nil when every
// change was written, a *FencedError (joined, one per refused aggregate) when
// some were refused, or another error when Redis could not be reached — which
// is ambiguous: some scripts may have run.
func (s *Store) Commit(ctx context.Context, changes []Change) error {
	if len(changes) == 0 {
		return nil
	}
	// PX 0 would fail after the script wrote the version.
	outcomeTTL := strconv.FormatInt(max(s.opts.OutcomeTTL.Milliseconds(), 1), 10)
	bucketWidth := max(s.opts.DedupeTTL.Milliseconds(), 1)
	keys := make([][]string, len(changes))
	args := make([][]any, len(changes))
	for i, change := range changes {
		bucket, decisionKeys := s.decisionBuckets(change.AggregateID)
		// A bucket's decisions stay until the end of the next bucket: at
		// least DedupeTTL, at most twice that.
		expireAt := strconv.FormatInt((bucket+2)*bucketWidth, 10)
		k := make([]string, 0, 6+len(change.Outcomes))
		a := make([]any, 0, 10+3*len(change.Outcomes)+len(change.Events))
		k = append(k, s.aggregateKey(change.AggregateID), s.markerKey(change.AggregateID))
		k = append(k, decisionKeys[:]...)
		k = append(k, s.watermarkKey(change.AggregateID))
		a = append(a,
			strconv.FormatInt(change.FromVersion, 10),
			strconv.FormatInt(change.ToVersion, 10),
			change.Type,
			change.State,
			outcomeTTL,
			expireAt,
			strconv.FormatInt(int64(change.Partition), 10),
			strconv.FormatInt(max(change.NextOffset, 0), 10),
			strconv.FormatInt(max(change.Floor, 0), 10),
		)
		for _, outcome := range change.Outcomes {
			k = append(k, s.outcomeKey(change.AggregateID, outcome.CommandID))
			a = append(a, outcome.CommandID, encodeDecision(outcome.Decision()), encodeOutcome(outcome))
		}
		k = append(k, s.recentKey(change.AggregateID))
		a = append(a, s.recentArgs(change)...)
		keys[i], args[i] = k, a
	}

	pending := make([]int, len(changes))
	for i := range pending {
		pending[i] = i
	}
	var fenced []error
	amnesia := 0
	var firstAmnesia error
	for attempt := 0; len(pending) > 0; attempt++ {
		pipe := s.client.Pipeline()
		results := make([]*redis.Cmd, len(pending))
		for j, i := range pending {
			results[j] = commitScript.EvalSha(ctx, pipe, keys[i], args[i]...)
		}
		_, execErr := pipe.Exec(ctx)
		var noScript []int
		for j, i := range pending {
			err := results[j].Err()
			if err != nil {
				if isNoScript(err) {
					noScript = append(noScript, i)
					continue
				}
				return errors.Wrapf(err, "commit version of aggregate %s (%d changes in the batch)", changes[i].AggregateID, len(changes))
			}
			if err := fencedResult(changes[i], results[j].Val()); err != nil {
				if errors.Is(err, ErrAmnesia) {
					if amnesia == 0 {
						firstAmnesia = err
					}
					amnesia++
					continue
				}
				fenced = append(fenced, err)
			}
		}
		if execErr != nil && len(noScript) == 0 {
			return errors.Wrapf(execErr, "commit %d aggregate versions", len(changes))
		}
		if len(noScript) > 0 {
			// The script cache is empty after a Redis restart or failover;
			// a NOSCRIPT reply means the script did not run, so loading it
			// and sending those calls again is safe.
			if attempt > 2 {
				return errors.Newf("redis keeps answering NOSCRIPT after loading the commit script")
			}
			if err := commitScript.Load(ctx, s.client).Err(); err != nil {
				return errors.Wrap(err, "load the commit script into redis")
			}
		}
		pending = noScript
	}
	if amnesia > 0 {
		return errors.Wrapf(firstAmnesia, "%d of %d aggregates refused", amnesia, len(changes))
	}
	return errors.Join(fenced...)
}

func isNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
}

func fencedResult(change Change, val any) error {
	reply, ok := val.([]any)
	if !ok || len(reply) != 2 {
		return errors.Newf("aggregate %s: unexpected commit script reply %v", change.AggregateID, val)
	}
	status, _ := reply[0].(int64)
	detail, _ := reply[1].(int64)
	switch status {
	case 1:
		return nil
	case 0:
		return &FencedError{AggregateID: change.AggregateID, ExpectedVersion: change.FromVersion, ActualVersion: detail}
	case 3:
		return errors.Wrapf(ErrAmnesia, "aggregate %s", change.AggregateID)
	case 4:
		return &RollbackError{AggregateID: change.AggregateID, Partition: change.Partition, Held: detail, Expected: change.Floor}
	case 2:
		commandID := ""
		if detail >= 1 && int(detail) <= len(change.Outcomes) {
			commandID = change.Outcomes[detail-1].CommandID
		}
		return &FencedError{AggregateID: change.AggregateID, ExpectedVersion: change.FromVersion, ActualVersion: change.FromVersion, CommandID: commandID}
	default:
		return errors.Newf("aggregate %s: unexpected commit script status %d", change.AggregateID, status)
	}
}
