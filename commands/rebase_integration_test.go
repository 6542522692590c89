package commands_test

import (
	"context"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/examples/product"
	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
)

// countingReader counts the reads RetryOnConflict makes.
type countingReader struct {
	versionstore.Reader
	reads int
}

func (r *countingReader) Get(ctx context.Context, aggregateID string) (versionstore.Aggregate, error) {
	r.reads++
	return r.Reader.Get(ctx, aggregateID)
}

// TestRetryOnConflictFromEventsSince: as TestRetryOnConflict, but the second
// attempt is decided on the state computed from the conflict's eventsSince
// (Registry.Advance), without reading Redis again.
func TestRetryOnConflictFromEventsSince(t *testing.T) {
	s := newStack(t)
	const productID = "prod-123"
	s.productAtVersion5(productID)
	registry := processor.NewRegistry()
	if err := product.Register(registry); err != nil {
		t.Fatal(err)
	}
	reader := &countingReader{Reader: s.store}
	var seen []commands.RetryParams
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	policy := commands.RetryPolicy{MaxAttempts: 3, Advance: registry.Advance}
	applied, err := commands.RetryOnConflict(ctx, s.producer, reader, policy, productID,
		func(ctx context.Context, p commands.RetryParams) (commands.Command, error) {
			seen = append(seen, p)
			state, err := versionstore.DecodeState[product.State](p.Current)
			if err != nil {
				return commands.Command{}, err
			}
			if p.Attempt == 1 {
				bob := productCommand(t, "bob-1", productID, product.IncreaseStockType, 5, product.IncreaseStock{NewStock: 120})
				if applied, err := s.producer.SendAndWait(ctx, bob); err != nil || applied.Version != 6 {
					return commands.Command{}, errors.Newf("Bob's command: %+v, %v", applied, err)
				}
			}
			if state.Stock < 100 {
				return commands.Command{}, errors.New("stock too low for a discount")
			}
			return product.Command("", productID, product.ChangePriceType, p.Current.Version, product.ChangePrice{NewPrice: state.Price - 3})
		})
	if err != nil {
		t.Fatalf("RetryOnConflict: %v", err)
	}
	if applied.Version != 7 {
		t.Fatalf("got %+v, want the price change applied at version 7", applied)
	}
	if reader.reads != 1 || len(seen) != 2 || !seen[1].Advanced || seen[1].Current.Version != 6 || len(seen[1].EventsSince) != 1 {
		t.Fatalf("%d reads; attempts %+v; want one read, then an attempt on version 6 advanced from eventsSince", reader.reads, seen)
	}
	fresh, err := s.store.Get(ctx, productID)
	if err != nil {
		t.Fatal(err)
	}
	advanced, _ := versionstore.DecodeState[product.State](seen[1].Current)
	stored, _ := versionstore.DecodeState[product.State](versionstore.Aggregate{State: fresh.State})
	if advanced.Stock != 120 || advanced.Price != 25 || stored.Price != 22 || stored.Stock != 120 {
		t.Fatalf("the advanced state %+v must equal what Redis held at version 6 (stock 120, price 25); now Redis holds %+v", advanced, stored)
	}
}
