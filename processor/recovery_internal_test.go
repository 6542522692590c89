package processor

import (
	"errors"
	"fmt"
	"testing"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestMurmur2MatchesTheJavaPartitioner compares checkPartition's hash with
// franz-go's Kafka-compatible sticky key partitioner, which hashes keys as
// the Java client does.
func TestMurmur2MatchesTheJavaPartitioner(t *testing.T) {
	partitioner := kgo.StickyKeyPartitioner(nil).ForTopic("commands")
	for _, partitions := range []int{1, 3, 12, 100} {
		for i := 0; i < 2000; i++ {
			key := []byte(fmt.Sprintf("aggregate-%d-%s", i, string(rune('a'+i%26))))
			want := partitioner.Partition(&kgo.Record{Key: key}, partitions)
			if got := murmur2Partition(key, int32(partitions)); int(got) != want {
				t.Fatalf("key %q over %d partitions: murmur2 gives %d, the Java partitioner %d", key, partitions, got, want)
			}
		}
	}
}

func TestCheckPartition(t *testing.T) {
	key := []byte("prod-123")
	right := murmur2Partition(key, 6)
	wrong := (right + 1) % 6
	cmd := commands.Command{ID: "c-1", AggregateID: "prod-123"}
	tests := []struct {
		name       string
		partition  int32
		partitions int32
		invalid    bool
	}{
		{"on its key's partition", right, 6, false},
		{"on another partition", wrong, 6, true},
		{"partition count unknown", wrong, 0, false},
		{"partition beyond the known count (the topic grew)", 7, 6, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkPartition(&kgo.Record{Topic: "commands", Key: key, Partition: tt.partition}, cmd, tt.partitions)
			var invalid *commands.InvalidError
			if got := errors.As(err, &invalid); got != tt.invalid {
				t.Fatalf("invalid = %v (%v), want %v", got, err, tt.invalid)
			}
			if tt.invalid && invalid.Reason == "" {
				t.Fatal("the refusal says nothing")
			}
		})
	}
}

// TestEndedUnclearly: a commit that was wanted and is not reported as done
// (franz-go turns an UNKNOWN_SERVER_ERROR from EndTxn into "not committed,
// no error") must replace the session, which refetches the offsets.
func TestEndedUnclearly(t *testing.T) {
	tests := []struct {
		name      string
		wanted    kgo.TransactionEndTry
		committed bool
		err       error
		replace   bool
	}{
		{"committed", kgo.TryCommit, true, nil, false},
		{"commit wanted, not committed, no error", kgo.TryCommit, false, nil, true},
		{"abort wanted", kgo.TryAbort, false, nil, false},
		{"an error replaces the session anyway", kgo.TryCommit, false, errors.New("boom"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := endedUnclearly(tt.wanted, tt.committed, tt.err); got != tt.replace {
				t.Fatalf("endedUnclearly = %v, want %v", got, tt.replace)
			}
		})
	}
}
