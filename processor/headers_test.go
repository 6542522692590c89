package processor

import (
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
			headers := appendCloudEventHeaders(nil, []byte("/arbiter/g"), []byte("p-1"), tc.rec)
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
