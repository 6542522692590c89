package processor

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/cockroachdb/errors"
)

// AppendEventsType is the built-in command type whose payload carries the
// events to append: {"events":[{"type":"…","payload":{…}}]}. It accepts every
// expectedVersion form and never rejects on content, so services in any
// language can use Arbiter as an optimistic-concurrency gate.
const AppendEventsType = "AppendEvents"

// ErrRejected marks a handler's refusal of a command (a domain rule). Use
// errors.As with *RejectionError for the message. It is commands.ErrRejected,
// which a sender's rejected outcome matches too.
var ErrRejected = commands.ErrRejected

// ErrUnknownAggregateType is returned by Registry.Evolve for events of an
// aggregate type the registry has no Evolve function for: their state cannot
// be rebuilt by this registry (register the type's handlers, or rebuild with
// the binary of the workers that decide it).
var ErrUnknownAggregateType = errors.New("unknown aggregate type")

// RejectionError is a handler's refusal of a command. It becomes a conflict
// record with reason "rejected" and this message.
type RejectionError struct {
	Message string
}

// Error implements error.
func (e *RejectionError) Error() string { return e.Message }

// Is makes errors.Is(err, ErrRejected) true.
func (e *RejectionError) Is(target error) bool { return target == ErrRejected }

// Reject returns a *RejectionError with a formatted message; handlers return
// it to refuse a command.
func Reject(format string, args ...any) error {
	return &RejectionError{Message: fmt.Sprintf(format, args...)}
}

// AggregateType describes one kind of aggregate: its name and how its state
// evolves with each event. S is the state; its JSON encoding is the snapshot
// stored in Redis beside the version.
type AggregateType[S any] struct {
	// Name names the aggregate type, e.g. "Product". Required.
	Name string
	// Evolve returns the state after an event. Required.
	Evolve func(state S, event events.Event) (S, error)
	// AllowAppendEvents lets the built-in AppendEvents command append
	// events to aggregates of this type; each goes through Evolve, whose
	// error refuses the command. Without it AppendEvents is rejected on
	// them: its events would bypass the rules of the type's handlers.
	// default: false
	AllowAppendEvents bool
}

// DecideParams is what a handler decides on.
type DecideParams[S, C any] struct {
	// State is the aggregate's state at Version (the zero S when it does
	// not exist).
	State S
	// Version is the aggregate's current version; 0 when it does not exist.
	Version int64
	// Command is the command envelope.
	Command commands.Command
	// Payload is the command's decoded payload.
	Payload C
}

// DecideFunc decides the events a command produces from the aggregate's
// current state, or refuses it with Reject. It must be a pure function of its
// parameters: replays rely on that.
type DecideFunc[S, C any] func(ctx context.Context, params DecideParams[S, C]) ([]events.Draft, error)

// HandlerOption configures a handler at registration.
type HandlerOption func(*handlerConfig)

type handlerConfig struct {
	relaxedVersions bool
	rebaseOn        []string
	resolver        ConflictResolver
}

// AllowRelaxedVersions lets commands of the handler's type use the relaxed
// expectedVersion forms -1 (any version) and -2 (must exist). Without it such
// commands are rejected: the relaxed forms switch the concurrency check off.
func AllowRelaxedVersions() HandlerOption {
	return func(c *handlerConfig) { c.relaxedVersions = true }
}

// aggregateCodec is an AggregateType with its state type erased.
type aggregateCodec interface {
	name() string
	newState() any
	decodeState(snapshot []byte) (any, error)
	encodeState(state any) ([]byte, error)
	evolve(state any, event events.Event) (any, error)
	allowsAppendEvents() bool
}

func (a AggregateType[S]) name() string { return a.Name }
func (a AggregateType[S]) newState() any {
	var zero S
	return zero
}

func (a AggregateType[S]) allowsAppendEvents() bool { return a.AllowAppendEvents }

func (a AggregateType[S]) decodeState(snapshot []byte) (_ any, err error) {
	defer recoverAs(&err, "decoding the state snapshot of", a.Name)
	var state S
	if len(snapshot) == 0 {
		return state, nil
	}
	if err := json.Unmarshal(snapshot, &state); err != nil {
		return nil, errors.Wrapf(err, "decode %s state snapshot", a.Name)
	}
	return state, nil
}

func (a AggregateType[S]) encodeState(state any) (_ []byte, err error) {
	defer recoverAs(&err, "encoding the state of", a.Name)
	snapshot, err := json.Marshal(state.(S))
	if err != nil {
		return nil, errors.Wrapf(err, "encode %s state snapshot", a.Name)
	}
	return snapshot, nil
}

func (a AggregateType[S]) evolve(state any, event events.Event) (_ any, err error) {
	defer recoverAs(&err, "Evolve of", a.Name)
	return a.Evolve(state.(S), event)
}

// handler is a registered command handler with its types erased.
type handler struct {
	commandType     string
	aggregate       aggregateCodec // nil for AppendEvents: it takes the aggregate's own type
	relaxedVersions bool
	decide          func(ctx context.Context, state any, version int64, cmd commands.Command) ([]events.Draft, error)
	// rebaseOn and resolver say when a stale command may be rebased (see
	// RebaseOn and ResolveConflicts).
	rebaseOn map[string]struct{}
	resolver ConflictResolver
}

// Registry maps command types to their handlers. Register handlers before the
// worker starts; a Registry is read-only afterwards and safe for concurrent
// reads. The built-in AppendEvents handler is always present.
type Registry struct {
	handlers   map[string]*handler
	aggregates map[string]aggregateCodec
}

// NewRegistry returns a Registry holding only the built-in AppendEvents
// handler.
func NewRegistry() *Registry {
	r := &Registry{handlers: make(map[string]*handler), aggregates: make(map[string]aggregateCodec)}
	r.handlers[AppendEventsType] = &handler{
		commandType:     AppendEventsType,
		relaxedVersions: true,
		decide:          decideAppendEvents,
	}
	return r
}

// Register adds the handler of one command type for aggregates of type agg.
// C is the command's payload type, decoded from JSON; a payload that does not
// decode makes the command invalid.
func Register[S, C any](r *Registry, agg AggregateType[S], commandType string, decide DecideFunc[S, C], opts ...HandlerOption) error {
	if agg.Name == "" || agg.Evolve == nil {
		return errors.Newf("register %s: the aggregate type needs a Name and an Evolve function", commandType)
	}
	if commandType == "" || decide == nil {
		return errors.Newf("register handler for %s: a command type and a decide function are required", agg.Name)
	}
	if _, taken := r.handlers[commandType]; taken {
		return errors.Newf("register %s: a handler for this command type is already registered", commandType)
	}
	if existing, ok := r.aggregates[agg.Name]; ok && reflect.TypeOf(existing) != reflect.TypeOf(agg) {
		return errors.Newf("register %s: aggregate type %s is already registered with another state type", commandType, agg.Name)
	}
	var cfg handlerConfig
	for _, opt := range opts {
		opt(&cfg)
	}
	r.aggregates[agg.Name] = agg
	var rebaseOn map[string]struct{}
	for _, eventType := range cfg.rebaseOn {
		if rebaseOn == nil {
			rebaseOn = make(map[string]struct{}, len(cfg.rebaseOn))
		}
		rebaseOn[eventType] = struct{}{}
	}
	r.handlers[commandType] = &handler{
		commandType:     commandType,
		aggregate:       agg,
		relaxedVersions: cfg.relaxedVersions,
		rebaseOn:        rebaseOn,
		resolver:        cfg.resolver,
		decide: func(ctx context.Context, state any, version int64, cmd commands.Command) ([]events.Draft, error) {
			var payload C
			if len(cmd.Payload) > 0 {
				if err := json.Unmarshal(cmd.Payload, &payload); err != nil {
					return nil, &payloadError{err: err}
				}
			}
			return decide(ctx, DecideParams[S, C]{State: state.(S), Version: version, Command: cmd, Payload: payload})
		},
	}
	return nil
}

// MustRegister is Register that panics on a registration error; for wiring
// code at start-up.
func MustRegister[S, C any](r *Registry, agg AggregateType[S], commandType string, decide DecideFunc[S, C], opts ...HandlerOption) {
	if err := Register(r, agg, commandType, decide, opts...); err != nil {
		panic(err)
	}
}

// CommandTypes returns the registered command types.
func (r *Registry) CommandTypes() []string {
	types := make([]string, 0, len(r.handlers))
	for t := range r.handlers {
		types = append(types, t)
	}
	return types
}

// Evolve applies one event to a state snapshot of the named aggregate type,
// for tools that rebuild snapshots from the events topic. Events of an
// untyped aggregate (one that only received AppendEvents) leave the snapshot
// as it is; those of a type the registry does not know give an error matching
// ErrUnknownAggregateType, since leaving the snapshot would rebuild empty
// state.
func (r *Registry) Evolve(aggregateType string, snapshot []byte, event events.Event) ([]byte, error) {
	if aggregateType == "" {
		return snapshot, nil
	}
	codec, ok := r.aggregates[aggregateType]
	if !ok {
		return nil, errors.Wrapf(ErrUnknownAggregateType, "aggregate %s has events of type %q, which has no Evolve function in this registry: register its handlers in the binary that rebuilds", event.AggregateID, aggregateType)
	}
	state, err := codec.decodeState(snapshot)
	if err != nil {
		return nil, err
	}
	state, err = codec.evolve(state, event)
	if err != nil {
		return nil, errors.Wrapf(err, "evolve %s %s with event %s", aggregateType, event.AggregateID, event.ID)
	}
	return codec.encodeState(state)
}

// AggregateTypeOf returns the aggregate type a command type belongs to, ""
// for AppendEvents and unknown types.
func (r *Registry) AggregateTypeOf(commandType string) string {
	h, ok := r.handlers[commandType]
	if !ok || h.aggregate == nil {
		return ""
	}
	return h.aggregate.name()
}

// payloadError marks a command payload that does not decode: the command is
// invalid, not rejected.
type payloadError struct{ err error }

func (e *payloadError) Error() string { return "payload does not decode: " + e.err.Error() }

type appendEventsPayload struct {
	Events []struct {
		Type    string          `json:"type"`
		Payload json.RawMessage `json:"payload"`
	} `json:"events"`
}

func decideAppendEvents(_ context.Context, _ any, _ int64, cmd commands.Command) ([]events.Draft, error) {
	var payload appendEventsPayload
	if len(cmd.Payload) == 0 {
		return nil, &payloadError{err: errors.New(`AppendEvents needs a payload {"events":[{"type":…,"payload":…}]}`)}
	}
	if err := json.Unmarshal(cmd.Payload, &payload); err != nil {
		return nil, &payloadError{err: err}
	}
	if len(payload.Events) == 0 {
		return nil, &payloadError{err: errors.New("AppendEvents needs at least one event in payload.events")}
	}
	drafts := make([]events.Draft, len(payload.Events))
	for i, e := range payload.Events {
		if e.Type == "" || len(e.Type) > commands.MaxIDLength {
			return nil, &payloadError{err: errors.Newf("event %d of AppendEvents needs a type of 1 to %d bytes", i, commands.MaxIDLength)}
		}
		drafts[i] = events.Draft{Type: e.Type, Payload: e.Payload}
		if len(e.Payload) == 0 || string(e.Payload) == "null" {
			drafts[i].Payload = nil
		}
	}
	return drafts, nil
}
