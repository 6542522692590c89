package bench

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/internal/testenv"
)

// TestContentionSmoke runs the contention scenario briefly against the test
// stack: both modes run, every command sent is counted with one outcome, and
// only the rebase mode rebases. It asserts no speed.
func TestContentionSmoke(t *testing.T) {
	brokers := testenv.Brokers(t)
	redisURL := testenv.RedisURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	report, err := RunContention(ctx, ContentionConfig{Brokers: brokers, RedisURL: redisURL, Aggregates: 1, Clients: 4, Duration: 2 * time.Second, Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(report.Modes) != 2 || report.Modes[0].OnConflict != "strict" || report.Modes[1].OnConflict != "rebase" {
		t.Fatalf("want a strict and a rebase mode, got %+v", report.Modes)
	}
	for _, m := range report.Modes {
		if m.Sent == 0 || m.Applied+m.Conflicts+m.Rejected != m.Sent || m.Rebased > m.Applied || m.RecentListBytes == 0 {
			t.Errorf("%s: counts do not add up: %+v", m.OnConflict, m)
		}
	}
	if report.Modes[0].Rebased != 0 {
		t.Errorf("strict commands were rebased: %+v", report.Modes[0])
	}
	var table strings.Builder
	report.WriteTable(&table)
	t.Logf("\n%s", table.String())
}
