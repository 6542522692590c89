package chaos

import (
	"strings"
	"testing"
)

func TestCheckFaults(t *testing.T) {
	tests := []struct {
		name         string
		cluster      bool
		sentinel     bool
		brokers      int
		faults       []string
		want         []string // the faults after the check; nil: not checked
		wantProblems []string
	}{
		{name: "the single server's default", want: AllFaults},
		{name: "the cluster's default", cluster: true,
			want: []string{FaultKill, FaultKillInGap, FaultStall, FaultKafkaRestart, FaultScaleUp, FaultScaleDown, FaultRedisFailover, FaultRedisMasterKill}},
		{name: "cluster faults on a cluster", cluster: true, faults: []string{FaultRedisFailover, FaultRedisMasterKill, FaultKill, FaultStall},
			want: []string{FaultRedisFailover, FaultRedisMasterKill, FaultKill, FaultStall}},
		{name: "cluster faults without a cluster", faults: []string{FaultRedisFailover, FaultKill},
			wantProblems: []string{`fault "redis-failover" needs a Redis Cluster`}},
		{name: "single-server faults on a cluster", cluster: true, faults: []string{FaultRedisRollback, FaultRedisRestart},
			wantProblems: []string{`fault "redis-rollback" needs the single redis-server`, `fault "redis-restart" needs the single redis-server`}},
		{name: "the Sentinel set-up's default", sentinel: true,
			want: []string{FaultKill, FaultKillInGap, FaultStall, FaultKafkaRestart, FaultScaleUp, FaultScaleDown, FaultSentinelFailover, FaultSentinelMasterKill}},
		{name: "sentinel faults on a Sentinel set-up", sentinel: true, faults: []string{FaultSentinelMasterKill, FaultSentinelFailover, FaultKill},
			want: []string{FaultSentinelMasterKill, FaultSentinelFailover, FaultKill}},
		{name: "sentinel faults without a Sentinel set-up", cluster: true, faults: []string{FaultSentinelFailover, FaultRedisFailover},
			wantProblems: []string{`fault "sentinel-failover" needs a Sentinel set-up`}},
		{name: "single-server and cluster faults on a Sentinel set-up", sentinel: true, faults: []string{FaultRedisRollback, FaultRedisMasterKill},
			wantProblems: []string{`fault "redis-rollback" needs the single redis-server: with --redis-sentinel`, `fault "redis-master-kill" needs a Redis Cluster`}},
		{name: "cluster and sentinel at once", cluster: true, sentinel: true, faults: []string{FaultKill},
			wantProblems: []string{"--redis-cluster and --redis-sentinel"}},
		{name: "a Sentinel set-up and a replicated Kafka's default", sentinel: true, brokers: 3,
			want: []string{FaultKill, FaultKillInGap, FaultStall, FaultScaleUp, FaultScaleDown, FaultSentinelFailover, FaultSentinelMasterKill, FaultBrokerKill, FaultBrokerRestart}},
		{name: "a replicated Kafka's default", brokers: 3,
			want: []string{FaultKill, FaultKillInGap, FaultStall, FaultRedisRestart, FaultRedisRollback, FaultScaleUp, FaultScaleDown, FaultBrokerKill, FaultBrokerRestart}},
		{name: "both clusters' default", cluster: true, brokers: 3,
			want: []string{FaultKill, FaultKillInGap, FaultStall, FaultScaleUp, FaultScaleDown, FaultRedisFailover, FaultRedisMasterKill, FaultBrokerKill, FaultBrokerRestart}},
		{name: "broker faults on one broker", faults: []string{FaultBrokerKill},
			wantProblems: []string{`fault "broker-kill" needs a replicated Kafka`}},
		{name: "two brokers", brokers: 2, faults: []string{FaultKill},
			wantProblems: []string{"--kafka-brokers 2"}},
		{name: "unknown kinds, all reported", faults: []string{"nap", FaultKill, "explode"},
			wantProblems: []string{`unknown fault "nap"`, `unknown fault "explode"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{RedisCluster: tt.cluster, RedisSentinel: tt.sentinel, KafkaBrokers: tt.brokers, Faults: tt.faults}
			err := cfg.checkFaults()
			if len(tt.wantProblems) == 0 {
				if err != nil {
					t.Fatalf("checkFaults: %v", err)
				}
				if strings.Join(cfg.Faults, ",") != strings.Join(tt.want, ",") {
					t.Errorf("faults %v, want %v", cfg.Faults, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("checkFaults accepted %v (cluster %v, sentinel %v)", tt.faults, tt.cluster, tt.sentinel)
			}
			for _, problem := range tt.wantProblems {
				if !strings.Contains(err.Error(), problem) {
					t.Errorf("the error %q does not report %q", err, problem)
				}
			}
		})
	}
}

func TestLostWritesSummary(t *testing.T) {
	summary := lostWritesSummary([]LostWrites{
		{Fault: FaultRedisMasterKill, LostBytes: 5120, DetectedBy: "worker-2", DetectedAfter: 1234e6, RecoveredIn: 4567e6},
		{Fault: FaultRedisMasterKill, LostBytes: 10},
	})
	for _, want := range []string{
		"redis-master-kill lost 5120 bytes of replication stream: detected by worker-2 after 1.2s, recovered in 4.6s",
		"redis-master-kill lost 10 bytes of replication stream: NOT detected",
	} {
		if !strings.Contains(summary, want) {
			t.Errorf("the summary lacks %q:\n%s", want, summary)
		}
	}
}
