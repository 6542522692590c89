//go:build arbiter_faults

package app

import (
	"testing"

	"github.com/arbiter-cqrs/arbiter/internal/chaos"
)

// TestChaosRedisSentinelFailovers runs a short chaos round on a Sentinel
// set-up of its own (a master, a replica, 3 sentinels) with graceful
// SENTINEL FAILOVERs, killed masters whose promoted replica lost writes,
// worker kills and stalls: the history has no anomaly, and the lost writes
// were caught by a worker and recovered with rebuild-versions. It kills and
// restarts Redis nodes of its own only; Kafka is the test stack's.
//
//	go test -tags arbiter_faults -race -count=1 -run TestChaosRedisSentinelFailovers ./app/
func TestChaosRedisSentinelFailovers(t *testing.T) {
	runFailoverRound(t, "arbiter-chaos-sentinel-", chaos.Config{
		RedisSentinel: true,
		Faults:        []string{chaos.FaultSentinelMasterKill, chaos.FaultSentinelFailover, chaos.FaultKill, chaos.FaultStall},
	}, chaos.SentinelFaults)
}
