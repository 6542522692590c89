package processor_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/examples/product"
	"github.com/arbiter-cqrs/arbiter/internal/testkit"
	"github.com/twmb/franz-go/pkg/kgo"
)

// sendJSON produces command records written by hand, as a service in another
// language would: the wire contract, not this module's encoder.
func (s *stack) sendJSON(aggregateID string, values ...string) {
	s.t.Helper()
	records := make([]*kgo.Record, len(values))
	for i, value := range values {
		records[i] = &kgo.Record{Topic: s.topics.Commands, Key: []byte(aggregateID), Value: []byte(value)}
	}
	testkit.Produce(s.t, s.brokers, records...)
}

// TestSeedScenarioWithRebase is the seed's story carried on: prod-123 at
// version 5; Bob's IncreaseStock (expected 5) is applied at 6; Alice's
// ChangePrice (expected 5) conflicts, and its record's eventsSince holds
// StockIncreased at 6; Alice's ChangePrice sent again with onConflict rebase
// (expected 5) is applied at 7 with rebasedFrom 5; Carol's ChangePrice
// (expected 5, rebase) conflicts, because PriceReduced at 7 intervened.
func TestSeedScenarioWithRebase(t *testing.T) {
	s := newStack(t, 3)
	s.startWorker(nil)
	id := "prod-123"
	s.productAtVersion5(id)
	command := func(commandID, commandType string, payload, onConflict string) string {
		value := fmt.Sprintf(`{"id":%q,"aggregateId":%q,"type":%q,"expectedVersion":5,"payload":%s`, commandID, id, commandType, payload)
		if onConflict != "" {
			value += `,"onConflict":"` + onConflict + `"`
		}
		return value + `,"metadata":{"user":"` + strings.SplitN(commandID, "-", 2)[0] + `"}}`
	}

	// One after the other, so that the order is the story's.
	steps := []struct {
		commandID string
		value     string
		check     func(t *testing.T, o testkit.Outcome)
	}{
		{"bob-1", command("bob-1", product.IncreaseStockType, `{"newStock":120}`, ""), func(t *testing.T, o testkit.Outcome) {
			if len(o.Conflicts) != 0 || len(o.Events) != 1 || o.Events[0].Version != 6 || o.Events[0].Type != product.StockIncreasedType || o.Events[0].RebasedFrom != nil {
				t.Fatalf("Bob's IncreaseStock must be applied at version 6, got %+v", o)
			}
		}},
		{"alice-1", command("alice-1", product.ChangePriceType, `{"newPrice":22}`, ""), func(t *testing.T, o testkit.Outcome) {
			c := onlyConflict(t, o)
			if *c.ExpectedVersion != 5 || *c.ActualVersion != 6 || c.EventsSinceCount != 1 || len(c.EventsSince) != 1 {
				t.Fatalf("Alice's conflict: want expected 5, actual 6, one event since; got %+v", c)
			}
			since := c.EventsSince[0]
			if since.Version != 6 || since.Type != product.StockIncreasedType || since.ID != id+"@6" || string(since.Payload) != `{"oldStock":100,"newStock":120}` {
				t.Fatalf("eventsSince[0] = %+v, want StockIncreased %s@6 with its payload", since, id)
			}
			if !c.EventsSinceComplete() {
				t.Errorf("eventsSince %+v is complete but does not say so", c.EventsSince)
			}
		}},
		{"alice-2", command("alice-2", product.ChangePriceType, `{"newPrice":22}`, "rebase"), func(t *testing.T, o testkit.Outcome) {
			if len(o.Conflicts) != 0 || len(o.Events) != 1 {
				t.Fatalf("Alice's rebased ChangePrice must be applied, got %+v", o)
			}
			e := o.Events[0]
			if e.Version != 7 || e.Type != product.PriceReducedType || e.RebasedFrom == nil || *e.RebasedFrom != 5 || e.Metadata["user"] != "alice" {
				t.Fatalf("want PriceReduced at version 7 with rebasedFrom 5, got %+v", e)
			}
		}},
		{"carol-1", command("carol-1", product.ChangePriceType, `{"newPrice":19}`, "rebase"), func(t *testing.T, o testkit.Outcome) {
			c := onlyConflict(t, o)
			if *c.ActualVersion != 7 || c.EventsSinceCount != 2 || len(c.EventsSince) != 2 ||
				c.EventsSince[0].Type != product.StockIncreasedType || c.EventsSince[1].Type != product.PriceReducedType || c.EventsSince[1].Version != 7 {
				t.Fatalf("Carol's conflict: want actual 7, eventsSince StockIncreased@6 and PriceReduced@7; got %+v", c)
			}
			if !strings.Contains(c.Message, "PriceReduced at version 7") {
				t.Errorf("Carol's conflict does not say PriceReduced at version 7 intervened: %q", c.Message)
			}
		}},
	}
	for _, step := range steps {
		s.sendJSON(id, step.value)
		got := s.out.WaitFor(60*time.Second, step.commandID)
		t.Run(step.commandID, func(t *testing.T) { step.check(t, got[step.commandID]) })
	}
	aggregate, err := s.store.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if aggregate.Version != 7 || !strings.Contains(string(aggregate.State), `"price":22`) || !strings.Contains(string(aggregate.State), `"stock":120`) {
		t.Fatalf("redis holds version %d state %s; want version 7 with price 22 and stock 120: both updates kept", aggregate.Version, aggregate.State)
	}
}

func onlyConflict(t *testing.T, o testkit.Outcome) events.Conflict {
	t.Helper()
	if len(o.Events) != 0 || len(o.Conflicts) != 1 || o.Conflicts[0].Reason != events.ReasonVersionConflict {
		t.Fatalf("want exactly one version_conflict, got %+v", o)
	}
	return o.Conflicts[0]
}
