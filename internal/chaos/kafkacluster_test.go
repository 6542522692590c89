package chaos

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestClusterDefaults(t *testing.T) {
	tests := []struct {
		name       string
		brokers    int
		faults     []string
		wantFaults []string // nil: the input
		wantErr    string   // "": no error
	}{
		{name: "one broker takes every single-broker fault", brokers: 0, wantFaults: AllFaults},
		{name: "a replicated Kafka swaps kafka-restart for the broker faults", brokers: 3,
			wantFaults: []string{FaultKill, FaultKillInGap, FaultStall, FaultRedisRestart, FaultRedisRollback, FaultScaleUp, FaultScaleDown, FaultBrokerKill, FaultBrokerRestart}},
		{name: "chosen faults stay", brokers: 3, faults: []string{FaultBrokerKill, FaultKill}},
		{name: "broker faults need a replicated Kafka", brokers: 0, faults: []string{FaultBrokerKill}, wantErr: "needs a replicated Kafka"},
		{name: "an unknown fault", brokers: 3, faults: []string{"broker-kil"}, wantErr: `unknown fault "broker-kil"`},
		{name: "two brokers cannot lose one", brokers: 2, wantErr: "--kafka-brokers 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Brokers: []string{"127.0.0.1:1"}, KafkaBrokers: tt.brokers, Faults: tt.faults}
			err := cfg.setDefaults()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("setDefaults() = %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("setDefaults() = %v", err)
			}
			want := tt.wantFaults
			if want == nil {
				want = tt.faults
			}
			if !slices.Equal(cfg.Faults, want) {
				t.Errorf("faults %v, want %v", cfg.Faults, want)
			}
		})
	}
}

func TestTopicSpecReplicatesOnACluster(t *testing.T) {
	tests := []struct {
		brokers     int
		wantFactor  int16
		wantConfigs bool
	}{
		{brokers: 0, wantFactor: -1},
		{brokers: 3, wantFactor: 3, wantConfigs: true},
		{brokers: 5, wantFactor: 3, wantConfigs: true},
	}
	for _, tt := range tests {
		r := &run{cfg: Config{KafkaBrokers: tt.brokers, Partitions: 4}, topics: [3]string{"c", "e", "x"}}
		spec := r.topicSpec()
		if spec.ReplicationFactor != tt.wantFactor {
			t.Errorf("%d brokers: replication factor %d, want %d", tt.brokers, spec.ReplicationFactor, tt.wantFactor)
		}
		for _, topic := range r.topics {
			got := spec.Configs[topic]["min.insync.replicas"]
			if want := map[bool]string{true: "2"}[tt.wantConfigs]; got != want {
				t.Errorf("%d brokers: topic %s min.insync.replicas %q, want %q", tt.brokers, topic, got, want)
			}
		}
	}
}

func TestRequireAcksAll(t *testing.T) {
	tests := []struct {
		name    string
		opts    []kgo.Opt
		wantErr string
	}{
		{name: "franz-go's defaults", opts: nil},
		{name: "the chaos producer's options", opts: []kgo.Opt{kgo.ProducerLinger(5 * time.Millisecond), kgo.RecordDeliveryTimeout(2 * time.Minute)}},
		{name: "leader acks", opts: []kgo.Opt{kgo.DisableIdempotentWrite(), kgo.RequiredAcks(kgo.LeaderAck())}, wantErr: "acks=all"},
		{name: "not idempotent", opts: []kgo.Opt{kgo.DisableIdempotentWrite()}, wantErr: "idempotently"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}, tt.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			err = requireAcksAll(client)
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("requireAcksAll() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestOutOfSync(t *testing.T) {
	partition := func(leader int32, replicas, isr []int32) kadm.PartitionDetail {
		return kadm.PartitionDetail{Leader: leader, Replicas: replicas, ISR: isr}
	}
	metadata := kadm.Metadata{Topics: kadm.TopicDetails{
		"commands": {Topic: "commands", Partitions: kadm.PartitionDetails{
			0: partition(1, []int32{1, 2, 3}, []int32{1, 2, 3}),
			1: partition(2, []int32{2, 3, 1}, []int32{2, 1}),     // 3 not back yet
			2: partition(-1, []int32{3, 1, 2}, []int32{3, 1, 2}), // no leader
		}},
		"__transaction_state": {Topic: "__transaction_state", IsInternal: true, Partitions: kadm.PartitionDetails{
			0: partition(1, []int32{1, 2, 3}, []int32{1, 2}), // 3 not back yet
		}},
	}}
	tests := []struct {
		node int32
		want int
	}{
		{node: 1, want: 1}, // only the leaderless partition
		{node: 3, want: 3},
	}
	for _, tt := range tests {
		if got := outOfSync(metadata, tt.node); got != tt.want {
			t.Errorf("outOfSync(node %d) = %d, want %d", tt.node, got, tt.want)
		}
	}
}
