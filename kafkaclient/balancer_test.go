package kafkaclient_test

import (
	"strings"
	"testing"

	"github.com/arbiter-cqrs/arbiter/kafkaclient"
)

func TestBalancer(t *testing.T) {
	for _, name := range kafkaclient.BalancerNames {
		t.Run(name, func(t *testing.T) {
			if opt, err := kafkaclient.Balancer(name); err != nil || opt == nil {
				t.Fatalf("Balancer(%q) = %v, %v: want an option", name, opt, err)
			}
		})
	}
	for _, name := range []string{"", "eager", "Cooperative-Sticky", "cooperative_sticky"} {
		t.Run("refuses "+name, func(t *testing.T) {
			_, err := kafkaclient.Balancer(name)
			if err == nil || !strings.Contains(err.Error(), kafkaclient.BalancerCooperativeSticky) {
				t.Fatalf("Balancer(%q) = %v: want an error naming the balancers", name, err)
			}
		})
	}
	if kafkaclient.BalancerNames[0] != kafkaclient.BalancerCooperativeSticky {
		t.Errorf("BalancerNames starts with %q, want the default %q", kafkaclient.BalancerNames[0], kafkaclient.BalancerCooperativeSticky)
	}
}
