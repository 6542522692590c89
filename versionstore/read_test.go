package versionstore

import (
	"context"
	"strings"
	"testing"
)

type fixedReader Aggregate

func (r fixedReader) Get(context.Context, string) (Aggregate, error) { return Aggregate(r), nil }

func TestGetState(t *testing.T) {
	type state struct {
		Price float64 `json:"price"`
		Stock int64   `json:"stock"`
	}
	tests := []struct {
		name      string
		aggregate Aggregate
		want      state
		wantErr   string
	}{
		{name: "snapshot", aggregate: Aggregate{ID: "p", Version: 6, Type: "Product", State: []byte(`{"price":25,"stock":120}`)}, want: state{25, 120}},
		{name: "no aggregate yet", aggregate: Aggregate{ID: "p"}},
		{name: "not the state's shape", aggregate: Aggregate{ID: "p", Version: 2, Type: "Product", State: []byte(`{"price":"high"}`)}, wantErr: "decode the state snapshot of aggregate p"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			version, got, err := GetState[state](context.Background(), fixedReader(tt.aggregate), "p")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || version != tt.aggregate.Version || got != tt.want {
				t.Fatalf("got version %d state %+v (%v), want %d %+v", version, got, err, tt.aggregate.Version, tt.want)
			}
		})
	}
}
