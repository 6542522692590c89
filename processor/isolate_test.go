package processor

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// sessionRecorder records the sessions' observations.
type sessionRecorder struct {
	nopObserver
	mu       sync.Mutex
	sessions []SessionObservation
}

func (r *sessionRecorder) ObserveSession(s SessionObservation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sessions = append(r.sessions, s)
}

func (r *sessionRecorder) count(state SessionState) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.sessions {
		if s.State == state {
			n++
		}
	}
	return n
}

// TestIsolationNarrowsToThePartitionThatFailsAlone drives the isolation of
// one session through batches that commit or fail, and checks after each
// which partitions are paused and which are stuck.
func TestIsolationNarrowsToThePartitionThatFailsAlone(t *testing.T) {
	const interval = time.Minute
	refused := errors.Wrapf(kerr.MessageTooLarge, "produce outcome record for aggregate %s to %s", "a-1", "conflicts")
	redisDown := errors.Wrap(errors.New("dial tcp: connection refused"), "load 3 aggregates from redis")
	type step struct {
		name string
		// batch lists the partitions of a batch; failed is why it was
		// aborted, nil when it committed.
		batch  []int32
		failed error
		// retryAfter moves the clock of the next poll past the interval.
		retryAfter bool
		// changed are partitions revoked, lost or assigned before the
		// next poll.
		changed   []int32
		wantPause []int32
		wantStuck []int32
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"one record refused among four partitions", []step{
			{name: "first failure: retried as it is", batch: []int32{0, 1, 2, 3}, failed: refused},
			{name: "second failure: half held", batch: []int32{0, 1, 2, 3}, failed: refused, wantPause: []int32{2, 3}},
			{name: "the probed half commits: the other half is split", batch: []int32{0, 1}, wantPause: []int32{3}},
			{name: "a batch of 0, 1 and 2 fails: split again", batch: []int32{0, 1, 2}, failed: refused, wantPause: []int32{2, 3}},
			{name: "0 and 1 commit: 2 is probed", batch: []int32{0, 1}, wantPause: []int32{3}},
			{name: "2 fails alone: stuck, 3 resumed", batch: []int32{2}, failed: refused, wantPause: []int32{2}, wantStuck: []int32{2}},
			{name: "the others keep committing", batch: []int32{0, 1, 3}, wantPause: []int32{2}, wantStuck: []int32{2}},
		}},
		{"a partition failing alone is stuck after the retries", []step{
			{batch: []int32{5}, failed: refused},
			{batch: []int32{5}, failed: refused, wantPause: []int32{5}, wantStuck: []int32{5}},
			{name: "the others keep committing", batch: []int32{1, 2}, wantPause: []int32{5}, wantStuck: []int32{5}},
			{name: "retried after the interval, it fails at once again", retryAfter: true, batch: []int32{5, 1}, failed: refused, wantPause: []int32{5}, wantStuck: []int32{5}},
			{name: "partition 1 alone commits", batch: []int32{1}, wantPause: []int32{5}, wantStuck: []int32{5}},
			{name: "retried again, it commits: it moves again", retryAfter: true, batch: []int32{5}},
		}},
		{"failures that are everyone's never narrow", []step{
			{batch: []int32{0, 1}, failed: redisDown},
			{batch: []int32{0, 1}, failed: redisDown},
			{batch: []int32{0, 1}, failed: errors.Mark(errors.New("fenced"), versionstore.ErrFenced)},
			{batch: []int32{0, 1}, failed: errors.Wrap(versionstore.ErrAmnesia, "load")},
		}},
		{"a stuck partition revoked and assigned again is resumed and forgotten", []step{
			{batch: []int32{4}, failed: refused},
			{batch: []int32{4}, failed: refused, wantPause: []int32{4}, wantStuck: []int32{4}},
			{name: "revoked", changed: []int32{4}, batch: []int32{0}},
		}},
		{"partitions held while narrowing are resumed when revoked", []step{
			{batch: []int32{0, 1, 2, 3}, failed: refused},
			{batch: []int32{0, 1, 2, 3}, failed: refused, wantPause: []int32{2, 3}},
			{name: "3 revoked before the next poll", changed: []int32{3}, batch: []int32{0, 1}, wantPause: []int32{}},
		}},
		{"a failure that goes away ends the narrowing", []step{
			{batch: []int32{0, 1, 2, 3}, failed: refused},
			{batch: []int32{0, 1, 2, 3}, failed: refused, wantPause: []int32{2, 3}},
			{batch: []int32{0, 1}, wantPause: []int32{3}},
			{name: "2 and 3 commit together", changed: nil, batch: []int32{2, 3}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"))
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			core, logs := observer.New(zapcore.InfoLevel)
			recorder := &sessionRecorder{}
			w := &Worker{cfg: Config{CommandsTopic: "commands", IsolationInterval: interval, Observer: recorder}, log: zap.New(core)}
			var state isolation
			state.reset()
			now := time.Now()
			iso := isolator{isolation: &state, w: w, client: client, lane: "arbiter-1", now: func() time.Time { return now }}
			for i, s := range tt.steps {
				if s.retryAfter {
					now = now.Add(interval + time.Second)
				}
				if s.changed != nil {
					state.onChanged(map[string][]int32{"commands": s.changed})
				}
				iso.beforePoll()
				if s.failed != nil {
					iso.failed(s.batch, s.failed)
				} else {
					iso.committed(s.batch)
				}
				paused := client.PauseFetchPartitions(nil)["commands"]
				slices.Sort(paused)
				var stuck []int32
				for partition := range state.stuck {
					stuck = append(stuck, partition)
				}
				slices.Sort(stuck)
				if !slices.Equal(paused, s.wantPause) && (len(paused) != 0 || len(s.wantPause) != 0) {
					t.Fatalf("step %d (%s): paused %v, want %v", i, s.name, paused, s.wantPause)
				}
				if !slices.Equal(stuck, s.wantStuck) {
					t.Fatalf("step %d (%s): stuck %v, want %v", i, s.name, stuck, s.wantStuck)
				}
			}
			reported := logs.FilterMessageSnippet("partition isolated").Len()
			if reported != recorder.count(SessionPartitionStuck) {
				t.Errorf("%d log lines and %d observations of a stuck partition: each report is both", reported, recorder.count(SessionPartitionStuck))
			}
		})
	}
}

// TestRecordTied: only failures tied to a batch's records narrow it.
func TestRecordTied(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{errors.Wrap(kerr.MessageTooLarge, "produce"), true},
		{errors.Wrap(kerr.InvalidRecord, "produce"), true},
		{errors.Wrap(kerr.RecordListTooLarge, "produce"), true},
		{errors.Wrap(ErrWindowExceeded, "command c1"), true},
		{errors.Wrap(versionstore.ErrAmnesia, "load"), false},
		{errors.Wrap(kerr.TopicAuthorizationFailed, "produce"), false},
		{errors.Wrap(kgo.ErrRecordTimeout, "produce"), false},
		{errors.New("connection refused"), false},
		{nil, false},
	}
	for _, tt := range tests {
		if got := recordTied(tt.err); got != tt.want {
			t.Errorf("recordTied(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
