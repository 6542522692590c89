package versionstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/redis/go-redis/v9"

	"github.com/arbiter-cqrs/arbiter/internal/testenv"
)

// The tests in this file prove the commit script on a real redis-server: the
// test stack's, found through ARBITER_TEST_REDIS_URL (they are skipped
// without it, and fail under CI=true), or, for tests that flush the script
// cache or restart the server, one of their own. Each test on the shared
// server keeps its keys under a key prefix of its own and deletes them when
// it ends.

// realStore returns a store over the test Redis server with a key prefix
// unique to this call; its keys are deleted when the test ends.
func realStore(t *testing.T, opts Options) *Store {
	t.Helper()
	client := testenv.Redis(t)
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = testenv.Name(t, "versionstore")
	}
	t.Cleanup(func() { deleteKeys(t, client, opts.KeyPrefix+":") })
	return initialized(t, New(client, opts))
}

func realStores(t *testing.T) *Store { return realStore(t, Options{}) }

// deleteKeys deletes every key starting with prefix, which holds no glob
// characters (testenv.Name makes it of letters, digits and dashes).
func deleteKeys(t *testing.T, client *redis.Client, prefix string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var batch []string
	iter := client.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		if batch = append(batch, iter.Val()); len(batch) == 1000 {
			if err := client.Unlink(ctx, batch...).Err(); err != nil {
				t.Errorf("delete test keys under %s: %v", prefix, err)
				return
			}
			batch = batch[:0]
		}
	}
	if err := iter.Err(); err != nil {
		t.Errorf("scan test keys under %s: %v", prefix, err)
		return
	}
	if len(batch) > 0 {
		if err := client.Unlink(ctx, batch...).Err(); err != nil {
			t.Errorf("delete test keys under %s: %v", prefix, err)
		}
	}
}

func TestRedisCommitThenLoad(t *testing.T) { runCommitThenLoad(t, realStores(t)) }

func TestRedisCommitFencing(t *testing.T) { runCommitFencing(t, realStores) }

func TestRedisCommitFencesEachAggregate(t *testing.T) {
	runCommitFencesEachAggregate(t, realStores(t))
}

func TestRedisCommitConflictOnly(t *testing.T) { runCommitConflictOnly(t, realStores(t)) }

func TestRedisPut(t *testing.T) { runPut(t, realStores(t)) }

func TestRedisConcurrentAdvance(t *testing.T) { runConcurrentAdvance(t, realStores(t), 25) }

func TestRedisStoreMatchesModel(t *testing.T) { runStoreMatchesModel(t, realStores(t)) }

func TestRedisKeysOfDifferentAggregatesDoNotCollide(t *testing.T) {
	runKeysOfDifferentAggregatesDoNotCollide(t, realStores)
}

func TestRedisOutcomeTTL(t *testing.T) {
	tests := []struct {
		name    string
		ttl     time.Duration
		wantTTL time.Duration
	}{
		{name: "default", ttl: 0, wantTTL: 24 * time.Hour},
		{name: "ninety seconds", ttl: 90 * time.Second, wantTTL: 90 * time.Second},
		// Redis answers PX 0 with an error after the script has already
		// written the version: the TTL must never round down to 0.
		{name: "under a millisecond", ttl: 500 * time.Microsecond, wantTTL: time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := realStore(t, Options{OutcomeTTL: tt.ttl})
			ctx := context.Background()
			if err := store.Commit(ctx, []Change{testChange("a", 0, 1, "c-1")}); err != nil {
				got := mustGet(t, store, "a")
				t.Fatalf("Commit = %v, and aggregate a is now at version %d: a failed commit must write nothing", err, got.Version)
			}
			if got := mustGet(t, store, "a"); got.Version != 1 {
				t.Errorf("aggregate a at version %d after Commit, want 1", got.Version)
			}
			if got := store.Client().PTTL(ctx, store.aggregateKey("a")).Val(); got != -1 {
				t.Errorf("PTTL of the aggregate hash = %s, want -1 (no TTL): versions must never expire", got)
			}
			if tt.wantTTL < time.Second {
				return // the outcome key may be gone already
			}
			// PTTL counts down from the TTL set, so it is at most the TTL
			// and, this soon after, not much less.
			got := store.Client().PTTL(ctx, store.outcomeKey("a", "c-1")).Val()
			if got > tt.wantTTL || got < tt.wantTTL-10*time.Second {
				t.Errorf("PTTL of the outcome key = %s, want just under %s", got, tt.wantTTL)
			}
		})
	}
}

// pipelineRecorder is a go-redis hook that records the commands a client
// sends, and can stand in for a pipeline's execution.
type pipelineRecorder struct {
	mu        sync.Mutex
	pipelines [][]string // the command names of each pipeline
	loads     int        // SCRIPT commands sent alone
	// around, when set, runs each pipeline in place of next.
	around func(ctx context.Context, cmds []redis.Cmder, next redis.ProcessPipelineHook) error
}

func (r *pipelineRecorder) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *pipelineRecorder) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "script" {
			r.mu.Lock()
			r.loads++
			r.mu.Unlock()
		}
		return next(ctx, cmd)
	}
}

func (r *pipelineRecorder) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		names := make([]string, len(cmds))
		setup := true
		for i, cmd := range cmds {
			names[i] = cmd.Name()
			setup = setup && connectionSetup[names[i]]
		}
		if setup {
			// go-redis sets up each new connection with a pipeline of
			// its own: not the store's.
			return next(ctx, cmds)
		}
		r.mu.Lock()
		r.pipelines = append(r.pipelines, names)
		around := r.around
		r.mu.Unlock()
		if around != nil {
			return around(ctx, cmds, next)
		}
		return next(ctx, cmds)
	}
}

// connectionSetup are the commands go-redis sends on a new connection.
var connectionSetup = map[string]bool{"hello": true, "client": true, "auth": true, "select": true, "ping": true, "readonly": true}

// sizes returns the number of commands of each recorded pipeline, and the
// number of SCRIPT commands.
func (r *pipelineRecorder) sizes() ([]int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sizes := make([]int, len(r.pipelines))
	for i, names := range r.pipelines {
		sizes[i] = len(names)
	}
	return sizes, r.loads
}

func firstErr(cmds []redis.Cmder) error {
	for _, cmd := range cmds {
		if err := cmd.Err(); err != nil {
			return err
		}
	}
	return nil
}

// TestRedisManyAggregates commits 2,000 aggregates in one pipeline and loads
// them back in one.
func TestRedisManyAggregates(t *testing.T) {
	const aggregates = 2000
	store := realStore(t, Options{})
	ctx := context.Background()
	client := store.Client().(*redis.Client)
	// With the script cached, the first pipeline is the only one.
	if err := commitScript.Load(ctx, client).Err(); err != nil {
		t.Fatal(err)
	}
	recorder := &pipelineRecorder{}
	client.AddHook(recorder)

	changes := make([]Change, aggregates)
	ids := make([]string, aggregates)
	refs := make([]CommandRef, aggregates)
	for i := range changes {
		ids[i] = fmt.Sprintf("prod-%04d", i)
		changes[i] = testChange(ids[i], 0, int64(i%5+1), "c-"+ids[i])
		refs[i] = CommandRef{AggregateID: ids[i], CommandID: "c-" + ids[i]}
	}
	mustCommit(t, store, changes...)
	if sizes, loads := recorder.sizes(); len(sizes) != 1 || sizes[0] != aggregates || loads != 0 {
		t.Errorf("Commit of %d aggregates sent pipelines of %v commands and %d SCRIPT commands, want one pipeline of %d", aggregates, sizes, loads, aggregates)
	}

	recorder.pipelines = nil
	loaded, outcomes, err := store.Load(ctx, ids, refs)
	if err != nil {
		t.Fatalf("Load failed: %v", err)
	}
	// One HMGET of each aggregate, and one of each of its two decision
	// buckets (the previous and the current), all in one pipeline.
	if sizes, _ := recorder.sizes(); len(sizes) != 1 || sizes[0] != 3*aggregates {
		t.Errorf("Load of %d aggregates and outcomes sent pipelines of %v commands, want one of %d", aggregates, sizes, 3*aggregates)
	}
	for i, id := range ids {
		if got := loaded[id]; got.Version != changes[i].ToVersion {
			t.Fatalf("aggregate %s at version %d, want %d", id, got.Version, changes[i].ToVersion)
		}
		if _, ok := outcomes[refs[i]]; !ok {
			t.Fatalf("outcome of %+v not recorded", refs[i])
		}
	}

	// Half of the next changes are stale: each is refused on its own.
	next := make([]Change, aggregates)
	for i, change := range changes {
		from := change.ToVersion
		if i%2 == 1 {
			from--
		}
		next[i] = testChange(change.AggregateID, from, from+1, "c2-"+change.AggregateID)
	}
	fenced := fencedErrors(store.Commit(ctx, next))
	if len(fenced) != aggregates/2 {
		t.Fatalf("Commit of %d changes, half of them stale, returned %d fenced errors, want %d", aggregates, len(fenced), aggregates/2)
	}
	for i, id := range ids {
		want := changes[i].ToVersion
		if i%2 == 0 {
			want++
		}
		if got := mustGet(t, store, id); got.Version != want {
			t.Fatalf("aggregate %s at version %d, want %d", id, got.Version, want)
		}
	}
}

// ownRedis starts a redis-server of the test's own, for tests that flush its
// script cache or restart it, and returns a store over it with a recorder
// hook on its client.
func ownRedis(t *testing.T, options testenv.RedisServerOptions) (*Store, *testenv.RedisServer, *pipelineRecorder) {
	t.Helper()
	server := testenv.StartRedisServer(t, options)
	client := server.Client()
	store := initialized(t, New(client, Options{OutcomeTTL: time.Hour}))
	recorder := &pipelineRecorder{}
	client.AddHook(recorder)
	return store, server, recorder
}

// TestRedisNoScript: a NOSCRIPT reply means the script did not run, so Commit
// loads the script and sends again exactly the calls that got NOSCRIPT.
func TestRedisNoScript(t *testing.T) {
	const aggregates = 10
	tests := []struct {
		name string
		// flushAt is the number of script calls of the first pipeline that
		// run before the script cache is flushed.
		flushAt   int
		wantSizes []int // the pipelines Commit sends
	}{
		{name: "flushed before the commit", flushAt: 0, wantSizes: []int{aggregates, aggregates}},
		{name: "flushed in the middle of the pipeline", flushAt: 4, wantSizes: []int{aggregates, aggregates - 4}},
		{name: "flushed before the last call", flushAt: aggregates - 1, wantSizes: []int{aggregates, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store, server, recorder := ownRedis(t, testenv.RedisServerOptions{})
			admin := server.Client()
			ctx := context.Background()
			changes := make([]Change, aggregates)
			for i := range changes {
				id := fmt.Sprintf("a%d", i)
				mustCommit(t, store, testChange(id, 0, 1, "c-create-"+id))
				changes[i] = testChange(id, 1, 2, "c-next-"+id)
			}
			recorder.pipelines, recorder.loads = nil, 0

			var once sync.Once
			recorder.around = func(ctx context.Context, cmds []redis.Cmder, next redis.ProcessPipelineHook) error {
				flushed := false
				once.Do(func() {
					flushed = true
					if tt.flushAt > 0 {
						_ = next(ctx, cmds[:tt.flushAt])
					}
					if err := admin.ScriptFlush(ctx).Err(); err != nil {
						t.Errorf("SCRIPT FLUSH: %v", err)
					}
					_ = next(ctx, cmds[tt.flushAt:])
				})
				if !flushed {
					return next(ctx, cmds)
				}
				return firstErr(cmds)
			}

			if err := store.Commit(ctx, changes); err != nil {
				t.Fatalf("Commit after SCRIPT FLUSH = %v; a NOSCRIPT reply must make Commit load the script and send those calls again", err)
			}
			sizes, loads := recorder.sizes()
			if fmt.Sprint(sizes) != fmt.Sprint(tt.wantSizes) || loads != 1 {
				t.Errorf("Commit sent pipelines of %v script calls and %d SCRIPT LOAD, want %v and 1: only the calls that got NOSCRIPT may be sent again", sizes, loads, tt.wantSizes)
			}
			for _, change := range changes {
				if got := mustGet(t, store, change.AggregateID); got.Version != 2 {
					t.Errorf("aggregate %s at version %d, want 2: every change must apply exactly once", change.AggregateID, got.Version)
				}
				if _, ok := mustOutcome(t, store, change.AggregateID, change.Outcomes[0].CommandID); !ok {
					t.Errorf("outcome of %s not recorded", change.Outcomes[0].CommandID)
				}
			}
		})
	}
}

// TestRedisNoScriptForever: Commit gives up when the script cache keeps
// being emptied, and nothing is written.
func TestRedisNoScriptForever(t *testing.T) {
	store, server, recorder := ownRedis(t, testenv.RedisServerOptions{})
	admin := server.Client()
	recorder.around = func(ctx context.Context, cmds []redis.Cmder, next redis.ProcessPipelineHook) error {
		if err := admin.ScriptFlush(ctx).Err(); err != nil {
			return err
		}
		return next(ctx, cmds)
	}
	err := store.Commit(context.Background(), []Change{testChange("a", 0, 1, "c-1")})
	if err == nil || errors.Is(err, ErrFenced) {
		t.Fatalf("Commit while every script call gets NOSCRIPT = %v, want an error that is not ErrFenced", err)
	}
	if sizes, loads := recorder.sizes(); len(sizes) > 5 || loads != len(sizes)-1 {
		t.Errorf("Commit sent %d pipelines and %d SCRIPT LOAD; it must give up after a few attempts", len(sizes), loads)
	}
	recorder.around = nil
	if got := mustGet(t, store, "a"); got.Version != 0 {
		t.Errorf("aggregate a at version %d, want 0: a call that got NOSCRIPT did not run", got.Version)
	}
}

// TestRedisRestart: after a restart the script cache is empty; with AOF the
// versions and outcomes (with their TTL) are back and Commit goes on.
func TestRedisRestart(t *testing.T) {
	store, server, recorder := ownRedis(t, testenv.RedisServerOptions{AOF: true})
	ctx := context.Background()
	mustCommit(t, store, testChange("a", 0, 1, "c-1"))

	server.Restart()
	recorder.pipelines, recorder.loads = nil, 0
	mustCommit(t, store, testChange("a", 1, 2, "c-2"))
	if sizes, loads := recorder.sizes(); len(sizes) != 2 || loads != 1 {
		t.Errorf("Commit after a restart sent %d pipelines and %d SCRIPT LOAD, want 2 and 1 (NOSCRIPT, load, send again)", len(sizes), loads)
	}
	if got := mustGet(t, store, "a"); got.Version != 2 {
		t.Errorf("aggregate a at version %d after a restart and a Commit, want 2", got.Version)
	}
	if ttl := store.Client().PTTL(ctx, store.outcomeKey("a", "c-1")).Val(); ttl <= 0 || ttl > time.Hour {
		t.Errorf("PTTL of the outcome recorded before the restart = %s, want its TTL of up to 1h kept", ttl)
	}
	err := store.Commit(ctx, []Change{testChange("a", 2, 3, "c-1")})
	var fenced *FencedError
	if !errors.As(err, &fenced) || fenced.CommandID != "c-1" {
		t.Errorf("Commit of command c-1 again after a restart = %v, want a *FencedError naming c-1: the outcome must survive the restart", err)
	}
}

func TestRedisCommitKeepsRecentEvents(t *testing.T) {
	runCommitKeepsRecentEvents(t, realStore)
}

// TestRedisRecentEventsMemory measures, with Redis's MEMORY USAGE, what the
// recent-events list of one aggregate costs, and checks it stays within the
// budget Options.RecentEvents documents: RecentEvents × (RecentPayloadBytes
// + type length + 16) bytes plus 256 for the list itself.
func TestRedisRecentEventsMemory(t *testing.T) {
	ctx := context.Background()
	store := realStore(t, Options{})
	const listOverhead = 256
	tests := []struct {
		name      string
		eventType string
		payload   string
	}{
		{"product price change", "PriceReduced", `{"oldPrice":25,"newPrice":22.5}`},
		{"no payload", "Touched", ``},
		{"payload at the limit", "LargestKeptPayload", `"` + strings.Repeat("x", DefaultRecentPayloadBytes-2) + `"`},
		{"payload over the limit", "TooLargePayload", `"` + strings.Repeat("x", 4096) + `"`},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			aggregateID := fmt.Sprintf("mem-%d", i)
			var version int64
			for round := 0; round < 3; round++ { // more events than are kept
				change := testChange(aggregateID, version, version+DefaultRecentEvents, fmt.Sprintf("c-%d", round))
				for v := version + 1; v <= version+DefaultRecentEvents; v++ {
					e := RecentEvent{Version: v, Type: tt.eventType}
					if tt.payload != "" {
						e.Payload = json.RawMessage(tt.payload)
					}
					change.Events = append(change.Events, e)
				}
				mustCommit(t, store, change)
				version += DefaultRecentEvents
			}
			used, err := store.RecentMemory(ctx, aggregateID)
			if err != nil {
				t.Fatal(err)
			}
			budget := int64(DefaultRecentEvents*(DefaultRecentPayloadBytes+len(tt.eventType)+16) + listOverhead)
			t.Logf("%s: %d events of type %s with a %d-byte payload: the list uses %d bytes (%d per event); budget %d",
				tt.name, DefaultRecentEvents, tt.eventType, len(tt.payload), used, used/DefaultRecentEvents, budget)
			if used == 0 || used > budget {
				t.Errorf("the recent-events list uses %d bytes, outside (0, %d]", used, budget)
			}
		})
	}
}
