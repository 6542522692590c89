package commands

import (
	"context"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/cockroachdb/errors"
)

// Aggregate is an aggregate's version and state snapshot as a Reader found
// it (versionstore.Aggregate is this type).
type Aggregate struct {
	// ID is the aggregate ID.
	ID string
	// Version is the number of events the aggregate has; 0 means it does
	// not exist.
	Version int64
	// Type is the aggregate type that produced State, "" when untyped.
	Type string
	// State is the snapshot of the aggregate's state at Version: the JSON
	// of the aggregate type's state (versionstore.DecodeState decodes it).
	State []byte
}

// Reader reads one aggregate's version and state snapshot for
// RetryOnConflict. *versionstore.Store satisfies it, and so does any
// versionstore.Reader; a read model or cache can stand in for Redis, and
// this package does not import a Redis client.
type Reader interface {
	// Get returns the aggregate at its current version; an aggregate that
	// does not exist is returned at version 0 with no state.
	Get(ctx context.Context, aggregateID string) (Aggregate, error)
}

// RetryPolicy says how often and how patiently RetryOnConflict tries again
// after a version conflict. Zero fields take the defaults noted.
type RetryPolicy struct {
	// MaxAttempts is the most commands sent, the first included.
	// default: 5
	MaxAttempts int
	// InitialBackoff is the pause before the second attempt; each later
	// pause doubles, up to MaxBackoff. Each pause is drawn at random between
	// half and all of that ("equal jitter"), so that two clients that
	// conflicted with each other do not retry in step. default: 50ms
	InitialBackoff time.Duration
	// MaxBackoff caps the pause between attempts. default: 2s
	MaxBackoff time.Duration
	// Advance, when set, saves the read after a version conflict whose
	// eventsSince is complete (ConflictError.EventsSinceComplete) and
	// starts at the version the attempt read: it applies those events to
	// the aggregate as read, and its result is the next attempt's Current
	// (RetryParams.Advanced set). It returns false to read instead.
	// processor.Registry.Advance does it with the registered aggregate
	// types' Evolve functions. default: nil, always read
	Advance func(aggregate Aggregate, eventsSince []events.EventSummary) (Aggregate, bool)
}

func (p *RetryPolicy) setDefaults() {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = 5
	}
	if p.InitialBackoff <= 0 {
		p.InitialBackoff = 50 * time.Millisecond
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = 2 * time.Second
	}
	if p.MaxBackoff < p.InitialBackoff {
		p.MaxBackoff = p.InitialBackoff
	}
}

// backoff returns the pause after the given failed attempt (1-based).
func (p *RetryPolicy) backoff(attempt int) time.Duration {
	d := p.InitialBackoff
	for i := 1; i < attempt && d < p.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, p.MaxBackoff)
	return d/2 + rand.N(d/2+1)
}

// Sender sends a command and waits for its outcome; *Producer is one.
type Sender interface {
	SendAndWait(ctx context.Context, cmd Command) (Applied, error)
}

var _ Sender = (*Producer)(nil)

// RetryParams is what the decide function of RetryOnConflict gets.
type RetryParams struct {
	// Attempt counts the attempts, from 1.
	Attempt int
	// Current is the aggregate as just read: decide on its State and send
	// its Version as the command's expectedVersion.
	Current Aggregate
	// Advanced is set when Current was not read but computed from the
	// previous attempt's aggregate and its conflict's eventsSince (see
	// RetryPolicy.Advance).
	Advanced bool
	// EventsSince are, from the second attempt on, the events the previous
	// attempt's conflict listed: what changed since that attempt's read.
	EventsSince []events.EventSummary
	// CommandID is a fresh command ID for this attempt,
	// "<base>-a<Attempt>", with a random base shared by the attempts of
	// one RetryOnConflict call. It is used when the command's ID is left
	// empty.
	CommandID string
}

// DecideFunc decides, on the aggregate as it is now, which command to send.
type DecideFunc func(ctx context.Context, params RetryParams) (Command, error)

// RetryOnConflict is the read, decide, send loop of optimistic concurrency
// control, done right: it reads the aggregate's current version and state
// from reader, lets decide choose the command on that state, sends it with
// SendAndWait, and on a version conflict pauses (exponential backoff with
// jitter, see RetryPolicy) and starts over with a fresh read, up to
// MaxAttempts. It never resends a command decided on stale data: each attempt
// is decided again.
//
// Every attempt must be a new command with a new ID: the worker remembers
// each command ID, and a resend of a conflicted ID would only get a
// duplicate. Leave the command's ID empty to use RetryParams.CommandID; an
// ID already sent by an earlier attempt is refused. The command's aggregate
// ID may be left empty too; set its ExpectedVersion to
// params.Current.Version.
//
// It returns the Applied outcome, or the last attempt's error: a
// *ConflictError matching ErrVersionConflict once MaxAttempts are spent, and
// at once, without a retry, one matching ErrRejected, ErrInvalid or
// ErrUnknownType, or any other error (a failed read, decide's own error, a
// timeout of ctx).
func RetryOnConflict(ctx context.Context, sender Sender, reader Reader, policy RetryPolicy, aggregateID string, decide DecideFunc) (Applied, error) {
	policy.setDefaults()
	base := NewID()
	sent := make(map[string]int)
	var (
		lastErr error
		// next is the aggregate for the coming attempt when it could be
		// computed from the last conflict instead of read.
		next        *Aggregate
		eventsSince []events.EventSummary
	)
	for attempt := 1; attempt <= policy.MaxAttempts; attempt++ {
		if attempt > 1 {
			pause := time.NewTimer(policy.backoff(attempt - 1))
			select {
			case <-ctx.Done():
				pause.Stop()
				return Applied{}, errors.Wrapf(ctx.Err(), "retry a command for aggregate %s after %d conflicts (last: %v)", aggregateID, attempt-1, lastErr)
			case <-pause.C:
			}
		}
		params := RetryParams{Attempt: attempt, CommandID: base + "-a" + strconv.Itoa(attempt), EventsSince: eventsSince}
		if next != nil {
			params.Current, params.Advanced = *next, true
		} else {
			current, err := reader.Get(ctx, aggregateID)
			if err != nil {
				return Applied{}, errors.Wrapf(err, "read aggregate %s for attempt %d", aggregateID, attempt)
			}
			params.Current = current
		}
		current := params.Current
		cmd, err := decide(ctx, params)
		if err != nil {
			return Applied{}, errors.Wrapf(err, "decide a command for aggregate %s at version %d (attempt %d)", aggregateID, current.Version, attempt)
		}
		if cmd.ID == "" {
			cmd.ID = params.CommandID
		}
		if cmd.AggregateID == "" {
			cmd.AggregateID = aggregateID
		}
		if cmd.AggregateID != aggregateID {
			return Applied{}, errors.Newf("decide returned a command for aggregate %s while retrying aggregate %s", cmd.AggregateID, aggregateID)
		}
		if earlier, ok := sent[cmd.ID]; ok {
			return Applied{}, errors.Newf("decide returned command ID %s again (attempt %d, first sent by attempt %d): every attempt needs a fresh ID; leave the ID empty to use RetryParams.CommandID", cmd.ID, attempt, earlier)
		}
		sent[cmd.ID] = attempt
		applied, err := sender.SendAndWait(ctx, cmd)
		if err == nil {
			return applied, nil
		}
		if !errors.Is(err, ErrVersionConflict) {
			return Applied{}, err
		}
		lastErr = err
		next, eventsSince = advance(policy, current, cmd, err)
	}
	return Applied{}, errors.Wrapf(lastErr, "gave up on aggregate %s after %d attempts, each a version conflict", aggregateID, policy.MaxAttempts)
}

// advance returns the aggregate after a version conflict computed from its
// eventsSince, when policy.Advance is set, the conflict lists every event
// since the version the attempt read, and Advance accepts them; and the
// events the conflict listed.
func advance(policy RetryPolicy, read Aggregate, sent Command, err error) (*Aggregate, []events.EventSummary) {
	var conflict *ConflictError
	if !errors.As(err, &conflict) {
		return nil, nil
	}
	if policy.Advance == nil || conflict.Duplicate || sent.ExpectedVersion != read.Version ||
		conflict.ExpectedVersion != read.Version || !conflict.EventsSinceComplete() {
		return nil, conflict.EventsSince
	}
	advanced, ok := policy.Advance(read, conflict.EventsSince)
	if !ok || advanced.Version != conflict.ActualVersion {
		return nil, conflict.EventsSince
	}
	return &advanced, conflict.EventsSince
}
