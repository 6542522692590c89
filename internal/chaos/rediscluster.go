package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/arbiter-cqrs/arbiter/internal/freeport"
	"github.com/arbiter-cqrs/arbiter/redisclient"
	"github.com/cockroachdb/errors"
	"github.com/redis/go-redis/v9"
)

// ClusterFaults are the fault kinds of a run on its own Redis Cluster
// (Config.RedisCluster). They take the place of FaultRedisRestart and
// FaultRedisRollback, which need the single redis-server.
var ClusterFaults = []string{FaultRedisFailover, FaultRedisMasterKill}

// defaultFaults returns the fault kinds of a run that names none: every
// kind of its Redis topology and of its Kafka.
func (c *Config) defaultFaults() []string {
	var kinds []string
	for _, kind := range AllFaults {
		switch {
		case (c.RedisCluster || c.RedisSentinel) && (kind == FaultRedisRestart || kind == FaultRedisRollback):
		case c.KafkaBrokers >= minReplicatedBrokers && kind == FaultKafkaRestart:
		default:
			kinds = append(kinds, kind)
		}
	}
	if c.RedisCluster {
		kinds = append(kinds, ClusterFaults...)
	}
	if c.RedisSentinel {
		kinds = append(kinds, SentinelFaults...)
	}
	if c.KafkaBrokers >= minReplicatedBrokers {
		kinds = append(kinds, BrokerFaults...)
	}
	return kinds
}

// checkFaults checks the Kafka's size and that the run has one Redis
// topology, sets the default fault kinds and refuses unknown ones and those
// of another Redis or Kafka topology, all at once.
func (c *Config) checkFaults() error {
	var problems []error
	if c.KafkaBrokers < 0 || c.KafkaBrokers == 2 {
		problems = append(problems, errors.Newf("--kafka-brokers %d: the run takes one broker or a replicated Kafka of %d or more", c.KafkaBrokers, minReplicatedBrokers))
	}
	if c.RedisCluster && c.RedisSentinel {
		problems = append(problems, errors.New("--redis-cluster and --redis-sentinel: the run has one Redis topology, pick one"))
	}
	if len(c.Faults) == 0 {
		c.Faults = c.defaultFaults()
	}
	known := append(append(append(append([]string(nil), AllFaults...), ClusterFaults...), SentinelFaults...), BrokerFaults...)
	for _, kind := range c.Faults {
		switch {
		case contains(ClusterFaults, kind) && !c.RedisCluster:
			problems = append(problems, errors.Newf("fault %q needs a Redis Cluster (--redis-cluster)", kind))
		case contains(SentinelFaults, kind) && !c.RedisSentinel:
			problems = append(problems, errors.Newf("fault %q needs a Sentinel set-up (--redis-sentinel)", kind))
		case (kind == FaultRedisRestart || kind == FaultRedisRollback) && c.RedisCluster:
			problems = append(problems, errors.Newf("fault %q needs the single redis-server: with --redis-cluster use %s", kind, strings.Join(ClusterFaults, " or ")))
		case (kind == FaultRedisRestart || kind == FaultRedisRollback) && c.RedisSentinel:
			problems = append(problems, errors.Newf("fault %q needs the single redis-server: with --redis-sentinel use %s", kind, strings.Join(SentinelFaults, " or ")))
		case contains(BrokerFaults, kind) && c.KafkaBrokers < minReplicatedBrokers:
			problems = append(problems, errors.Newf("fault %q needs a replicated Kafka (--kafka-brokers %d)", kind, minReplicatedBrokers))
		case !contains(known, kind):
			problems = append(problems, errors.Newf("unknown fault %q (known: %s)", kind, strings.Join(known, ", ")))
		}
	}
	return errors.Join(problems...)
}

func contains(list []string, s string) bool {
	for _, item := range list {
		if item == s {
			return true
		}
	}
	return false
}

// LostWrites is what one fault that lost Redis writes did and how the run
// noticed and recovered.
type LostWrites struct {
	// Fault is the fault kind, e.g. FaultRedisMasterKill.
	Fault string
	// LostBytes is how far the promoted replica's replication offset is
	// behind the killed master's.
	LostBytes int64
	// DetectedBy is the worker that reported Redis went back in time ("":
	// none did within the detection timeout); DetectedAfter the time from
	// the promotion to its report.
	DetectedBy    string
	DetectedAfter time.Duration
	// RecoveredIn is the time from the detection to the workers starting
	// again: them stopped, rebuild-versions done, and the killed node back
	// as a replica.
	RecoveredIn time.Duration
}

// lostWritesSummary returns the summary lines of the faults that lost
// writes ("" without any).
func lostWritesSummary(lost []LostWrites) string {
	var b strings.Builder
	for _, l := range lost {
		detection := "NOT detected"
		if l.DetectedBy != "" {
			detection = fmt.Sprintf("detected by %s after %s", l.DetectedBy, l.DetectedAfter.Round(100*time.Millisecond))
		}
		fmt.Fprintf(&b, "%s lost %d bytes of replication stream: %s, recovered in %s\n", l.Fault, l.LostBytes, detection, l.RecoveredIn.Round(100*time.Millisecond))
	}
	return b.String()
}

// startRedisStore starts the run's Redis: a redis-server, with
// RedisCluster a Redis Cluster, or with RedisSentinel a Sentinel set-up,
// and returns what stops it.
func (r *run) startRedisStore(ctx context.Context, dir string) (func(), error) {
	if r.cfg.RedisSentinel {
		sentinel, err := startRedisSentinel(ctx, r.cfg.RedisServer, dir)
		if err != nil {
			return nil, err
		}
		r.sentinel = sentinel
		r.logf("Redis Sentinel set-up of a master, a replica and 3 sentinels up: %s", sentinel.url())
		return sentinel.stop, nil
	}
	if r.cfg.RedisCluster {
		cluster, err := startRedisCluster(ctx, r.cfg.RedisServer, dir)
		if err != nil {
			return nil, err
		}
		r.cluster = cluster
		r.logf("Redis Cluster of 3 masters and 3 replicas up: %s", cluster.url())
		return cluster.stop, nil
	}
	server, err := startRedis(ctx, r.cfg.RedisServer, dir)
	if err != nil {
		return nil, err
	}
	r.redis = server
	// Not r.redis.proc.stop directly: a restart replaces the process.
	return func() { r.redis.proc.stop(10 * time.Second) }, nil
}

// redisArgs returns the flags that give a worker or rebuild-versions the
// run's Redis.
func (r *run) redisArgs() []string {
	if r.cluster != nil {
		return []string{"--redis", r.cluster.url(), "--redis-mode", string(redisclient.ModeCluster)}
	}
	if r.sentinel != nil {
		return []string{"--redis", r.sentinel.url(), "--redis-mode", string(redisclient.ModeSentinel)}
	}
	return []string{"--redis", r.redis.url()}
}

// redisClient returns a client of the run's Redis; the caller closes it.
func (r *run) redisClient() (redis.UniversalClient, error) {
	if r.cluster != nil {
		return redisclient.Config{URL: r.cluster.url(), Mode: redisclient.ModeCluster}.NewUniversalClient()
	}
	if r.sentinel != nil {
		return redisclient.Config{URL: r.sentinel.url(), Mode: redisclient.ModeSentinel}.NewUniversalClient()
	}
	return redisclient.Config{URL: r.redis.url()}.NewUniversalClient()
}

// redisCluster is a Redis Cluster of the run's own: three masters with one
// replica each, redis-server child processes (AOF on, fsync always) on free
// loopback ports, which the cluster faults fail over, stop and kill.
type redisCluster struct {
	binary string
	nodes  []*clusterNode
}

// clusterNode is one redis-server of the cluster, restarted on the same
// ports and data.
type clusterNode struct {
	name          string
	port, busPort int
	dir           string
	proc          *process
}

func (n *clusterNode) addr() string { return "127.0.0.1:" + strconv.Itoa(n.port) }

// client returns a client of this node alone; the caller closes it.
func (n *clusterNode) client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: n.addr(), MaxRetries: -1, DialTimeout: 2 * time.Second, ReadTimeout: 5 * time.Second})
}

// clusterNodeTimeout is the nodes' cluster-node-timeout: short, so a node
// killed for good is flagged failed quickly.
const clusterNodeTimeout = 2 * time.Second

func startRedisCluster(ctx context.Context, binary, dir string) (*redisCluster, error) {
	c := &redisCluster{binary: binary}
	for i := 0; i < 6; i++ {
		port, err := freeport.Pick()
		if err != nil {
			return nil, err
		}
		busPort, err := freeport.Pick()
		if err != nil {
			return nil, err
		}
		node := &clusterNode{name: fmt.Sprintf("redis-%d", i), port: port, busPort: busPort, dir: filepath.Join(dir, strconv.Itoa(port))}
		c.nodes = append(c.nodes, node)
		if err := c.startNode(ctx, node); err != nil {
			c.stop()
			return nil, err
		}
	}
	if err := c.create(ctx); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// startNode starts a node's redis-server in cluster mode and waits until
// it answers PING.
func (c *redisCluster) startNode(ctx context.Context, node *clusterNode) error {
	return startRedisNode(ctx, c.binary, node,
		"--bind", "127.0.0.1", "--port", strconv.Itoa(node.port), "--dir", node.dir,
		"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port", strconv.Itoa(node.busPort),
		"--cluster-node-timeout", strconv.FormatInt(clusterNodeTimeout.Milliseconds(), 10),
		"--appendonly", "yes", "--appendfsync", "always", "--save", "")
}

// startRedisNode starts a redis-server (or a sentinel) of the run with
// args in node.dir and waits until it answers PING.
func startRedisNode(ctx context.Context, binary string, node *clusterNode, args ...string) error {
	if err := os.MkdirAll(node.dir, 0o755); err != nil {
		return errors.Wrapf(err, "create the folder of %s", node.name)
	}
	proc, err := startProcess(node.name, filepath.Join(node.dir, "redis.log"), nil, binary, args...)
	if err != nil {
		return errors.Wrap(err, "start redis-server (install it: apt-get install redis-server)")
	}
	node.proc = proc
	client := node.client()
	defer client.Close()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if err := client.Ping(ctx).Err(); err == nil {
			return nil
		}
		if time.Now().After(deadline) || proc.exited() {
			return errors.Newf("redis-server %s on port %d did not answer: %s", node.name, node.port, proc.tail(10))
		}
	}
}

// create joins the nodes into a cluster: nodes 0-2 masters of a third of
// the slots each, node 3+i the replica of node i.
func (c *redisCluster) create(ctx context.Context) error {
	first := c.nodes[0].client()
	defer first.Close()
	for _, node := range c.nodes[1:] {
		if err := first.Do(ctx, "CLUSTER", "MEET", "127.0.0.1", node.port, node.busPort).Err(); err != nil {
			return errors.Wrapf(err, "CLUSTER MEET %s", node.addr())
		}
	}
	ids := make([]string, len(c.nodes))
	for i, node := range c.nodes {
		client := node.client()
		id, err := client.ClusterMyID(ctx).Result()
		if err == nil && i < 3 {
			low, high := i*16384/3, (i+1)*16384/3-1
			err = client.ClusterAddSlotsRange(ctx, low, high).Err()
		}
		client.Close()
		if err != nil {
			return errors.Wrapf(err, "set up master %s", node.addr())
		}
		ids[i] = id
	}
	err := awaitState(ctx, 60*time.Second, "every node knows the others", func(ctx context.Context) error {
		for _, node := range c.nodes {
			views, err := c.view(ctx, node)
			if err != nil {
				return err
			}
			if len(views) != len(c.nodes) {
				return errors.Newf("%s knows %d nodes", node.addr(), len(views))
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i, node := range c.nodes[3:] {
		client := node.client()
		err := client.ClusterReplicate(ctx, ids[i]).Err()
		client.Close()
		if err != nil {
			return errors.Wrapf(err, "make %s a replica of %s", node.addr(), c.nodes[i].addr())
		}
	}
	return c.awaitHealthy(ctx, 60*time.Second)
}

// url returns the cluster's URL in go-redis's form, every node a seed.
func (c *redisCluster) url() string {
	var b strings.Builder
	b.WriteString("redis://" + c.nodes[0].addr())
	for i, node := range c.nodes[1:] {
		if i == 0 {
			b.WriteString("?")
		} else {
			b.WriteString("&")
		}
		b.WriteString("addr=" + node.addr())
	}
	return b.String()
}

// stop stops every node, continuing a stopped one first.
func (c *redisCluster) stop() {
	for _, node := range c.nodes {
		if node.proc != nil {
			node.proc.stop(10 * time.Second)
		}
	}
}

// nodeView is one line of CLUSTER NODES.
type nodeView struct {
	id, addr, masterID string
	master, failed     bool
	connected, slots   bool
}

// view returns what node says of the cluster, by address.
func (c *redisCluster) view(ctx context.Context, node *clusterNode) (map[string]nodeView, error) {
	client := node.client()
	defer client.Close()
	text, err := client.ClusterNodes(ctx).Result()
	if err != nil {
		return nil, errors.Wrapf(err, "CLUSTER NODES on %s", node.addr())
	}
	views := make(map[string]nodeView)
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 8 {
			continue
		}
		addr, _, _ := strings.Cut(fields[1], "@")
		flags := "," + fields[2] + ","
		if strings.Contains(flags, ",handshake,") || strings.Contains(flags, ",noaddr,") {
			continue
		}
		views[addr] = nodeView{
			id:        fields[0],
			addr:      addr,
			masterID:  fields[3],
			master:    strings.Contains(flags, ",master,"),
			failed:    strings.Contains(flags, ",fail,") || strings.Contains(flags, ",fail?,"),
			connected: fields[7] == "connected",
			slots:     len(fields) > 8,
		}
	}
	return views, nil
}

// shard is a master and its replica.
type shard struct{ master, replica *clusterNode }

// shards returns the cluster's masters with their replicas, as every live
// node sees them: an error while they disagree, a master has no slots or
// not exactly one replica, or a replica's link to its master is down.
func (c *redisCluster) shards(ctx context.Context) ([]shard, error) {
	byAddr := make(map[string]*clusterNode)
	for _, node := range c.nodes {
		byAddr[node.addr()] = node
	}
	var agreed string
	var shards []shard
	for _, node := range c.nodes {
		if node.proc == nil || node.proc.exited() {
			continue
		}
		views, err := c.view(ctx, node)
		if err != nil {
			return nil, err
		}
		byID := make(map[string]nodeView)
		for _, v := range views {
			byID[v.id] = v
		}
		var mine []shard
		var pairs []string
		for _, v := range views {
			if !v.master || !v.slots {
				continue
			}
			if v.failed {
				return nil, errors.Newf("%s sees master %s failed", node.addr(), v.addr)
			}
			var replicas []nodeView
			for _, other := range views {
				if !other.master && other.masterID == v.id && !other.failed {
					replicas = append(replicas, other)
				}
			}
			if len(replicas) != 1 {
				return nil, errors.Newf("%s sees %d live replicas of master %s", node.addr(), len(replicas), v.addr)
			}
			mine = append(mine, shard{master: byAddr[v.addr], replica: byAddr[replicas[0].addr]})
			pairs = append(pairs, v.addr+">"+replicas[0].addr)
		}
		sort.Strings(pairs)
		if len(mine) != 3 {
			return nil, errors.Newf("%s sees %d masters with slots", node.addr(), len(mine))
		}
		if key := strings.Join(pairs, " "); agreed == "" {
			agreed, shards = key, mine
		} else if key != agreed {
			return nil, errors.Newf("the nodes disagree on the masters: %s sees %s, another %s", node.addr(), key, agreed)
		}
	}
	for _, s := range shards {
		if s.master == nil || s.replica == nil {
			return nil, errors.New("the cluster names a node that is not the run's")
		}
		client := s.replica.client()
		info, err := client.Info(ctx, "replication").Result()
		client.Close()
		if err != nil {
			return nil, errors.Wrapf(err, "INFO replication on %s", s.replica.addr())
		}
		if !strings.Contains(info, "master_link_status:up") {
			return nil, errors.Newf("replica %s is not linked to its master %s", s.replica.addr(), s.master.addr())
		}
	}
	sort.Slice(shards, func(i, j int) bool { return shards[i].master.port < shards[j].master.port })
	return shards, nil
}

// awaitHealthy waits until every live node reports cluster_state:ok and
// they agree on three masters with a linked replica each.
func (c *redisCluster) awaitHealthy(ctx context.Context, timeout time.Duration) error {
	return awaitState(ctx, timeout, "three masters with a linked replica each, cluster_state:ok everywhere", func(ctx context.Context) error {
		for _, node := range c.nodes {
			client := node.client()
			info, err := client.ClusterInfo(ctx).Result()
			client.Close()
			if err != nil {
				return errors.Wrapf(err, "CLUSTER INFO on %s", node.addr())
			}
			if !strings.Contains(info, "cluster_state:ok") {
				return errors.Newf("%s: cluster state is not ok", node.addr())
			}
		}
		_, err := c.shards(ctx)
		return err
	})
}

// awaitState polls check until it succeeds or timeout passes.
func awaitState(ctx context.Context, timeout time.Duration, what string, check func(context.Context) error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return errors.Wrapf(err, "the run's Redis did not reach %q in %s", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// replicationInfo returns INFO replication's integer field of a node.
func replicationInfo(ctx context.Context, node *clusterNode, field string) (int64, error) {
	client := node.client()
	defer client.Close()
	info, err := client.Info(ctx, "replication").Result()
	if err != nil {
		return 0, errors.Wrapf(err, "INFO replication on %s", node.addr())
	}
	for _, line := range strings.Split(info, "\n") {
		if value, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return strconv.ParseInt(value, 10, 64)
		}
	}
	return 0, errors.Newf("INFO replication on %s has no %s", node.addr(), field)
}

// awaitRole waits until node reports role (ROLE's first element).
func awaitRole(ctx context.Context, node *clusterNode, role string, timeout time.Duration) error {
	return awaitState(ctx, timeout, node.addr()+" is a "+role, func(ctx context.Context) error {
		client := node.client()
		defer client.Close()
		reply, err := client.Do(ctx, "ROLE").Slice()
		if err != nil {
			return errors.Wrapf(err, "ROLE on %s", node.addr())
		}
		if len(reply) == 0 || reply[0] != role {
			return errors.Newf("%s is a %v", node.addr(), reply[0])
		}
		return nil
	})
}
