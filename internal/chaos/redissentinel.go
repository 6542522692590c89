package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/arbiter-cqrs/arbiter/internal/freeport"
	"github.com/cockroachdb/errors"
	"github.com/redis/go-redis/v9"
)

// SentinelFaults are the fault kinds of a run on its own Sentinel set-up
// (Config.RedisSentinel). They take the place of FaultRedisRestart and
// FaultRedisRollback, which need the single redis-server.
var SentinelFaults = []string{FaultSentinelFailover, FaultSentinelMasterKill}

// sentinelMasterName is the name the sentinels monitor the master under.
const sentinelMasterName = "arbiter"

// sentinelDownAfter is the sentinels' down-after-milliseconds: short, so a
// killed master is found down quickly.
const sentinelDownAfter = 2 * time.Second

// redisSentinel is a Sentinel set-up of the run's own: a master and its
// replica (redis-server child processes, AOF on, fsync always) watched by
// three sentinels, all on free loopback ports, which the sentinel faults
// fail over and kill. Which of the two data nodes is the master changes
// with every failover.
type redisSentinel struct {
	binary    string
	nodes     []*clusterNode // the master and the replica, in no order
	sentinels []*clusterNode
}

func startRedisSentinel(ctx context.Context, binary, dir string) (*redisSentinel, error) {
	s := &redisSentinel{binary: binary}
	for i := 0; i < 5; i++ {
		port, err := freeport.Pick()
		if err != nil {
			return nil, err
		}
		node := &clusterNode{name: fmt.Sprintf("redis-%d", i), port: port, dir: filepath.Join(dir, strconv.Itoa(port))}
		if i < 2 {
			s.nodes = append(s.nodes, node)
		} else {
			node.name = fmt.Sprintf("sentinel-%d", i-2)
			s.sentinels = append(s.sentinels, node)
		}
	}
	err := s.startDataNode(ctx, s.nodes[0], nil)
	if err == nil {
		err = s.startDataNode(ctx, s.nodes[1], s.nodes[0])
	}
	for _, node := range s.sentinels {
		if err == nil {
			err = s.startSentinel(ctx, node)
		}
	}
	if err == nil {
		err = s.awaitHealthy(ctx, 60*time.Second)
	}
	if err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// startDataNode starts a redis-server of the set-up, a replica of
// replicaOf unless that is nil.
func (s *redisSentinel) startDataNode(ctx context.Context, node, replicaOf *clusterNode) error {
	args := []string{"--bind", "127.0.0.1", "--port", strconv.Itoa(node.port), "--dir", node.dir,
		"--appendonly", "yes", "--appendfsync", "always", "--save", ""}
	if replicaOf != nil {
		args = append(args, "--replicaof", "127.0.0.1", strconv.Itoa(replicaOf.port))
	}
	return startRedisNode(ctx, s.binary, node, args...)
}

// startSentinel writes a sentinel's configuration file (which the
// sentinel rewrites with what it learns) and starts it, monitoring the
// first data node.
func (s *redisSentinel) startSentinel(ctx context.Context, node *clusterNode) error {
	if err := os.MkdirAll(node.dir, 0o755); err != nil {
		return errors.Wrapf(err, "create the folder of %s", node.name)
	}
	conf := filepath.Join(node.dir, "sentinel.conf")
	text := fmt.Sprintf(`port %d
bind 127.0.0.1
dir %s
sentinel monitor %s 127.0.0.1 %d 2
sentinel down-after-milliseconds %[3]s %d
sentinel failover-timeout %[3]s 10000
sentinel parallel-syncs %[3]s 1
`, node.port, node.dir, sentinelMasterName, s.nodes[0].port, sentinelDownAfter.Milliseconds())
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return errors.Wrapf(err, "write the configuration of %s", node.name)
	}
	return startRedisNode(ctx, s.binary, node, conf, "--sentinel")
}

// url returns the set-up's Sentinel URL in go-redis's form.
func (s *redisSentinel) url() string {
	var b strings.Builder
	b.WriteString("redis://" + s.sentinels[0].addr() + "?master_name=" + sentinelMasterName)
	for _, node := range s.sentinels[1:] {
		b.WriteString("&addr=" + node.addr())
	}
	return b.String()
}

// stop stops the sentinels and the data nodes, continuing a stopped one
// first.
func (s *redisSentinel) stop() {
	for _, node := range append(append([]*clusterNode(nil), s.sentinels...), s.nodes...) {
		if node.proc != nil {
			node.proc.stop(10 * time.Second)
		}
	}
}

func sentinelClient(node *clusterNode) *redis.SentinelClient {
	return redis.NewSentinelClient(&redis.Options{Addr: node.addr(), MaxRetries: -1, DialTimeout: 2 * time.Second, ReadTimeout: 5 * time.Second})
}

// masterAddr returns the master's address as a sentinel names it.
func masterAddr(ctx context.Context, sentinel *clusterNode) (string, error) {
	client := sentinelClient(sentinel)
	defer client.Close()
	hostPort, err := client.GetMasterAddrByName(ctx, sentinelMasterName).Result()
	if err != nil {
		return "", errors.Wrapf(err, "SENTINEL GET-MASTER-ADDR-BY-NAME on %s", sentinel.addr())
	}
	if len(hostPort) != 2 {
		return "", errors.Newf("%s names the master %v", sentinel.addr(), hostPort)
	}
	return hostPort[0] + ":" + hostPort[1], nil
}

// shard returns the master and its replica: an error unless every
// sentinel names the same master, sees it up with the two other sentinels
// and the other data node as its one replica, up and linked, and the
// replica reports the link up.
func (s *redisSentinel) shard(ctx context.Context) (shard, error) {
	var found shard
	for _, sentinel := range s.sentinels {
		addr, err := masterAddr(ctx, sentinel)
		if err != nil {
			return shard{}, err
		}
		var master, replica *clusterNode
		for _, node := range s.nodes {
			if node.addr() == addr {
				master = node
			} else {
				replica = node
			}
		}
		if master == nil {
			return shard{}, errors.Newf("%s names master %s, not a node of the run", sentinel.addr(), addr)
		}
		if found.master != nil && found.master != master {
			return shard{}, errors.Newf("the sentinels disagree on the master: %s names %s, another %s", sentinel.addr(), addr, found.master.addr())
		}
		found = shard{master: master, replica: replica}
		client := sentinelClient(sentinel)
		state, err := client.Master(ctx, sentinelMasterName).Result()
		if err == nil && (state["flags"] != "master" || state["num-other-sentinels"] != "2") {
			err = errors.Newf("%s sees the master with flags %s and %s other sentinels", sentinel.addr(), state["flags"], state["num-other-sentinels"])
		}
		var replicas []map[string]string
		if err == nil {
			replicas, err = client.Replicas(ctx, sentinelMasterName).Result()
		}
		client.Close()
		if err != nil {
			return shard{}, errors.Wrapf(err, "SENTINEL MASTER/REPLICAS on %s", sentinel.addr())
		}
		if len(replicas) != 1 || replicas[0]["ip"]+":"+replicas[0]["port"] != replica.addr() ||
			replicas[0]["flags"] != "slave" || replicas[0]["master-link-status"] != "ok" {
			return shard{}, errors.Newf("%s does not see %s as the one replica, up and linked: %v", sentinel.addr(), replica.addr(), replicas)
		}
	}
	client := found.replica.client()
	info, err := client.Info(ctx, "replication").Result()
	client.Close()
	if err != nil {
		return shard{}, errors.Wrapf(err, "INFO replication on %s", found.replica.addr())
	}
	if !strings.Contains(info, "master_link_status:up") || !strings.Contains(info, "master_port:"+strconv.Itoa(found.master.port)) {
		return shard{}, errors.Newf("replica %s is not linked to master %s", found.replica.addr(), found.master.addr())
	}
	return found, nil
}

// awaitHealthy waits until the sentinels agree on a master with a linked
// replica (see shard).
func (s *redisSentinel) awaitHealthy(ctx context.Context, timeout time.Duration) error {
	return awaitState(ctx, timeout, "the sentinels agree on a master with a linked replica", func(ctx context.Context) error {
		_, err := s.shard(ctx)
		return err
	})
}

// promote has the sentinels make replica the master: SENTINEL FAILOVER,
// repeated while the sentinels still see the replica down (NOGOODSLAVE)
// or run a failover of their own (INPROG), until every sentinel names it
// and it reports the master role.
func (s *redisSentinel) promote(ctx context.Context, replica *clusterNode) error {
	err := awaitState(ctx, time.Minute, "every sentinel names "+replica.addr()+" the master", func(ctx context.Context) error {
		if addr, err := masterAddr(ctx, s.sentinels[0]); err == nil && addr != replica.addr() {
			client := sentinelClient(s.sentinels[0])
			defer client.Close()
			if err := client.Failover(ctx, sentinelMasterName).Err(); err != nil {
				return errors.Wrapf(err, "SENTINEL FAILOVER on %s", s.sentinels[0].addr())
			}
			return errors.Newf("SENTINEL FAILOVER on %s started, the master is still %s", s.sentinels[0].addr(), addr)
		}
		for _, sentinel := range s.sentinels {
			addr, err := masterAddr(ctx, sentinel)
			if err != nil {
				return err
			}
			if addr != replica.addr() {
				return errors.Newf("%s names master %s", sentinel.addr(), addr)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return awaitRole(ctx, replica, "master", 30*time.Second)
}

// rejoin starts a killed data node again on its port and data as a
// replica of master, which resynchronises it, and waits until the
// sentinels see it so.
func (s *redisSentinel) rejoin(ctx context.Context, node, master *clusterNode) error {
	if err := s.startDataNode(ctx, node, master); err != nil {
		return err
	}
	return s.awaitHealthy(ctx, 2*time.Minute)
}

// failoverSentinel injects FaultSentinelFailover: a graceful switchover.
// SENTINEL FAILOVER promotes the replica with REPLICAOF NO ONE while the
// old master goes on taking writes until someone makes it a replica
// (the sentinels do some seconds later): what it took meanwhile would be
// lost. So the switchover is an operator's: the master's writes are
// paused (CLIENT PAUSE WRITE) until the replica has them all, the
// sentinels promote it, the old master is made its replica, and only then
// are its clients resumed — they get READONLY or go to the new master
// (go-redis follows the sentinels' +switch-master). Nothing is lost; the
// workers go on deciding.
func (r *run) failoverSentinel(ctx context.Context, kind string) {
	// Never cut it short: a set-up left paused mid-failover ends the run.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	s, err := r.sentinel.shard(ctx)
	if err != nil {
		r.logf("skipping %s: %v", kind, err)
		return
	}
	r.failOver(ctx, kind, s, handOver{
		how:          "SENTINEL FAILOVER with the master's writes paused",
		handOver:     func(ctx context.Context) error { return r.sentinel.switchover(ctx, s) },
		awaitHealthy: r.sentinel.awaitHealthy,
	})
}

// switchover pauses pair's master's writes, waits until its replica has
// them, has the sentinels promote it, makes the old master its replica and
// resumes the old master's clients.
func (s *redisSentinel) switchover(ctx context.Context, pair shard) error {
	master := pair.master.client()
	defer master.Close()
	if err := master.Do(ctx, "CLIENT", "PAUSE", "30000", "WRITE").Err(); err != nil {
		return errors.Wrapf(err, "pause the writes of %s", pair.master.addr())
	}
	// Resumed whatever happens: a paused master would stall the run.
	defer master.Do(context.WithoutCancel(ctx), "CLIENT", "UNPAUSE")
	offset, err := replicationInfo(ctx, pair.master, "master_repl_offset")
	if err != nil {
		return err
	}
	err = awaitState(ctx, 10*time.Second, "the replica has every write of the paused master", func(ctx context.Context) error {
		replicated, err := replicationInfo(ctx, pair.replica, "slave_repl_offset")
		if err == nil && replicated < offset {
			err = errors.Newf("replica %s is at offset %d, its master at %d", pair.replica.addr(), replicated, offset)
		}
		return err
	})
	if err != nil {
		return err
	}
	if err := s.promote(ctx, pair.replica); err != nil {
		return err
	}
	if err := master.Do(ctx, "REPLICAOF", "127.0.0.1", pair.replica.port).Err(); err != nil {
		return errors.Wrapf(err, "make %s a replica of %s", pair.master.addr(), pair.replica.addr())
	}
	return nil
}

// killSentinelMaster injects FaultSentinelMasterKill: as
// FaultRedisMasterKill, the master dies with writes its stopped replica
// never got; the continued replica is promoted by the sentinels, a worker
// must report that Redis went back in time, and the round recovers with
// rebuild-versions. The killed node comes back as the new master's
// replica.
func (r *run) killSentinelMaster(ctx context.Context, kind string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer cancel()
	s, err := r.sentinel.shard(ctx)
	if err != nil {
		r.logf("skipping %s: %v", kind, err)
		return
	}
	r.killMaster(ctx, kind, s, masterKill{
		promotion: "SENTINEL FAILOVER",
		promote:   func(ctx context.Context) error { return r.sentinel.promote(ctx, s.replica) },
		rejoin:    func(ctx context.Context) error { return r.sentinel.rejoin(ctx, s.master, s.replica) },
	})
}
