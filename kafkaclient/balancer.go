package kafkaclient

import (
	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The group balancers a worker can use (`arbiter worker --balancer`).
const (
	// BalancerCooperativeSticky is franz-go's default and the worker's: a
	// rebalance moves only the partitions that change owner, and members
	// keep deciding the others (KIP-429, two rounds).
	BalancerCooperativeSticky = "cooperative-sticky"
	// BalancerSticky gives the same sticky assignment eagerly: every member
	// gives up all its partitions at every rebalance.
	BalancerSticky = "sticky"
	// BalancerRange and BalancerRoundRobin are the eager Java defaults of
	// old.
	BalancerRange      = "range"
	BalancerRoundRobin = "roundrobin"
)

// BalancerNames lists the names Balancer takes, the default first.
var BalancerNames = []string{BalancerCooperativeSticky, BalancerSticky, BalancerRange, BalancerRoundRobin}

// Balancer returns the consumer group option choosing the named balancer.
// Every member of a group must name the same one: members that share no
// balancer cannot join one group (INCONSISTENT_GROUP_PROTOCOL), and moving
// a running group from an eager balancer to cooperative-sticky needs the
// two-step rollout of KIP-429 (see docs/scaling.md).
func Balancer(name string) (kgo.GroupOpt, error) {
	switch name {
	case BalancerCooperativeSticky:
		return kgo.Balancers(kgo.CooperativeStickyBalancer()), nil
	case BalancerSticky:
		return kgo.Balancers(kgo.StickyBalancer()), nil
	case BalancerRange:
		return kgo.Balancers(kgo.RangeBalancer()), nil
	case BalancerRoundRobin:
		return kgo.Balancers(kgo.RoundRobinBalancer()), nil
	}
	return nil, errors.Newf("balancer %q: use %v", name, BalancerNames)
}
