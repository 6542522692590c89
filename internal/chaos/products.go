package chaos

import (
	"encoding/json"
	"fmt"
	mathrand "math/rand"
	"slices"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/examples/product"
	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/arbiter-cqrs/arbiter/versionstore"
)

// productWorkload drives every second aggregate as a Product (the workers
// register examples/product) with ChangePrice and IncreaseStock commands, so
// that the round includes rebases: a stale command opts in to rebasing half
// of the time.
//
// The producer predicts each command's outcome, as it does for the
// AppendEvents aggregates, to keep the expected versions of later commands
// right: a fresh command is applied (prices and stocks only ever rise, so no
// handler rejects one), and a stale one is rebased exactly when it opted in,
// no event of a type it depends on was written since its expectedVersion,
// and the worker still keeps all of those events. A wrong prediction is no
// anomaly — later commands of that aggregate then conflict — but it shows as
// fewer rebases in the checker's count than predicted.
type productWorkload struct {
	dependsOn map[string][]string
	// types holds, per product, the event types at versions 1, 2, … as
	// predicted.
	types map[int][]string
	// Predicted counts the rebases the producer expects.
	Predicted int
}

func newProductWorkload(aggregates int) *productWorkload {
	w := &productWorkload{dependsOn: make(map[string][]string), types: make(map[int][]string, aggregates/2)}
	for commandType, policy := range rebasePolicies() {
		w.dependsOn[commandType] = policy.DependsOn
	}
	return w
}

// rebasePolicies are those of the workers' registry, for the checker.
func rebasePolicies() map[string]processor.RebasePolicy {
	registry := processor.NewRegistry()
	if err := product.Register(registry); err != nil {
		panic(err) // product.Register fails only on a programming error
	}
	return registry.RebasePolicies()
}

func (w *productWorkload) isProduct(a int) bool { return a%2 == 1 }

// command returns the next command for product a (its AggregateID left for
// the caller); n is the command's sequence number, unique in the round.
func (w *productWorkload) command(rng *mathrand.Rand, a int, n int, staleShare float64) commands.Command {
	types := w.types[a]
	version := int64(len(types))
	id := fmt.Sprintf("p-%d-%d", a, n)
	if version == 0 {
		payload, _ := json.Marshal(product.CreateProduct{Name: id, Price: 1, Stock: 1})
		w.types[a] = append(types, product.ProductCreatedType)
		return commands.Command{ID: id, Type: product.CreateProductType, ExpectedVersion: 0, Payload: payload}
	}
	// Values rise with n, so that no command is rejected: a price always
	// changes, a stock always rises.
	commandType, eventType := product.ChangePriceType, product.PriceIncreasedType
	payload, _ := json.Marshal(product.ChangePrice{NewPrice: float64(n + 2)})
	if rng.Intn(2) == 0 {
		commandType, eventType = product.IncreaseStockType, product.StockIncreasedType
		payload, _ = json.Marshal(product.IncreaseStock{NewStock: int64(n + 2)})
	}
	cmd := commands.Command{ID: id, Type: commandType, ExpectedVersion: version, Payload: payload}
	if rng.Float64() >= staleShare {
		w.types[a] = append(types, eventType)
		return cmd
	}
	// Half of them a step or three behind, as a sender racing another
	// would be; half anywhere back, many past what the worker keeps.
	cmd.ExpectedVersion = rng.Int63n(version)
	if rng.Intn(2) == 0 {
		cmd.ExpectedVersion = version - 1 - rng.Int63n(min(version, 3))
	}
	if rng.Intn(2) == 0 {
		return cmd // strict: a version conflict
	}
	cmd.OnConflict = commands.OnConflictRebase
	since := types[cmd.ExpectedVersion:]
	if len(since) <= versionstore.DefaultRecentEvents && !slices.ContainsFunc(since, func(t string) bool {
		return slices.Contains(w.dependsOn[commandType], t)
	}) {
		w.types[a] = append(types, eventType)
		w.Predicted++
	}
	return cmd
}
