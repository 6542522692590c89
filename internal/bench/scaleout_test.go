package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/internal/testenv"
	"github.com/arbiter-cqrs/arbiter/kafkaclient"
)

// TestScaleOutSmoke runs the scale-out scenario small — 12 partitions, 3
// worker processes, both default balancers — and checks the report's shape
// and the assignment's invariants: every partition assigned exactly once at
// the start and after each change the group settled after, the members
// counted as they join and leave, every command answered exactly once. It
// asserts nothing about speed, nor that the group settles.
func TestScaleOutSmoke(t *testing.T) {
	brokers := testenv.Brokers(t)
	redisURL := testenv.RedisURL(t)
	binary := buildArbiter(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var progress strings.Builder
	const partitions, workers = 12, 3
	report, err := RunScaleOut(ctx, ScaleOutConfig{
		Brokers: brokers, RedisURL: redisURL, WorkerBinary: binary,
		Partitions: partitions, Workers: workers, SaturationN: 2000, Aggregates: 200, Stale: 0.1, Batch: 500,
		// One command a second per partition.
		Settle: 500 * time.Millisecond, SteadyBudget: 120 * time.Second, MaxSteadyRate: partitions, EventTimeout: 20 * time.Second,
		// The broker's smallest session timeout: a crashed worker is noticed
		// sooner.
		WorkerArgs: []string{"--session-timeout=6s"},
		Progress:   &progress,
	})
	if err != nil {
		t.Fatalf("scale-out: %v\nprogress:\n%s", err, progress.String())
	}
	var table strings.Builder
	report.WriteTable(&table)
	t.Logf("report:\n%s", table.String())

	if got, want := len(report.Runs), 2; got != want {
		t.Fatalf("%d runs, want one per default balancer (%d)", got, want)
	}
	for i, run := range report.Runs {
		if want := []string{kafkaclient.BalancerCooperativeSticky, kafkaclient.BalancerSticky}[i]; run.Balancer != want {
			t.Errorf("run %d: balancer %q, want %q", i, run.Balancer, want)
		}
		checkAssignment(t, run.Balancer+" at the start", run.Assignment, workers, partitions)
		s := run.Saturation
		if s.Commands != 2000 || s.Throughput <= 0 || s.PerWorker <= 0 || s.WorkerCPUPer1k <= 0 {
			t.Errorf("%s: saturation %+v: want 2000 commands and positive rates", run.Balancer, s)
		}
		// Whether the group settles after a change is what the scenario
		// measures (RebalanceEvent.Settled): a change it does not settle
		// after ends the sequence. What holds either way: the events come
		// in order with their member counts, and a settled one leaves every
		// partition assigned exactly once.
		wantEvents := []struct {
			name    string
			members int
		}{{"none (control)", 3}, {"join", 4}, {"leave (SIGTERM)", 3}, {"join", 4}, {"crash (SIGKILL)", 3}}
		if len(run.Events) == 0 || len(run.Events) > len(wantEvents) {
			t.Fatalf("%s: %d events, want 1 to %d", run.Balancer, len(run.Events), len(wantEvents))
		}
		for j, e := range run.Events {
			want := wantEvents[j]
			if e.Event != want.name || e.Members != want.members {
				t.Errorf("%s event %d: %q with %d members, want %q with %d", run.Balancer, j, e.Event, e.Members, want.name, want.members)
			}
			if !e.Settled {
				if j != len(run.Events)-1 || e.Unsettled == "" || e.GroupStableMs != -1 || e.AllDecidingMs != -1 {
					t.Errorf("%s %s: unsettled event %+v: want it last, with its reason and no times", run.Balancer, e.Event, e)
				}
				t.Logf("%s %s: not settled (%d session rejoins): %s", run.Balancer, e.Event, e.Rejoins, e.Unsettled)
				continue
			}
			checkAssignment(t, run.Balancer+" after "+e.Event, e.Assignment, want.members, partitions)
			if e.AllDecidingMs <= 0 || e.AllDecidingMs < e.GroupStableMs || e.MaxLatencyMs <= 0 {
				t.Errorf("%s %s: group stable %v ms, all deciding %v ms, longest wait %v ms: want every partition deciding after the group is stable",
					run.Balancer, e.Event, e.GroupStableMs, e.AllDecidingMs, e.MaxLatencyMs)
			}
		}
		if run.SteadyCommands <= 0 || run.Missing != 0 || run.Extra != 0 || run.Mismatched != 0 {
			t.Errorf("%s: %d steady commands, %d missing, %d extra, %d mismatched outcomes: want every command answered exactly once",
				run.Balancer, run.SteadyCommands, run.Missing, run.Extra, run.Mismatched)
		}
		if run.WorkerRecordsMin <= 0 || run.WorkerRecordsMax < run.WorkerRecordsMin {
			t.Errorf("%s: records per worker %d–%d: want every worker deciding", run.Balancer, run.WorkerRecordsMin, run.WorkerRecordsMax)
		}
	}
	for _, want := range []string{"partitions per worker", "none (control)", "every partition deciding again after", "missing / extra / mismatched"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("the table lacks %q", want)
		}
	}
}

// checkAssignment checks that every partition has exactly one of the
// members and that the members share them evenly, as both sticky balancers
// do.
func checkAssignment(t *testing.T, name string, a AssignmentReport, members, partitions int) {
	t.Helper()
	if a.Members != members || len(a.PartitionsPerMember) != members {
		t.Errorf("%s: %d members (%v), want %d", name, a.Members, a.PartitionsPerMember, members)
	}
	if a.Unassigned != 0 || a.MultiplyAssigned != 0 {
		t.Errorf("%s: %d partitions unassigned and %d assigned twice: want each assigned exactly once", name, a.Unassigned, a.MultiplyAssigned)
	}
	sum := 0
	for _, n := range a.PartitionsPerMember {
		sum += n
	}
	if sum != partitions || a.MaxPartitions-a.MinPartitions > 1 {
		t.Errorf("%s: partitions per member %v: want %d in all, at most one apart", name, a.PartitionsPerMember, partitions)
	}
}

// buildArbiter builds the arbiter binary the worker processes run.
func buildArbiter(t *testing.T) string {
	t.Helper()
	binary := filepath.Join(t.TempDir(), "arbiter")
	build := exec.Command("go", "build", "-o", binary, "github.com/arbiter-cqrs/arbiter/cmd/arbiter")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the arbiter binary: %v\n%s", err, out)
	}
	return binary
}
