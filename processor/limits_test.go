package processor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/twmb/franz-go/pkg/kgo"
)

// maxConflictBytes is what a conflict record that left the command out may
// take at most: IDs and message at their limits, each byte escaped in JSON.
const maxConflictBytes = 6*(2*events.MaxEchoedIDBytes+events.MaxMessageBytes) + 1024

// TestConflictRecordsAreBounded: whatever a command record holds, its
// conflict record, key and headers stay small, and what was cut is named
// with the original's length and SHA-256.
func TestConflictRecordsAreBounded(t *testing.T) {
	hostileKey := strings.Repeat("\xff", 200_000)
	longID := strings.Repeat("i", 300)
	longAggregate := strings.Repeat("a", 100_000)
	tests := []struct {
		name       string
		key, value string
		wantCut    map[string]string // field: original
		wantReason events.Reason
	}{
		{name: "200 KB key of 0xFF bytes, value x", key: hostileKey, value: "x",
			wantCut: map[string]string{"aggregateId": hostileKey}, wantReason: events.ReasonInvalid},
		{name: "command id over 256 bytes", key: "a-1", value: command(longID, "a-1", "Add", 0, `{"amounts":[1]}`),
			wantCut: map[string]string{"commandId": longID}, wantReason: events.ReasonInvalid},
		{name: "key that differs from aggregateId", key: hostileKey, value: command("c1", "a-1", "Add", 0, `{"amounts":[1]}`),
			wantReason: events.ReasonInvalid},
		{name: "aggregateId of 100 KB", key: longAggregate, value: command("c1", longAggregate, "Add", 0, `{"amounts":[1]}`),
			wantCut: map[string]string{"aggregateId": longAggregate}, wantReason: events.ReasonInvalid},
		{name: "non-UTF-8 key under the limit", key: "\xff\xfe", value: "x",
			wantCut: map[string]string{"aggregateId": "\xff\xfe"}, wantReason: events.ReasonInvalid},
		{name: "rejection quoting a long payload", key: "a-1", value: command("c1", "a-1", "Huge", 0, `{"text":"`+strings.Repeat("\\u0001", 50_000)+`"}`),
			wantReason: events.ReasonRejected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			MustRegister(h.decider.registry, counterType, "Huge", func(_ context.Context, p DecideParams[counter, struct{ Text string }]) ([]events.Draft, error) {
				return nil, Reject("refused: %q", p.Payload.Text)
			})
			b := h.run(h.record(tt.key, tt.value))
			out := b.outcomes[0]
			if len(out.records) != 1 {
				t.Fatalf("want one conflict record, got %d records", len(out.records))
			}
			value := out.records[0].Value
			_, conflict := decodeOutcome(t, out)
			if conflict == nil || conflict.Reason != tt.wantReason {
				t.Fatalf("want a %s conflict, got %+v", tt.wantReason, conflict)
			}
			if conflict.Command == nil && conflict.RawValue == nil && len(value) > maxConflictBytes {
				t.Errorf("conflict record is %d bytes, over %d", len(value), maxConflictBytes)
			}
			if len(conflict.Message) > events.MaxMessageBytes || len(conflict.AggregateID) > events.MaxEchoedIDBytes || len(conflict.CommandID) > events.MaxEchoedIDBytes {
				t.Errorf("conflict fields over their limits: message %d, aggregateId %d, commandId %d bytes", len(conflict.Message), len(conflict.AggregateID), len(conflict.CommandID))
			}
			key, commandID := b.outcomeIdentity(0)
			if len(key) > events.MaxEchoedIDBytes || len(commandID) > events.MaxEchoedIDBytes {
				t.Errorf("record key %d bytes, command ID header %d bytes: over %d", len(key), len(commandID), events.MaxEchoedIDBytes)
			}
			cuts := make(map[string]events.Cut)
			for _, c := range conflict.Cut {
				cuts[c.Field] = c
			}
			for field, original := range tt.wantCut {
				c, ok := cuts[field]
				sum := sha256.Sum256([]byte(original))
				if !ok || c.Length != len(original) || c.SHA256 != hex.EncodeToString(sum[:]) {
					t.Errorf("cut of %s: want length %d and its SHA-256, got %+v", field, len(original), conflict.Cut)
				}
			}
		})
	}
}

// TestCutString: cut values are valid UTF-8 within the limit, never split a
// character, and untouched values are returned as they are.
func TestCutString(t *testing.T) {
	tests := []struct {
		value, want string
		cut         bool
	}{
		{value: "prod1", want: "prod1"},
		{value: strings.Repeat("é", 5), want: "éé", cut: true}, // 10 bytes cut to 5: two whole é
		{value: "ab\xffcd", want: "ab\uFFFD", cut: true},       // U+FFFD takes 3 bytes: "c" does not fit
		{value: "", want: ""},
	}
	for _, tt := range tests {
		got, cut := events.CutString("f", tt.value, 5)
		if got != tt.want || (cut != nil) != tt.cut {
			t.Errorf("CutString(%q, 5) = %q, cut %v; want %q, cut %v", tt.value, got, cut, tt.want, tt.cut)
		}
	}
}

// TestCommandLimits: a command may not make a worker publish more than
// MaxCommandEvents events or MaxCommandOutcomeBytes bytes; metadata copied
// into every event counts. Such commands are refused (rejected, naming the
// limit), not bounded by publishing part of them.
func TestCommandLimits(t *testing.T) {
	metadata := fmt.Sprintf(`{"note":%q}`, strings.Repeat("m", 20_000))
	appendEvents := func(n int, withMetadata bool) string {
		list := make([]string, n)
		for i := range list {
			list[i] = `{"type":"E"}`
		}
		value := command("c1", "a-1", AppendEventsType, -1, `{"events":[`+strings.Join(list, ",")+`]}`)
		if withMetadata {
			value = strings.TrimSuffix(value, "}") + `,"metadata":` + metadata + `}`
		}
		return value
	}
	tests := []struct {
		name        string
		value       string
		wantEvents  int
		wantMessage string
	}{
		{name: "2,000 events with 20 KB of metadata", value: appendEvents(2000, true), wantMessage: "over the limit of 1000 events per command"},
		{name: "2,000 events", value: appendEvents(2000, false), wantMessage: "over the limit of 1000 events per command"},
		{name: "300 events with 20 KB of metadata", value: appendEvents(300, true), wantMessage: "over the limit of 4194304 bytes per command"},
		{name: "1,000 small events", value: appendEvents(1000, false), wantEvents: 1000},
		{name: "100 events with 20 KB of metadata", value: appendEvents(100, true), wantEvents: 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			b := h.run(h.record("a-1", tt.value))
			evts, conflict := decodeOutcome(t, b.outcomes[0])
			if tt.wantMessage != "" {
				if conflict == nil || conflict.Reason != events.ReasonRejected || !strings.Contains(conflict.Message, tt.wantMessage) {
					t.Fatalf("want rejected saying %q, got %d events, conflict %+v", tt.wantMessage, len(evts), conflict)
				}
				if aggregate, _ := h.store.Get(context.Background(), "a-1"); aggregate.Version != 0 {
					t.Fatalf("a refused command moved the version to %d", aggregate.Version)
				}
				return
			}
			if len(evts) != tt.wantEvents {
				t.Fatalf("want %d events, got %d (conflict %+v)", tt.wantEvents, len(evts), conflict)
			}
		})
	}
}

// fragile is a state whose JSON methods and Evolve panic on demand, standing
// for user code with a bug.
type fragile struct {
	Mode string `json:"mode"`
}

func (f *fragile) UnmarshalJSON(data []byte) error {
	var plain struct{ Mode string }
	if err := json.Unmarshal(data, &plain); err != nil {
		return err
	}
	if plain.Mode == "bad-snapshot" {
		panic("state decoder exploded")
	}
	f.Mode = plain.Mode
	return nil
}

func (f fragile) MarshalJSON() ([]byte, error) {
	if f.Mode == "unencodable" {
		panic("state encoder exploded")
	}
	return json.Marshal(struct {
		Mode string `json:"mode"`
	}{f.Mode})
}

type fragilePayload struct{ Mode string }

func (p *fragilePayload) UnmarshalJSON(data []byte) error {
	if strings.Contains(string(data), "explode") {
		panic("payload decoder exploded")
	}
	type plain fragilePayload
	return json.Unmarshal(data, (*plain)(p))
}

type fragileEvent struct{ Mode string }

func (e fragileEvent) MarshalJSON() ([]byte, error) {
	if e.Mode == "unmarshalable-event" {
		panic("event encoder exploded")
	}
	return json.Marshal(e.Mode)
}

var fragileType = AggregateType[fragile]{
	Name: "Fragile",
	Evolve: func(state fragile, e events.Event) (fragile, error) {
		mode, err := events.DecodePayload[string](e)
		if err != nil {
			return state, err
		}
		if mode == "evolve-panic" {
			panic("evolve exploded")
		}
		state.Mode = mode
		return state, nil
	},
}

func fragileRegistry() *Registry {
	r := NewRegistry()
	MustRegister(r, fragileType, "Set", func(_ context.Context, p DecideParams[fragile, fragilePayload]) ([]events.Draft, error) {
		return []events.Draft{{Type: "Set", Payload: fragileEvent(p.Payload)}}, nil
	})
	return r
}

// TestPanicsInUserCode: a panic in Evolve, a state's or payload's JSON
// methods refuses that command with the panic's message; the worker goes on
// and the next command of the aggregate is applied.
func TestPanicsInUserCode(t *testing.T) {
	tests := []struct {
		name        string
		mode        string
		wantMessage string
	}{
		{name: "Evolve", mode: "evolve-panic", wantMessage: "evolve exploded"},
		{name: "state encoder", mode: "unencodable", wantMessage: "state encoder exploded"},
		{name: "payload decoder", mode: "explode", wantMessage: "payload decoder exploded"},
		{name: "event payload encoder", mode: "unmarshalable-event", wantMessage: "event encoder exploded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.decider.registry = fragileRegistry()
			set := func(id, mode string, version int64) string {
				return command(id, "f-1", "Set", version, fmt.Sprintf(`{"mode":%q}`, mode))
			}
			b := h.run(
				h.record("f-1", set("c1", "fine", 0)),
				h.record("f-1", set("c2", tt.mode, 1)),
				h.record("f-1", set("c3", "still-fine", 1)),
			)
			if evts, _ := decodeOutcome(t, b.outcomes[0]); len(evts) != 1 {
				t.Fatalf("the first command must be applied")
			}
			_, conflict := decodeOutcome(t, b.outcomes[1])
			if conflict == nil || conflict.Reason != events.ReasonRejected || !strings.Contains(conflict.Message, tt.wantMessage) {
				t.Fatalf("want rejected with %q, got %+v", tt.wantMessage, conflict)
			}
			if evts, conflict := decodeOutcome(t, b.outcomes[2]); len(evts) != 1 || evts[0].Version != 2 {
				t.Fatalf("the next command must be applied at version 2, got %v %+v", evts, conflict)
			}
			aggregate, err := h.store.Get(context.Background(), "f-1")
			if err != nil {
				t.Fatal(err)
			}
			if aggregate.Version != 2 || string(aggregate.State) != `{"mode":"still-fine"}` {
				t.Fatalf("redis holds version %d state %s, want 2 {\"mode\":\"still-fine\"}", aggregate.Version, aggregate.State)
			}
		})
	}
}

// TestPanickingStateDecoder: a stored snapshot whose decoder panics refuses
// the command instead of crashing the worker.
func TestPanickingStateDecoder(t *testing.T) {
	h := newHarness(t)
	h.decider.registry = fragileRegistry()
	b := h.run(h.record("f-1", command("c1", "f-1", "Set", 0, `{"mode":"bad-snapshot"}`)))
	if evts, _ := decodeOutcome(t, b.outcomes[0]); len(evts) != 1 {
		t.Fatalf("the first command must be applied")
	}
	b = h.run(
		h.record("f-1", command("c2", "f-1", "Set", 1, `{"mode":"x"}`)),
		h.record("f-1", command("c3", "f-1", "Set", 1, `{"mode":"y"}`)),
	)
	for i := range b.records {
		_, conflict := decodeOutcome(t, b.outcomes[i])
		if conflict == nil || conflict.Reason != events.ReasonRejected || !strings.Contains(conflict.Message, "state decoder exploded") {
			t.Fatalf("command %d on an undecodable snapshot: want rejected with the panic, got %+v", i, conflict)
		}
	}
}

// otherType is a second aggregate type, for the rules that keep types apart.
var otherType = AggregateType[counter]{Name: "Other", Evolve: counterType.Evolve}

var openType = AggregateType[counter]{Name: "Open", Evolve: counterType.Evolve, AllowAppendEvents: true}

// TestTypedAggregatesKeepTheirRules: AppendEvents cannot write into an
// aggregate whose type has Go handlers unless the type allows it, and a
// command of one type is refused on an aggregate of another, or on one
// created without a type, whether or not they share a batch.
func TestTypedAggregatesKeepTheirRules(t *testing.T) {
	appendAdded := func(id, aggregateID string) string {
		return command(id, aggregateID, AppendEventsType, -1, `{"events":[{"type":"Added","payload":-5}]}`)
	}
	tests := []struct {
		name        string
		first, then string
		aggregateID string
		wantReason  events.Reason
		wantMessage string
	}{
		{name: "AppendEvents on a typed aggregate", aggregateID: "a-1",
			first: command("c1", "a-1", "Add", 0, `{"amounts":[5]}`), then: appendAdded("c2", "a-1"),
			wantReason: events.ReasonRejected, wantMessage: "may not append events"},
		{name: "a command of another type", aggregateID: "a-1",
			first: command("c1", "a-1", "Add", 0, `{"amounts":[5]}`), then: command("c2", "a-1", "AddOther", 1, `{"amounts":[1]}`),
			wantReason: events.ReasonRejected, wantMessage: "is a Counter; command type AddOther is for Other aggregates"},
		{name: "a typed command on an untyped aggregate", aggregateID: "s-1",
			first: appendAdded("c1", "s-1"), then: command("c2", "s-1", "Add", 1, `{"amounts":[1]}`),
			wantReason: events.ReasonRejected, wantMessage: "was created without a type"},
		{name: "AppendEvents on a type that allows it", aggregateID: "o-1",
			first: command("c1", "o-1", "AddOpen", 0, `{"amounts":[5]}`), then: appendAdded("c2", "o-1")},
		{name: "AppendEvents on an untyped aggregate", aggregateID: "s-1",
			first: appendAdded("c1", "s-1"), then: appendAdded("c2", "s-1")},
	}
	for _, tt := range tests {
		for _, together := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/same batch %v", tt.name, together), func(t *testing.T) {
				h := newHarness(t)
				add := h.decider.registry.handlers["Add"].decide
				for name, agg := range map[string]AggregateType[counter]{"AddOther": otherType, "AddOpen": openType} {
					MustRegister(h.decider.registry, agg, name, func(ctx context.Context, p DecideParams[counter, addCommand]) ([]events.Draft, error) {
						return add(ctx, p.State, p.Version, p.Command)
					})
				}
				var b *batch
				if together {
					b = h.run(h.record(tt.aggregateID, tt.first), h.record(tt.aggregateID, tt.then))
				} else {
					h.run(h.record(tt.aggregateID, tt.first))
					b = h.run(h.record(tt.aggregateID, tt.then))
				}
				before, err := h.store.Get(context.Background(), tt.aggregateID)
				if err != nil {
					t.Fatal(err)
				}
				evts, conflict := decodeOutcome(t, b.outcomes[len(b.outcomes)-1])
				if tt.wantReason == "" {
					if len(evts) != 1 || evts[0].Version != 2 {
						t.Fatalf("want the command applied at version 2, got %v %+v", evts, conflict)
					}
					return
				}
				if conflict == nil || conflict.Reason != tt.wantReason || !strings.Contains(conflict.Message, tt.wantMessage) {
					t.Fatalf("want %s saying %q, got %d events, %+v", tt.wantReason, tt.wantMessage, len(evts), conflict)
				}
				if before.Version != 1 {
					t.Fatalf("the refused command moved the aggregate to version %d", before.Version)
				}
			})
		}
	}
}

// TestRecoverAs: a panic's message reaches the rejection.
func TestRecoverAs(t *testing.T) {
	err := func() (err error) {
		defer recoverAs(&err, "the step", "test")
		panic("it broke")
	}()
	var rejection *RejectionError
	if !errors.As(err, &rejection) || rejection.Message != "the step test panicked: it broke" {
		t.Fatalf("want a rejection carrying the panic, got %v", err)
	}
}

// TestOutcomeIdentityOfRecordWithoutKey: an invalid record with neither a key
// nor a readable aggregateId gets a non-empty key, the same on every replay,
// so that a compacted conflicts topic accepts its conflict record.
func TestOutcomeIdentityOfRecordWithoutKey(t *testing.T) {
	longTopic := strings.Repeat("t", 249)
	tests := []struct {
		name      string
		topic     string
		partition int32
		key       []byte
		value     string
		wantKey   string
	}{
		{name: "no key, value that does not decode", topic: "commands", value: "not a command", wantKey: "commands/3/1207"},
		{name: "empty key, value that does not decode", topic: "commands", key: []byte{}, value: "x", wantKey: "commands/3/1207"},
		{name: "no key, aggregateId readable", topic: "commands", value: command("c1", "a-1", "Add", 0, `{"amounts":[1]}`), wantKey: "a-1"},
		{name: "no key on a topic of 249 characters, partition 1000000", topic: longTopic, partition: 1_000_000, value: "x", wantKey: longTopic},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			partition := int32(3)
			if tt.partition != 0 {
				partition = tt.partition
			}
			b := h.run(&kgo.Record{Topic: tt.topic, Partition: partition, Offset: 1207, Key: tt.key, Value: []byte(tt.value)})
			for replay := range 2 {
				key, _ := b.outcomeIdentity(0)
				if !strings.HasPrefix(string(key), tt.wantKey) || len(key) == 0 || len(key) > events.MaxEchoedIDBytes {
					t.Fatalf("attempt %d: outcome record key %q, want %q (non-empty, at most %d bytes)", replay, key, tt.wantKey, events.MaxEchoedIDBytes)
				}
			}
		})
	}
}
