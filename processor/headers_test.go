package processor

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestCloudEventHeaders(t *testing.T) {
	for _, tc := range []struct {
		name string
		rec  versionstore.OutcomeRecord
		want map[string]string
	}{
		{"event", versionstore.OutcomeRecord{Kind: versionstore.KindEvent,
			Value: []byte(`{"id":"p-1@3","aggregateId":"p-1","type":"PriceReduced","version":3,"commandId":"c","payload":{"type":"x","id":"y"},"timestamp":"2026-11-25T10:00:00.25Z"}`)},
			map[string]string{events.HeaderCEID: "p-1@3", events.HeaderCEType: "PriceReduced", events.HeaderCETime: "2026-11-25T10:00:00.25Z"}},
		{"conflict", versionstore.OutcomeRecord{Kind: versionstore.KindConflict,
			Value: []byte(`{"commandId":"c","aggregateId":"p-1","reason":"version_conflict","message":"m","command":{"id":"c","type":"ChangePrice"},"source":{"topic":"commands","partition":2,"offset":41},"timestamp":"2026-11-25T10:00:00Z"}`)},
			map[string]string{events.HeaderCEID: "conflict:commands/2/41", events.HeaderCEType: "arbiter.conflict.version_conflict", events.HeaderCETime: "2026-11-25T10:00:00Z"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			headers := appendCloudEventHeaders(nil, []byte("/arbiter/g"), []byte("p-1"), cloudEventOf(tc.rec))
			got := make(map[string]string)
			for _, h := range headers {
				got[h.Key] = string(h.Value)
			}
			want := map[string]string{events.HeaderCESpecVersion: "1.0", events.HeaderCESource: "/arbiter/g", events.HeaderCESubject: "p-1", events.HeaderContentType: "application/json"}
			for key, value := range tc.want {
				want[key] = value
			}
			if len(got) != len(want) {
				t.Errorf("headers %v, want %v", got, want)
			}
			for key, value := range want {
				if got[key] != value {
					t.Errorf("%s = %q, want %q", key, got[key], value)
				}
			}
		})
	}
}

// TestCloudEventsOfDecided: the attributes of a decided outcome, computed
// from the fields its records are encoded from, equal those read back from
// the records' values, which is all a replay has. Otherwise a record
// published again after an aborted transaction would carry other headers.
func TestCloudEventsOfDecided(t *testing.T) {
	h := newHarness(t)
	b := h.run(
		h.record("a-1", command("c1", "a-1", "Add", 0, `{"amounts":[1,2,3]}`)),
		h.record("a-1", command("c2", "a-1", "Add", 0, `{"amounts":[1]}`)),
		h.record("a-1", command("c1", "a-1", "Add", 3, `{"amounts":[1]}`)),
		h.record("a-1", command("c3", "a-1", "Teleport", 3, `{}`)),
		h.record("a-2", command("c4", "a-1", "Add", 0, `{"amounts":[1]}`)),
		h.record("a-3", "\xff not json"),
		h.record("a-4", command("c5", "a-4", "Add", 0, `{"amounts":[]}`)),
	)
	checked := 0
	for i, outcome := range b.outcomes {
		if len(outcome.cloudEvents) != len(outcome.records) {
			t.Fatalf("record %d: %d records, %d CloudEvents attributes", i, len(outcome.records), len(outcome.cloudEvents))
		}
		for k, rec := range outcome.records {
			if got, want := outcome.cloudEvents[k], cloudEventOf(rec); got != want {
				t.Errorf("record %d, outcome record %d: decided attributes %+v, read from the value %+v\n%s", i, k, got, want, rec.Value)
			}
			checked++
		}
	}
	if checked < 7 {
		t.Fatalf("checked %d outcome records; the batch should give events and every kind of conflict", checked)
	}
}

func TestTraceHeaders(t *testing.T) {
	rec := &kgo.Record{Headers: []kgo.RecordHeader{
		{Key: "other", Value: []byte("x")},
		{Key: events.HeaderTraceparent, Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")},
		{Key: events.HeaderTracestate, Value: []byte("a=b")},
	}}
	got := traceHeaders(rec)
	if len(got) != 2 || got[0].Key != events.HeaderTraceparent || got[1].Key != events.HeaderTracestate {
		t.Fatalf("trace headers %v: want traceparent and tracestate only", got)
	}
	if got := traceHeaders(&kgo.Record{}); got != nil {
		t.Fatalf("a record without trace context gave %v", got)
	}
}

// TestTraceHeadersAreBounded: the trace headers are copied onto every
// outcome record, so a hostile or broken producer's values must never make
// them large (issue 9: one record must not stall a partition).
func TestTraceHeadersAreBounded(t *testing.T) {
	const valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	huge := bytes.Repeat([]byte{0xff}, 900<<10)
	tests := []struct {
		name    string
		headers []kgo.RecordHeader
		want    []string // values carried, in order
	}{
		{name: "valid pair", headers: []kgo.RecordHeader{{Key: events.HeaderTraceparent, Value: []byte(valid)}, {Key: events.HeaderTracestate, Value: []byte("congo=t61rcWkgMzE")}}, want: []string{valid, "congo=t61rcWkgMzE"}},
		{name: "900 KB traceparent", headers: []kgo.RecordHeader{{Key: events.HeaderTraceparent, Value: huge}}},
		{name: "900 KB tracestate", headers: []kgo.RecordHeader{{Key: events.HeaderTraceparent, Value: []byte(valid)}, {Key: events.HeaderTracestate, Value: huge}}, want: []string{valid}},
		{name: "uppercase hex", headers: []kgo.RecordHeader{{Key: events.HeaderTraceparent, Value: []byte(strings.ToUpper(valid))}}},
		{name: "version ff", headers: []kgo.RecordHeader{{Key: events.HeaderTraceparent, Value: []byte("ff" + valid[2:])}}},
		{name: "version 00 with a suffix", headers: []kgo.RecordHeader{{Key: events.HeaderTraceparent, Value: []byte(valid + "-x")}}},
		{name: "future version with a suffix", headers: []kgo.RecordHeader{{Key: events.HeaderTraceparent, Value: []byte("01" + valid[2:] + "-x")}}, want: []string{"01" + valid[2:] + "-x"}},
		{name: "only the first of each", headers: []kgo.RecordHeader{{Key: events.HeaderTraceparent, Value: []byte(valid)}, {Key: events.HeaderTraceparent, Value: []byte(valid)}, {Key: events.HeaderTracestate, Value: []byte("a=b")}, {Key: events.HeaderTracestate, Value: []byte("c=d")}}, want: []string{valid, "a=b"}},
		{name: "control bytes in tracestate", headers: []kgo.RecordHeader{{Key: events.HeaderTracestate, Value: []byte("a=b\n")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := traceHeaders(&kgo.Record{Headers: tt.headers})
			var values []string
			for _, h := range got {
				values = append(values, string(h.Value))
			}
			if !slices.Equal(values, tt.want) {
				t.Errorf("carried %q, want %q", values, tt.want)
			}
		})
	}
}
