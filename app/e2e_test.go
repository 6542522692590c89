package app

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/internal/testenv"
	"github.com/arbiter-cqrs/arbiter/internal/testkit"
	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/twmb/franz-go/pkg/kgo"
)

// arbiterBinary is built once by TestMain for the tests that run workers as
// separate processes.
var arbiterBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "arbiter-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	arbiterBinary, err = testkit.BuildArbiter(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// e2e is one test's slice of the real stack, with workers as processes.
type e2e struct {
	t         *testing.T
	brokers   []string
	redisURL  string
	redisMode string // empty: standalone
	topics    testkit.Topics
	group     string
	keyPrefix string
	store     *versionstore.Store
	out       *testkit.Collector
	workers   int
}

func newE2E(t *testing.T, partitions int32) *e2e {
	t.Helper()
	brokers := testenv.Brokers(t)
	redisURL := testenv.RedisURL(t)
	name := testenv.Name(t, "")
	e := &e2e{
		t:         t,
		brokers:   brokers,
		redisURL:  redisURL,
		topics:    testkit.Topics{Commands: name + "-commands", Events: name + "-events", Conflicts: name + "-conflicts"},
		group:     name,
		keyPrefix: name,
		store:     versionstore.New(testenv.Redis(t), versionstore.Options{KeyPrefix: name}),
	}
	testenv.CreateTopics(t, brokers, partitions, e.topics.Commands, e.topics.Events, e.topics.Conflicts)
	e.out = testkit.Collect(t, brokers, e.topics)
	return e
}

// redisArgs are the flags that reach the test's Redis.
func (e *e2e) redisArgs() []string {
	args := []string{"--redis", e.redisURL}
	if e.redisMode != "" {
		args = append(args, "--redis-mode", e.redisMode)
	}
	return args
}

func (e *e2e) startWorker(env ...string) *testkit.Process {
	e.t.Helper()
	e.workers++
	args := append([]string{"worker", "--brokers", e.brokers[0]}, e.redisArgs()...)
	return testkit.StartProcess(e.t, fmt.Sprintf("worker-%d", e.workers), arbiterBinary, env, append(args,
		"--commands-topic", e.topics.Commands,
		"--events-topic", e.topics.Events,
		"--conflicts-topic", e.topics.Conflicts,
		"--group", e.group,
		"--key-prefix", e.keyPrefix,
		"--session-timeout", "6s",
		"--transaction-timeout", "6s",
		"--max-batch", "500",
		"--log-format", "json",
		"--http-addr", "127.0.0.1:0",
	)...)
}

func (e *e2e) send(cmds []commands.Command) {
	e.t.Helper()
	records := make([]*kgo.Record, len(cmds))
	for i, cmd := range cmds {
		records[i] = testkit.CommandRecord(e.t, e.topics.Commands, cmd)
	}
	testkit.Produce(e.t, e.brokers, records...)
}

// workload makes commands over aggregates: each aggregate's commands carry
// the exact expected version a well-behaved sender would have read, except a
// share that carry a stale one.
func workload(rng *rand.Rand, prefix string, aggregates, perAggregate int, staleShare float64) []commands.Command {
	var cmds []commands.Command
	next := make([]int64, aggregates)
	for round := 0; round < perAggregate; round++ {
		for a := 0; a < aggregates; a++ {
			expected := next[a]
			if expected > 0 && rng.Float64() < staleShare {
				expected = rng.Int63n(expected)
			} else {
				next[a]++
			}
			cmds = append(cmds, commands.Command{
				ID:              fmt.Sprintf("%s-%d-%d", prefix, a, round),
				AggregateID:     fmt.Sprintf("%s-agg-%d", prefix, a),
				Type:            processor.AppendEventsType,
				ExpectedVersion: expected,
				Payload:         []byte(`{"events":[{"type":"Ticked","payload":{"round":` + fmt.Sprint(round) + `}}]}`),
			})
		}
	}
	return cmds
}

// checkExactlyOnce checks, from the read_committed output topics: exactly one
// outcome per command, contiguous versions per aggregate, and every applied
// command's event at its expected version + 1; and that Redis agrees.
func (e *e2e) checkExactlyOnce(cmds []commands.Command, timeout time.Duration) (applied, conflicts int) {
	e.t.Helper()
	ids := make([]string, len(cmds))
	for i, cmd := range cmds {
		ids[i] = cmd.ID
	}
	e.out.WaitFor(timeout, ids...)
	// Outcomes that were not yet read cannot be doubled later: wait for one
	// more quiet second of reading before judging.
	time.Sleep(time.Second)
	got := e.out.Snapshot()
	versions := make(map[string][]int64)
	for _, cmd := range cmds {
		o := got[cmd.ID]
		if len(o.Events)+len(o.Conflicts) != 1 {
			e.t.Errorf("command %s has %d events and %d conflicts: want exactly one outcome", cmd.ID, len(o.Events), len(o.Conflicts))
			continue
		}
		if len(o.Events) == 1 {
			applied++
			if o.Events[0].Version != cmd.ExpectedVersion+1 {
				e.t.Errorf("lost update: command %s expected version %d, but its event has version %d", cmd.ID, cmd.ExpectedVersion, o.Events[0].Version)
			}
			versions[cmd.AggregateID] = append(versions[cmd.AggregateID], o.Events[0].Version)
		} else {
			conflicts++
		}
	}
	for aggregateID, vs := range versions {
		sort.Slice(vs, func(i, j int) bool { return vs[i] < vs[j] })
		for i, v := range vs {
			if v != int64(i+1) {
				e.t.Fatalf("aggregate %s: versions %v are not contiguous from 1", aggregateID, vs)
			}
		}
		aggregate, err := e.store.Get(context.Background(), aggregateID)
		if err != nil {
			e.t.Fatal(err)
		}
		if aggregate.Version != int64(len(vs)) {
			e.t.Errorf("aggregate %s: redis holds version %d, the events topic %d", aggregateID, aggregate.Version, len(vs))
		}
	}
	return applied, conflicts
}

// TestWorkerDiesBetweenRedisAndKafkaCommit: a worker process exits right
// after its Redis compare-and-set (or with its records in an open
// transaction) and another worker takes its partitions over. The recorded
// outcomes are re-published: still exactly one outcome per command and
// contiguous versions.
func TestWorkerDiesBetweenRedisAndKafkaCommit(t *testing.T) {
	for _, hook := range []string{"ARBITER_TEST_EXIT_AFTER_REDIS_COMMIT", "ARBITER_TEST_EXIT_BEFORE_END"} {
		t.Run(hook, func(t *testing.T) {
			e := newE2E(t, 4)
			rng := rand.New(rand.NewSource(1))
			cmds := workload(rng, "crash", 40, 10, 0.1)
			doomed := e.startWorker(hook + "=1")
			e.send(cmds)
			if code := doomed.Wait(90 * time.Second); code != testHookExitCode {
				t.Fatalf("the doomed worker exited with %d, want the hook's %d", code, testHookExitCode)
			}
			start := time.Now()
			survivor := e.startWorker()
			applied, conflicts := e.checkExactlyOnce(cmds, 120*time.Second)
			t.Logf("takeover after the crash: all %d outcomes visible %v after the survivor started (%d applied, %d conflicts)",
				len(cmds), time.Since(start).Round(100*time.Millisecond), applied, conflicts)
			survivor.Signal(syscall.SIGTERM)
			if code := survivor.Wait(60 * time.Second); code != 0 {
				t.Fatalf("the survivor exited with %d after SIGTERM, want 0", code)
			}
			// The doomed worker's batch was decided in Redis but never
			// committed: the survivor must have re-published it.
			if replayed := loggedCount(t, survivor.Output(), "worker stopped", "replayed"); replayed == 0 {
				t.Fatalf("the survivor replayed no recorded outcome; the test did not exercise the replay path")
			}
		})
	}
}

// loggedCount returns a numeric field of the last JSON log line with msg.
func loggedCount(t *testing.T, output, msg, field string) int64 {
	t.Helper()
	var value int64 = -1
	for _, line := range strings.Split(output, "\n") {
		var entry map[string]any
		if json.Unmarshal([]byte(line), &entry) != nil || entry["msg"] != msg {
			continue
		}
		if n, ok := entry[field].(float64); ok {
			value = int64(n)
		}
	}
	if value < 0 {
		t.Fatalf("no %q log line with field %s in:\n%s", msg, field, output)
	}
	return value
}

// TestThreeWorkerProcesses runs 10,000 commands over 500 aggregates, 10% of
// them stale, through three worker processes in one group, with a fourth
// joining and one leaving mid-way (two rebalances).
func TestThreeWorkerProcesses(t *testing.T) {
	e := newE2E(t, 12)
	rng := rand.New(rand.NewSource(42))
	cmds := workload(rng, "three", 500, 20, 0.1)
	workers := []*testkit.Process{e.startWorker(), e.startWorker(), e.startWorker()}
	half := len(cmds) / 2
	e.send(cmds[:half])
	workers = append(workers, e.startWorker())
	e.send(cmds[half:])
	workers[0].Signal(syscall.SIGTERM)
	if code := workers[0].Wait(60 * time.Second); code != 0 {
		t.Errorf("a worker stopped with SIGTERM exited with %d, want 0", code)
	}
	applied, conflicts := e.checkExactlyOnce(cmds, 240*time.Second)
	if conflicts == 0 || applied == 0 {
		t.Fatalf("the workload must have both applied and stale commands: %d applied, %d conflicts", applied, conflicts)
	}
	t.Logf("%d commands: %d applied, %d version conflicts", len(cmds), applied, conflicts)
}

// TestStalledWorkerWakesUpWithoutItsPartitions: a worker freezes (SIGSTOP)
// with a batch in hand, either decided but not yet compare-and-set in Redis,
// or set in Redis but not yet produced; it stays frozen past its session
// timeout, so the other worker takes its partitions; then it wakes up
// (SIGCONT) and carries on with its stale batch. Its Redis change must be
// fenced, or its transaction refused, and every command still gets exactly
// one outcome.
func TestStalledWorkerWakesUpWithoutItsPartitions(t *testing.T) {
	for _, hook := range []string{"ARBITER_TEST_STOP_BEFORE_REDIS_COMMIT", "ARBITER_TEST_STOP_AFTER_REDIS_COMMIT"} {
		t.Run(hook, func(t *testing.T) {
			e := newE2E(t, 6)
			rng := rand.New(rand.NewSource(7))
			cmds := workload(rng, "zombie", 60, 20, 0.1)
			zombie := e.startWorker(hook + "=1")
			waitFor(t, zombie, "worker starting")
			e.send(cmds[:len(cmds)/2])
			waitFor(t, zombie, "test hook fired")
			e.startWorker()
			e.send(cmds[len(cmds)/2:])
			time.Sleep(9 * time.Second) // past the 6 s session timeout: the group moves on without it
			zombie.Signal(syscall.SIGCONT)
			waitFor(t, zombie, "test hook: woke up")
			applied, conflicts := e.checkExactlyOnce(cmds, 120*time.Second)
			t.Logf("%d commands through a stalled and woken worker: %d applied, %d conflicts", len(cmds), applied, conflicts)
			zombie.Signal(syscall.SIGTERM)
			if code := zombie.Wait(60 * time.Second); code != 0 {
				t.Fatalf("the woken worker exited with %d after SIGTERM, want 0", code)
			}
			if aborted := loggedCount(t, zombie.Output(), "worker stopped", "transactions_aborted"); aborted == 0 &&
				!strings.Contains(zombie.Output(), "transactional session failed") {
				t.Fatalf("the woken worker's stale batch was neither aborted nor refused:\n%s", zombie.Output())
			}
		})
	}
}

// waitFor waits until a process has printed text.
func waitFor(t *testing.T, p *testkit.Process, text string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(p.Output(), text) {
		if time.Now().After(deadline) || p.Exited() {
			t.Fatalf("%s never printed %q:\n%s", p.Name, text, p.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRedisAmnesia: redis-server restarts without persistence in the middle
// of a run. The workers must stop deciding (every aggregate would look new),
// say so with the error that points at rebuild-versions, publish no event
// with a wrong version, and resume once 'arbiter rebuild-versions' restored
// the versions.
func TestRedisAmnesia(t *testing.T) {
	e := newE2E(t, 4)
	redisServer := testenv.StartRedisServer(t, testenv.RedisServerOptions{})
	e.redisURL = redisServer.URL()
	e.store = versionstore.New(redisServer.Client(), versionstore.Options{KeyPrefix: e.keyPrefix})
	rng := rand.New(rand.NewSource(3))
	cmds := workload(rng, "amnesia", 50, 12, 0.1)
	half := len(cmds) / 2
	worker := e.startWorker()
	e.send(cmds[:half])
	e.out.WaitFor(90*time.Second, cmds[half-1].ID)

	redisServer.Restart() // no persistence: every version is gone
	e.send(cmds[half:])
	waitFor(t, worker, "run 'arbiter rebuild-versions'")
	// Outcomes committed before the worker stopped may still be on their
	// way to the collector: let it settle before counting.
	before := settled(e.out, 2*time.Second)
	time.Sleep(3 * time.Second)
	if after := len(e.out.Snapshot()); after != before {
		t.Fatalf("outcomes kept coming while Redis had lost its data: %d, then %d", before, after)
	}

	rebuild := testkit.StartProcess(t, "rebuild-versions", arbiterBinary, nil, "rebuild-versions",
		"--brokers", e.brokers[0], "--redis", e.redisURL, "--events-topic", e.topics.Events, "--key-prefix", e.keyPrefix,
		// The workers' commands topic and group: the rebuild sets the
		// watermarks to the group's committed offsets on that topic.
		"--commands-topic", e.topics.Commands, "--group", e.group)
	if code := rebuild.Wait(120 * time.Second); code != 0 {
		t.Fatalf("rebuild-versions exited with %d:\n%s", code, rebuild.Output())
	}
	waitFor(t, worker, "processing resumes")
	applied, conflicts := e.checkExactlyOnce(cmds, 120*time.Second)
	t.Logf("%d commands across a Redis restart without persistence: %d applied, %d conflicts; rebuild said: %s",
		len(cmds), applied, conflicts, lastLine(rebuild.Output()))
}

func lastLine(output string) string {
	lines := strings.Split(strings.TrimSpace(output), "\n")
	return lines[len(lines)-1]
}

// settled returns the number of outcomes read once it has not changed for
// quiet.
func settled(out *testkit.Collector, quiet time.Duration) int {
	n, since := len(out.Snapshot()), time.Now()
	for time.Since(since) < quiet {
		time.Sleep(200 * time.Millisecond)
		if m := len(out.Snapshot()); m != n {
			n, since = m, time.Now()
		}
	}
	return n
}
