package chaos

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/cockroachdb/errors"
)

// rollbackReport is what the worker that finds Redis went back in time
// logs (processor's fenceAfterRollback, or a refused compare-and-set): the
// detection the lossy faults wait for.
const rollbackReport = "redis went back in time"

// rebuildGuidance is in every error of a worker that stopped deciding
// because Redis lost data.
const rebuildGuidance = "run 'arbiter rebuild-versions'"

// logMarks returns how long each worker's log is now, so that a later
// search reads only what they logged since.
func (r *run) logMarks() map[string]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	marks := make(map[string]int64, len(r.workers))
	for _, w := range r.workers {
		if info, err := os.Stat(w.logPath); err == nil {
			marks[w.name] = info.Size()
		}
	}
	return marks
}

// loggedSince returns the first worker (live or not) that logged needle
// after marks ("" if none).
func (r *run) loggedSince(marks map[string]int64, needle string) string {
	r.mu.Lock()
	workers := append([]*process(nil), r.workers...)
	r.mu.Unlock()
	for _, w := range workers {
		data, err := os.ReadFile(w.logPath)
		if err != nil {
			continue
		}
		if from := marks[w.name]; from <= int64(len(data)) && strings.Contains(string(data[from:]), needle) {
			return w.name
		}
	}
	return ""
}

// awaitLogged waits up to timeout for a worker to log needle after marks
// and returns it and when it was seen.
func (r *run) awaitLogged(marks map[string]int64, needle string, timeout time.Duration) (string, time.Time) {
	for deadline := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
		if name := r.loggedSince(marks, needle); name != "" {
			return name, time.Now()
		}
		if time.Now().After(deadline) {
			return "", time.Time{}
		}
	}
}

// failoverRedis injects FaultRedisFailover: a graceful CLUSTER FAILOVER of
// a master that holds keys of the run to its replica, which waits until it
// has every write. Nothing is lost; the workers follow the MOVED
// redirections and go on deciding.
func (r *run) failoverRedis(ctx context.Context, kind string) {
	// Never cut it short: a cluster left mid-failover ends the run.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	shards, err := r.cluster.shards(ctx)
	if err != nil {
		r.logf("skipping %s: %v", kind, err)
		return
	}
	s := shards[r.rng.Intn(len(shards))]
	r.failOver(ctx, kind, s, handOver{
		how: "CLUSTER FAILOVER",
		handOver: func(ctx context.Context) error {
			client := s.replica.client()
			defer client.Close()
			if err := client.ClusterFailover(ctx).Err(); err != nil {
				return errors.Wrapf(err, "CLUSTER FAILOVER on %s", s.replica.addr())
			}
			return awaitRole(ctx, s.replica, "master", 30*time.Second)
		},
		awaitHealthy: r.cluster.awaitHealthy,
	})
}

// handOver is how failOver hands a master over to its replica, which
// differs between a Redis Cluster and Sentinels.
type handOver struct {
	// how names the hand-over, for the fault log.
	how string
	// handOver returns once the replica is the master, with every write.
	handOver func(context.Context) error
	// awaitHealthy waits until the topology is whole again.
	awaitHealthy func(context.Context, time.Duration) error
}

// failOver hands s's master over to its replica without losing a write,
// if the master holds keys of the run, and logs whether a worker stopped.
func (r *run) failOver(ctx context.Context, kind string, s shard, how handOver) {
	keys, err := dbSize(ctx, s.master)
	if err != nil || keys == 0 {
		r.logf("skipping %s: master %s holds no keys (%v)", kind, s.master.addr(), err)
		return
	}
	marks := r.logMarks()
	began := time.Now()
	if err := how.handOver(ctx); err != nil {
		r.logf("%s: %v", kind, err)
		return
	}
	promoted := time.Since(began)
	if err := how.awaitHealthy(ctx, time.Minute); err != nil {
		r.logf("%s: %v", kind, err)
		return
	}
	offset, _ := replicationInfo(ctx, s.replica, "master_repl_offset")
	stopped := "no worker stopped deciding"
	if name := r.loggedSince(marks, rebuildGuidance); name != "" {
		stopped = "but " + name + " stopped deciding with the rebuild guidance"
	}
	r.record(kind, "%s: replica %s took over from master %s (%d keys) in %s, replication offset %d, nothing lost; the old master is its replica now; %s",
		how.how, s.replica.addr(), s.master.addr(), keys, promoted.Round(time.Millisecond), offset, stopped)
}

// killRedisMaster injects FaultRedisMasterKill: a master dies with writes
// its replica never got, and the replica is promoted. To lose writes for
// sure, the replica is stopped (SIGSTOP) and its replication link cut
// (CLIENT KILL TYPE replica) while the master goes on taking the workers'
// compare-and-sets; then the master's clients are paused, its replication
// offset read, and it is SIGKILLed; the replica is continued and promoted
// with CLUSTER FAILOVER TAKEOVER. Redis is now behind Kafka: a worker must
// report it and every worker stop deciding. The round recovers as from
// FaultRedisRollback: the workers are stopped, rebuild-versions runs, and
// keepWorkers starts them again; the killed node comes back as the new
// master's replica.
func (r *run) killRedisMaster(ctx context.Context, kind string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer cancel()
	shards, err := r.cluster.shards(ctx)
	if err != nil {
		r.logf("skipping %s: %v", kind, err)
		return
	}
	s := shards[r.rng.Intn(len(shards))]
	r.killMaster(ctx, kind, s, masterKill{
		promotion: "CLUSTER FAILOVER TAKEOVER",
		promote: func(ctx context.Context) error {
			client := s.replica.client()
			defer client.Close()
			if err := client.Do(ctx, "CLUSTER", "FAILOVER", "TAKEOVER").Err(); err != nil {
				return errors.Wrapf(err, "CLUSTER FAILOVER TAKEOVER on %s", s.replica.addr())
			}
			return awaitRole(ctx, s.replica, "master", 30*time.Second)
		},
		// Before the workers start again: a client that read the slot
		// map from the node coming back, before it learnt it lost its
		// slots, would write to it.
		rejoin: func(ctx context.Context) error { return r.rejoin(ctx, s.master) },
	})
}

// masterKill is how killMaster promotes the replica and brings the killed
// master back, which differs between a Redis Cluster and Sentinels.
type masterKill struct {
	// promotion names how the replica is promoted, for the fault log.
	promotion string
	// promote makes the continued replica the master and returns once the
	// clients can find it.
	promote func(context.Context) error
	// rejoin starts the killed master again as the new master's replica;
	// it runs after rebuild-versions, before the workers start again.
	rejoin func(context.Context) error
}

// killMaster kills s's master after it took writes its replica never got,
// has the replica promoted, waits for a worker to report that Redis went
// back in time, and recovers: the workers stopped, rebuild-versions, the
// killed node back as a replica; keepWorkers then starts the workers.
func (r *run) killMaster(ctx context.Context, kind string, s shard, how masterKill) {
	lost, err := r.loseWrites(ctx, s, how.promote)
	if err != nil {
		r.logf("%s: %v", kind, err)
		return
	}
	loss := LostWrites{Fault: kind, LostBytes: lost.masterOffset - lost.replicaOffset}
	detectedBy, detectedAt := r.awaitLogged(lost.marks, rollbackReport, 60*time.Second)
	detection := "NO worker reported it within 60s"
	if detectedBy != "" {
		loss.DetectedBy, loss.DetectedAfter = detectedBy, detectedAt.Sub(lost.promoted)
		detection = fmt.Sprintf("%s reported that redis went back in time %s after the promotion", detectedBy, loss.DetectedAfter.Round(100*time.Millisecond))
	} else {
		detectedAt = time.Now()
	}
	for _, w := range r.live() {
		w.signal(syscall.SIGCONT)
		w.stop(30 * time.Second)
	}
	out, err := r.rebuild(ctx)
	if err != nil {
		r.logf("rebuild-versions failed: %v\n%s", err, out)
		return
	}
	rebuilt := time.Since(detectedAt)
	rejoinBegan := time.Now()
	var rejoined string
	if err := how.rejoin(ctx); err != nil {
		rejoined = "the killed node did not come back: " + err.Error()
	} else {
		rejoined = fmt.Sprintf("the killed node was back as the new master's replica %s later", time.Since(rejoinBegan).Round(100*time.Millisecond))
	}
	loss.RecoveredIn = time.Since(detectedAt)
	r.mu.Lock()
	r.lostWrites = append(r.lostWrites, loss)
	r.mu.Unlock()
	r.record(kind, "SIGKILL master %s (replication offset %d) after its replica %s stopped at offset %d: the replica, promoted with %s, lost %d bytes of writes; %s; workers stopped and rebuild-versions done %s after that: %s; %s; the workers start again %s after the detection",
		s.master.addr(), lost.masterOffset, s.replica.addr(), lost.replicaOffset, how.promotion, loss.LostBytes, detection,
		rebuilt.Round(100*time.Millisecond), lastLine(out), rejoined, loss.RecoveredIn.Round(100*time.Millisecond))
}

// minLostBytes is the least replication stream a killed master must have
// taken that its replica never got: some dozens of compare-and-sets.
const minLostBytes = 16 << 10

// lostWrites is what loseWrites did.
type lostWrites struct {
	marks                       map[string]int64
	masterOffset, replicaOffset int64
	promoted                    time.Time
}

// loseWrites stops s's replica, lets its master take writes the replica
// never gets, kills the master, continues the replica and has promote
// promote it.
func (r *run) loseWrites(ctx context.Context, s shard, promote func(context.Context) error) (lostWrites, error) {
	var lost lostWrites
	master := s.master.client()
	defer master.Close()
	s.replica.proc.signal(syscall.SIGSTOP)
	// Continued whatever happens: a stopped replica would stall the run.
	defer s.replica.proc.signal(syscall.SIGCONT)
	// What the link still carries reaches the replica when it continues;
	// what the master takes from now on does not.
	if err := master.Do(ctx, "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
		return lost, errors.Wrapf(err, "cut the replication link of %s", s.master.addr())
	}
	cut, err := replicationInfo(ctx, s.master, "master_repl_offset")
	if err != nil {
		return lost, err
	}
	// At least 3 s of the workers' writes, and enough of them to hold
	// decisions (a few hundred bytes can be a watermark alone, whose loss
	// nobody can see).
	began := time.Now()
	for {
		offset, err := replicationInfo(ctx, s.master, "master_repl_offset")
		if err != nil {
			return lost, err
		}
		if offset-cut >= minLostBytes && time.Since(began) >= 3*time.Second {
			break
		}
		if time.Since(began) > 30*time.Second {
			return lost, errors.Newf("master %s took %d bytes of writes in 30s, fewer than %d", s.master.addr(), offset-cut, minLostBytes)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Freeze the master's writes so that its offset is the last one.
	lost.marks = r.logMarks()
	if err := master.Do(ctx, "CLIENT", "PAUSE", "10000", "WRITE").Err(); err != nil {
		return lost, errors.Wrapf(err, "pause the writes of %s", s.master.addr())
	}
	if lost.masterOffset, err = replicationInfo(ctx, s.master, "master_repl_offset"); err != nil {
		return lost, err
	}
	s.master.proc.signal(syscall.SIGKILL)
	s.master.proc.wait(10 * time.Second)
	s.replica.proc.signal(syscall.SIGCONT)
	if err := promote(ctx); err != nil {
		return lost, err
	}
	lost.promoted = time.Now()
	// The promoted replica's offset where the old master's history ended.
	second, err := replicationInfo(ctx, s.replica, "second_repl_offset")
	if err != nil {
		return lost, err
	}
	lost.replicaOffset = second - 1
	return lost, nil
}

// rejoin starts a killed node again on its ports and data: it finds its
// slots taken by a newer configuration and becomes the new master's
// replica, resynchronised from it.
func (r *run) rejoin(ctx context.Context, node *clusterNode) error {
	if err := r.cluster.startNode(ctx, node); err != nil {
		return err
	}
	return r.cluster.awaitHealthy(ctx, 2*time.Minute)
}

func dbSize(ctx context.Context, node *clusterNode) (int64, error) {
	client := node.client()
	defer client.Close()
	size, err := client.DBSize(ctx).Result()
	return size, errors.Wrapf(err, "DBSIZE on %s", node.addr())
}
