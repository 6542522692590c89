package app

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/examples/product"
	"github.com/arbiter-cqrs/arbiter/internal/testenv"
	"github.com/arbiter-cqrs/arbiter/internal/testkit"
	"github.com/cockroachdb/errors"
	"github.com/redis/go-redis/v9"
)

// cliStack is one test's topics and Redis key prefix, with worker processes
// and the arbiter CLI run against them.
type cliStack struct {
	t         *testing.T
	brokers   []string
	redisURL  string
	topics    testkit.Topics
	group     string
	keyPrefix string
	workers   int
	// security are flags added to every run: TLS, SASL and Redis ACL
	// settings of a secured stack.
	security []string
	// binary is the CLI run; default: arbiterBinary.
	binary string
}

func newCLIStack(t *testing.T, partitions int32) *cliStack {
	t.Helper()
	brokers := testenv.Brokers(t)
	redisURL := testenv.RedisURL(t)
	name := testenv.Name(t, "")
	s := &cliStack{
		t: t, brokers: brokers, redisURL: redisURL,
		topics:    testkit.Topics{Commands: name + "-commands", Events: name + "-events", Conflicts: name + "-conflicts"},
		group:     name,
		keyPrefix: name,
		binary:    arbiterBinary,
	}
	testenv.CreateTopics(t, brokers, partitions, s.topics.Commands, s.topics.Events, s.topics.Conflicts)
	t.Cleanup(func() { deleteKeys(t, redisURL, name) })
	return s
}

// deleteKeys removes a test's keys from the shared Redis.
func deleteKeys(t *testing.T, redisURL, prefix string) {
	options, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Errorf("parse %s: %v", redisURL, err)
		return
	}
	client := redis.NewClient(options)
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	iter := client.Scan(ctx, 0, prefix+":*", 5000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		if keys = append(keys, iter.Val()); len(keys) == 5000 {
			client.Unlink(ctx, keys...)
			keys = keys[:0]
		}
	}
	if len(keys) > 0 {
		client.Unlink(ctx, keys...)
	}
	if err := iter.Err(); err != nil {
		t.Errorf("delete the keys of prefix %s: %v", prefix, err)
	}
}

// flags are the connection flags of every subcommand.
func (s *cliStack) flags() []string {
	return append([]string{
		"--brokers", strings.Join(s.brokers, ","),
		"--redis", s.redisURL,
		"--commands-topic", s.topics.Commands,
		"--events-topic", s.topics.Events,
		"--conflicts-topic", s.topics.Conflicts,
		"--key-prefix", s.keyPrefix,
	}, s.security...)
}

func (s *cliStack) startWorker() *testkit.Process {
	s.t.Helper()
	s.workers++
	return testkit.StartProcess(s.t, fmt.Sprintf("worker-%d", s.workers), s.binary, nil,
		append([]string{"worker", "--group", s.group, "--session-timeout", "6s", "--transaction-timeout", "6s", "--log-format", "json", "--http-addr", "127.0.0.1:0"}, s.flags()...)...)
}

func stopWorker(t *testing.T, worker *testkit.Process) {
	t.Helper()
	worker.Signal(syscall.SIGTERM)
	if code := worker.Wait(60 * time.Second); code != 0 {
		t.Fatalf("%s exited with %d after SIGTERM, want 0", worker.Name, code)
	}
}

// result is what one arbiter run printed and its exit code.
type result struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

// arbiter runs the CLI to its end with stdin (may be nil) and the stack's
// flags right after the subcommand (they may come after arguments too).
func (s *cliStack) arbiter(timeout time.Duration, stdin io.Reader, args ...string) result {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	command := 1
	if args[0] == "topics" {
		command = 2 // topics create
	}
	argv := append(append(append([]string{}, args[:command]...), s.flags()...), args[command:]...)
	cmd := exec.CommandContext(ctx, s.binary, argv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		s.t.Fatalf("arbiter %s did not finish within %v; stderr:\n%s", strings.Join(args, " "), timeout, r.stderr)
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		s.t.Fatalf("run arbiter %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// TestSendFileOf100000Commands sends a 100,000-line JSONL file with arbiter
// send -f through one worker process and reads every outcome back with
// arbiter tail: each aggregate's commands carry the versions a well-behaved
// sender would read, except every 20th round, which is stale.
func TestSendFileOf100000Commands(t *testing.T) {
	const aggregates, rounds = 1000, 100
	s := newCLIStack(t, 6)
	path := filepath.Join(t.TempDir(), "commands.jsonl")
	file, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	out := bufio.NewWriter(file)
	next := make([]int64, aggregates)
	wantConflicts := 0
	for round := range rounds {
		for a := range aggregates {
			expected := next[a]
			if round%20 == 19 {
				expected--
				wantConflicts++
			} else {
				next[a]++
			}
			fmt.Fprintf(out, `{"id":"c-%d-%d","aggregateId":"agg-%d","type":"AppendEvents","expectedVersion":%d,"payload":{"events":[{"type":"Ticked","payload":{"round":%d}}]},"metadata":{"source":"file"}}`+"\n",
				a, round, a, expected, round)
		}
	}
	if err := errors.CombineErrors(out.Flush(), file.Close()); err != nil {
		t.Fatal(err)
	}
	total := aggregates * rounds
	wantApplied := total - wantConflicts

	worker := s.startWorker()
	sent := s.arbiter(3*time.Minute, nil, "send", "-f", path)
	if sent.code != 0 {
		t.Fatalf("send -f exited with %d; stderr:\n%s", sent.code, sent.stderr)
	}
	if !regexp.MustCompile(`progress: \d+/100000 commands sent \(\d+%\), \d+/s`).MatchString(sent.stderr) ||
		!strings.Contains(sent.stderr, "sent 100000 of 100000 commands") {
		t.Fatalf("send -f printed no progress or summary on stderr:\n%s", sent.stderr)
	}
	if lines := strings.Count(sent.stderr, "\n"); lines > 12 {
		t.Fatalf("send -f printed %d lines of progress to a non-terminal; want at most a line per tenth:\n%s", lines, sent.stderr)
	}
	t.Logf("arbiter send -f: %d commands in %v (%.0f/s, process start included); stderr:\n%s",
		total, sent.took.Round(time.Millisecond), float64(total)/sent.took.Seconds(), sent.stderr)

	// tail --limit waits for the outcomes; --exit-at-end then proves there
	// are no more than that.
	start := time.Now()
	tailEvents := s.arbiter(4*time.Minute, nil, "tail", "events", "--from-start", "--json", "--limit", fmt.Sprint(wantApplied))
	tailConflicts := s.arbiter(time.Minute, nil, "tail", "conflicts", "--from-start", "--json", "--limit", fmt.Sprint(wantConflicts))
	t.Logf("all %d outcomes read %v after the send finished", total, time.Since(start).Round(time.Millisecond))
	stopWorker(t, worker)
	for _, r := range []result{tailEvents, tailConflicts} {
		if r.code != 0 {
			t.Fatalf("tail exited with %d: %s", r.code, r.stderr)
		}
	}
	versions := make(map[string]int64)
	for i, line := range strings.Split(strings.TrimSpace(tailEvents.stdout), "\n") {
		var e events.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("tail --json line %d is not an event: %v: %s", i+1, err, line)
		}
		if e.Version != versions[e.AggregateID]+1 {
			t.Fatalf("aggregate %s: event version %d after %d; versions must be contiguous and in order", e.AggregateID, e.Version, versions[e.AggregateID])
		}
		versions[e.AggregateID] = e.Version
	}
	if len(versions) != aggregates {
		t.Fatalf("events of %d aggregates, want %d", len(versions), aggregates)
	}
	for _, line := range strings.Split(strings.TrimSpace(tailConflicts.stdout), "\n") {
		var c events.Conflict
		if err := json.Unmarshal([]byte(line), &c); err != nil || c.Reason != events.ReasonVersionConflict {
			t.Fatalf("tail --json conflict %s: %v; want only version conflicts", line, err)
		}
	}
	for topic, want := range map[string]int{"events": wantApplied, "conflicts": wantConflicts} {
		r := s.arbiter(time.Minute, nil, "tail", topic, "--from-start", "--exit-at-end")
		if got := strings.Count(r.stdout, "\n"); r.code != 0 || got != want {
			t.Fatalf("tail %s --from-start --exit-at-end printed %d lines (exit %d), want exactly %d: one outcome per command", topic, got, r.code, want)
		}
	}
}

// TestSendAndTailOutcomes covers send from flags and from stdin with --wait,
// the exit codes, and tail's filters and formats.
func TestSendAndTailOutcomes(t *testing.T) {
	s := newCLIStack(t, 3)
	s.startWorker()

	create := s.arbiter(time.Minute, nil, "send", "--id", "c-0", "--aggregate", "prod-123", "--type", product.CreateProductType,
		"--expected-version", "0", "--payload", `{"name":"Espresso cup","price":24.5,"stock":100}`, "--metadata", "user=alice", "--wait")
	if create.code != 0 || create.stdout != "c-0 prod-123: applied at version 1\n" {
		t.Fatalf("send --wait: exit %d, stdout %q, stderr %s", create.code, create.stdout, create.stderr)
	}
	stale := s.arbiter(time.Minute, nil, "send", "--id", "c-1", "--aggregate", "prod-123", "--type", product.ChangePriceType,
		"--expected-version", "0", "--payload", `{"newPrice":22}`, "--wait")
	if stale.code != exitNotApplied || stale.stdout != "c-1 prod-123: version_conflict: expected version 0, but found 1 (events since: ProductCreated@1)\n" ||
		!strings.Contains(stale.stderr, "arbiter get prod-123") {
		t.Fatalf("a stale send --wait: exit %d, stdout %q, stderr %q; want exit %d, the conflict, and what to do next", stale.code, stale.stdout, stale.stderr, exitNotApplied)
	}
	resend := s.arbiter(time.Minute, nil, "send", "--id", "c-0", "--aggregate", "prod-123", "--type", product.CreateProductType,
		"--expected-version", "0", "--payload", `{"name":"Espresso cup","price":24.5,"stock":100}`, "--wait")
	if resend.code != 0 || !strings.Contains(resend.stdout, "applied at version 1 (a resend") {
		t.Fatalf("a resend of an applied command: exit %d, stdout %q; want its original outcome", resend.code, resend.stdout)
	}
	usage := s.arbiter(time.Minute, nil, "send", "--aggregate", "prod-123", "--type", product.ChangePriceType)
	if usage.code != exitUsage || !strings.Contains(usage.stderr, "--expected-version") {
		t.Fatalf("send without --expected-version: exit %d, stderr %q; want %d naming the flag", usage.code, usage.stderr, exitUsage)
	}

	lines := strings.Join([]string{
		`{"id":"c-2","aggregateId":"prod-123","type":"ChangePrice","expectedVersion":1,"payload":{"newPrice":22}}`,
		`{"id":"c-3","aggregateId":"prod-123","type":"IncreaseStock","expectedVersion":2,"payload":{"newStock":120}}`,
		``,
		`not a command`,
		`{"id":"c-4","aggregateId":"prod-123","type":"IncreaseStock","payload":{"newStock":130}}`,
		`{"id":"c-5","aggregateId":"prod-456","type":"CreateProduct","expectedVersion":0,"payload":{"name":"Saucer","price":3,"stock":10}}`,
	}, "\n") + "\n"
	many := s.arbiter(time.Minute, strings.NewReader(lines), "send", "--wait")
	if many.code != exitFailure || !strings.Contains(many.stderr, "line 4: ") || !strings.Contains(many.stderr, "line 5: ") ||
		!strings.Contains(many.stderr, "expectedVersion is missing") || !strings.Contains(many.stderr, "2 of 5 lines were not sent") {
		t.Fatalf("send from stdin with two bad lines: exit %d, stderr:\n%s\nwant exit 1 naming lines 4 and 5", many.code, many.stderr)
	}
	for _, want := range []string{"c-2 prod-123: applied at version 2\n", "c-3 prod-123: applied at version 3\n", "c-5 prod-456: applied at version 1\n"} {
		if !strings.Contains(many.stdout, want) {
			t.Fatalf("send --wait from stdin printed %q, missing %q", many.stdout, want)
		}
	}

	events := s.arbiter(time.Minute, nil, "tail", "events", "--from-start", "--exit-at-end", "--aggregate", "prod-123")
	if events.code != 0 || strings.Count(events.stdout, "\n") != 3 || !strings.Contains(events.stdout, "prod-123@2 PriceReduced (command c-2)") ||
		strings.Contains(events.stdout, "prod-456") {
		t.Fatalf("tail events --aggregate prod-123: exit %d, stdout:\n%s", events.code, events.stdout)
	}
	conflicts := s.arbiter(time.Minute, nil, "tail", "conflicts", "--from-start", "--limit", "2")
	if conflicts.code != 0 || !strings.Contains(conflicts.stdout, "prod-123 command c-1 version_conflict: expected version 0, but found 1") ||
		!strings.Contains(conflicts.stdout, "prod-123 command c-0 duplicate:") {
		t.Fatalf("tail conflicts: exit %d, stdout:\n%s", conflicts.code, conflicts.stdout)
	}
	now := s.arbiter(time.Minute, nil, "tail", "events", "--exit-at-end")
	if now.code != 0 || now.stdout != "" {
		t.Fatalf("tail from now with --exit-at-end: exit %d, printed %q; want nothing", now.code, now.stdout)
	}
	if r := s.arbiter(time.Minute, nil, "tail", "snapshots"); r.code != exitUsage {
		t.Fatalf("tail snapshots: exit %d, want %d", r.code, exitUsage)
	}

	// prod-123 is at version 3: PriceReduced at 2, StockIncreased at 3. A
	// price change that read version 2 is rebased past the stock change.
	rebased := s.arbiter(time.Minute, nil, "send", "--id", "c-6", "--aggregate", "prod-123", "--type", product.ChangePriceType,
		"--expected-version", "2", "--payload", `{"newPrice":20}`, "--on-conflict", "rebase", "--wait")
	if rebased.code != 0 || rebased.stdout != "c-6 prod-123: applied at version 4 (rebased from expected version 2)\n" {
		t.Fatalf("send --on-conflict rebase --wait: exit %d, stdout %q, stderr %s", rebased.code, rebased.stdout, rebased.stderr)
	}
	if r := s.arbiter(time.Minute, nil, "send", "--aggregate", "prod-123", "--type", product.ChangePriceType, "--expected-version", "2", "--on-conflict", "merge"); r.code != exitUsage {
		t.Fatalf("send --on-conflict merge: exit %d, want %d", r.code, exitUsage)
	}
}

// TestRebuildVersionsAfterFlushAll: Redis loses everything (FLUSHALL of a
// redis-server of the test's own); rebuild-versions restores every version
// and snapshot from the events topic, and the next command with the right
// expected version is applied while a stale one conflicts.
func TestRebuildVersionsAfterFlushAll(t *testing.T) {
	s := newCLIStack(t, 3)
	server := testenv.StartRedisServer(t, testenv.RedisServerOptions{})
	s.redisURL = server.URL()
	worker := s.startWorker()

	producer, err := commands.NewProducer(context.Background(), commands.ProducerConfig{
		Brokers: s.brokers, CommandsTopic: s.topics.Commands, EventsTopic: s.topics.Events, ConflictsTopic: s.topics.Conflicts,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	send := func(id, productID, commandType string, expectedVersion int64, payload any) (commands.Applied, error) {
		t.Helper()
		cmd, err := product.Command(id, productID, commandType, expectedVersion, payload)
		if err != nil {
			t.Fatal(err)
		}
		return producer.SendAndWait(ctx, cmd)
	}
	// prod-123 at version 5 (price 25, stock 100); prod-9 at version 1.
	setup := []struct {
		commandType string
		payload     any
	}{
		{product.CreateProductType, product.CreateProduct{Name: "Chair", Price: 30, Stock: 10}},
		{product.ChangePriceType, product.ChangePrice{NewPrice: 28}},
		{product.IncreaseStockType, product.IncreaseStock{NewStock: 50}},
		{product.ChangePriceType, product.ChangePrice{NewPrice: 25}},
		{product.IncreaseStockType, product.IncreaseStock{NewStock: 100}},
	}
	for i, step := range setup {
		if applied, err := send(fmt.Sprintf("setup-%d", i), "prod-123", step.commandType, int64(i), step.payload); err != nil || applied.Version != int64(i+1) {
			t.Fatalf("setup %d: %+v, %v", i, applied, err)
		}
	}
	if _, err := send("other-1", "prod-9", product.CreateProductType, 0, product.CreateProduct{Name: "Lamp", Price: 5, Stock: 1}); err != nil {
		t.Fatal(err)
	}
	before := s.arbiter(time.Minute, nil, "get", "prod-123")

	stopWorker(t, worker)
	if err := server.Client().FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if gone := s.arbiter(time.Minute, nil, "get", "prod-123"); !strings.Contains(gone.stdout, `"version": 0`) {
		t.Fatalf("after FLUSHALL redis still holds prod-123 (exit %d):\n%s%s", gone.code, gone.stdout, gone.stderr)
	}
	dry := s.arbiter(time.Minute, nil, "rebuild-versions", "--dry-run")
	if dry.code != exitFound || !strings.Contains(dry.stdout, "mismatch prod-123: redis version 0, events version 5") {
		t.Fatalf("rebuild-versions --dry-run after FLUSHALL: exit %d, stdout:\n%s\nwant exit %d and the mismatch", dry.code, dry.stdout, exitFound)
	}
	rebuilt := s.arbiter(time.Minute, nil, "rebuild-versions")
	if rebuilt.code != 0 || !strings.Contains(rebuilt.stdout, "read 6 events of 2 aggregates; rewrote 2 aggregates") {
		t.Fatalf("rebuild-versions: exit %d, stdout:\n%s\nstderr:\n%s", rebuilt.code, rebuilt.stdout, rebuilt.stderr)
	}
	if after := s.arbiter(time.Minute, nil, "get", "prod-123"); after.stdout != before.stdout {
		t.Fatalf("rebuilt prod-123:\n%s\nwant what redis held before FLUSHALL:\n%s", after.stdout, before.stdout)
	}

	s.startWorker()
	applied, err := send("after-1", "prod-123", product.IncreaseStockType, 5, product.IncreaseStock{NewStock: 120})
	if err != nil || applied.Version != 6 {
		t.Fatalf("a command with the right expected version after the rebuild: %+v, %v; want applied at version 6", applied, err)
	}
	_, err = send("after-2", "prod-123", product.ChangePriceType, 5, product.ChangePrice{NewPrice: 22})
	var conflict *commands.ConflictError
	if !errors.As(err, &conflict) || !errors.Is(err, commands.ErrVersionConflict) || conflict.ExpectedVersion != 5 || conflict.ActualVersion != 6 {
		t.Fatalf("a stale command after the rebuild: %v; want a version conflict, expected 5 actual 6", err)
	}
	if applied, err := send("after-3", "prod-9", product.ChangePriceType, 1, product.ChangePrice{NewPrice: 4}); err != nil || applied.Version != 2 {
		t.Fatalf("prod-9 after the rebuild: %+v, %v; want applied at version 2", applied, err)
	}
}
