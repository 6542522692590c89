package bench

import (
	"context"
	"strconv"
	"testing"

	"github.com/arbiter-cqrs/arbiter/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// perAggregateScript does, for one aggregate, the Redis calls of the
// versionstore commit script: the amnesia marker, the version check, the
// decision check, the hash update, the decision and outcome records.
var perAggregateScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 0 then return {3, 0} end
local current = redis.call('HGET', KEYS[1], 'v') or '0'
if current ~= ARGV[1] then return {0, tonumber(current)} end
if redis.call('EXISTS', KEYS[3]) == 1 then return {2, 1} end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 't', ARGV[3], 's', ARGV[4])
redis.call('SET', KEYS[3], ARGV[7], 'PX', ARGV[6])
redis.call('SET', KEYS[4], ARGV[8], 'PX', ARGV[5])
return {1, tonumber(ARGV[2])}
`)

// perBatchScript does the same for every aggregate of a batch in one call:
// KEYS and ARGV hold the per-aggregate blocks one after the other. It is
// only possible on a single Redis node (or with every key in one cluster
// slot), and one aggregate's refusal must not undo the others'.
var perBatchScript = redis.NewScript(`
local results = {}
for a = 0, #KEYS / 4 - 1 do
  local k, v = a * 4, a * 8
  local status = 1
  if redis.call('EXISTS', KEYS[k + 2]) == 0 then
    status = 3
  else
    local current = redis.call('HGET', KEYS[k + 1], 'v') or '0'
    if current ~= ARGV[v + 1] then
      status = 0
    elseif redis.call('EXISTS', KEYS[k + 3]) == 1 then
      status = 2
    else
      redis.call('HSET', KEYS[k + 1], 'v', ARGV[v + 2], 't', ARGV[v + 3], 's', ARGV[v + 4])
      redis.call('SET', KEYS[k + 3], ARGV[v + 7], 'PX', ARGV[v + 6])
      redis.call('SET', KEYS[k + 4], ARGV[v + 8], 'PX', ARGV[v + 5])
    end
  end
  results[a + 1] = status
end
return results
`)

// BenchmarkCommitScriptShapes measures the "one script per batch vs a
// pipeline of one script per aggregate" knob on the stack's redis-server:
// wall time and redis-server CPU per aggregate for batches of 2,000
// aggregates, each advanced by one command. docs/tuning.md quotes it. Run
// with: go test -run XXX -bench CommitScriptShapes ./internal/bench
func BenchmarkCommitScriptShapes(b *testing.B) {
	client := testenv.Redis(b)
	ctx := context.Background()
	const batch = 2000
	prefix := testenv.Name(b, "b")
	marker := prefix + ":{marker}"
	b.Cleanup(func() { _ = deleteKeys(context.Background(), client, prefix) })
	state := `{"name":"Product 1234","price":23.5,"stock":180}`
	decision := "a\x02\x80\x01\x04"
	outcome := string(make([]byte, 300))
	blocks := func(round int) ([]string, []any) {
		keys := make([]string, 0, 4*batch)
		args := make([]any, 0, 8*batch)
		for a := range batch {
			id := prefix + ":{prod-" + strconv.Itoa(a) + "}"
			command := "c" + strconv.Itoa(round) + "-" + strconv.Itoa(a)
			keys = append(keys, id, marker, id+":d:"+command, id+":c:"+command)
			args = append(args, strconv.Itoa(round), strconv.Itoa(round+1), "Product", state, "60000", "86400000", decision, outcome)
		}
		return keys, args
	}
	for _, shape := range []string{"pipeline of one script per aggregate", "one script per batch"} {
		b.Run(shape, func(b *testing.B) {
			if err := deleteKeys(ctx, client, prefix); err != nil {
				b.Fatal(err)
			}
			if err := client.Set(ctx, marker, "1", 0).Err(); err != nil {
				b.Fatal(err)
			}
			if err := perAggregateScript.Load(ctx, client).Err(); err != nil {
				b.Fatal(err)
			}
			if err := perBatchScript.Load(ctx, client).Err(); err != nil {
				b.Fatal(err)
			}
			cpuBefore, err := redisCPU(ctx, client)
			if err != nil {
				b.Fatal(err)
			}
			round := 0
			b.ResetTimer()
			for b.Loop() {
				keys, args := blocks(round)
				round++
				if shape == "one script per batch" {
					if err := perBatchScript.EvalSha(ctx, client, keys, args...).Err(); err != nil {
						b.Fatal(err)
					}
					continue
				}
				pipe := client.Pipeline()
				for a := range batch {
					perAggregateScript.EvalSha(ctx, pipe, keys[4*a:4*a+4], args[8*a:8*a+8]...)
				}
				if _, err := pipe.Exec(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			cpuAfter, err := redisCPU(ctx, client)
			if err != nil {
				b.Fatal(err)
			}
			// Every round must have advanced every aggregate.
			if version, err := client.HGet(ctx, prefix+":{prod-7}", "v").Int(); err != nil || version != round {
				b.Fatalf("after %d rounds aggregate prod-7 is at version %d (%v): the script did not apply every change", round, version, err)
			}
			aggregates := float64(round * batch)
			b.ReportMetric(float64(b.Elapsed().Microseconds())/aggregates, "µs/aggregate")
			b.ReportMetric((cpuAfter-cpuBefore)*1e6/aggregates, "redis-cpu-µs/aggregate")
		})
	}
}
