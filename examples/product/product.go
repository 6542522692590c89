// Package product is the example domain of the Alice-and-Bob story: a
// Product with a name, a price and a stock, whose commands are decided by
// plain functions. The default worker registers it.
package product

import (
	"context"
	"encoding/json"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/cockroachdb/errors"
)

// Command types.
const (
	CreateProductType     = "CreateProduct"
	ChangeProductNameType = "ChangeProductName"
	ChangePriceType       = "ChangePrice"
	IncreaseStockType     = "IncreaseStock"
)

// Event types.
const (
	ProductCreatedType     = "ProductCreated"
	ProductNameChangedType = "ProductNameChanged"
	PriceReducedType       = "PriceReduced"
	PriceIncreasedType     = "PriceIncreased"
	StockIncreasedType     = "StockIncreased"
)

// State is a Product's state, stored as its snapshot.
type State struct {
	Name  string  `json:"name"`
	Price float64 `json:"price"`
	Stock int64   `json:"stock"`
}

// CreateProduct creates a product; it needs expectedVersion 0.
type CreateProduct struct {
	Name  string  `json:"name"`
	Price float64 `json:"price"`
	Stock int64   `json:"stock"`
}

// ChangeProductName renames a product.
type ChangeProductName struct {
	Name string `json:"name"`
}

// ChangePrice sets a new price.
type ChangePrice struct {
	NewPrice float64 `json:"newPrice"`
}

// IncreaseStock raises the stock to NewStock.
type IncreaseStock struct {
	NewStock int64 `json:"newStock"`
}

// ProductCreated is the payload of ProductCreated.
type ProductCreated struct {
	Name  string  `json:"name"`
	Price float64 `json:"price"`
	Stock int64   `json:"stock"`
}

// ProductNameChanged is the payload of ProductNameChanged.
type ProductNameChanged struct {
	OldName string `json:"oldName"`
	Name    string `json:"name"`
}

// PriceChanged is the payload of PriceReduced and PriceIncreased.
type PriceChanged struct {
	OldPrice float64 `json:"oldPrice"`
	NewPrice float64 `json:"newPrice"`
}

// StockIncreased is the payload of StockIncreased.
type StockIncreased struct {
	OldStock int64 `json:"oldStock"`
	NewStock int64 `json:"newStock"`
}

// Aggregate is the Product aggregate type.
var Aggregate = processor.AggregateType[State]{Name: "Product", Evolve: Evolve}

// What the decisions of ChangePrice and IncreaseStock depend on: a stale
// command of theirs that opted in with onConflict "rebase" is decided again
// past events of other types. Alice's price change does not care that Bob
// raised the stock, and the other way round. ProductCreated sets the price
// and the stock, and only a product that exists may change them.
var (
	ChangePriceDependsOn   = processor.RebaseOn(PriceReducedType, PriceIncreasedType, ProductCreatedType)
	IncreaseStockDependsOn = processor.RebaseOn(StockIncreasedType, ProductCreatedType)
)

// Register adds the Product handlers to a registry.
func Register(r *processor.Registry) error {
	return errors.CombineErrors(
		errors.CombineErrors(
			processor.Register(r, Aggregate, CreateProductType, DecideCreate),
			processor.Register(r, Aggregate, ChangeProductNameType, DecideChangeName),
		),
		errors.CombineErrors(
			processor.Register(r, Aggregate, ChangePriceType, DecideChangePrice, ChangePriceDependsOn),
			processor.Register(r, Aggregate, IncreaseStockType, DecideIncreaseStock, IncreaseStockDependsOn),
		),
	)
}

// DecideCreate decides CreateProduct.
func DecideCreate(_ context.Context, p processor.DecideParams[State, CreateProduct]) ([]events.Draft, error) {
	if p.Command.ExpectedVersion != 0 || p.Version != 0 {
		return nil, processor.Reject("CreateProduct needs expectedVersion 0: product %s already exists at version %d", p.Command.AggregateID, p.Version)
	}
	if p.Payload.Name == "" {
		return nil, processor.Reject("a product needs a name")
	}
	if p.Payload.Price <= 0 {
		return nil, processor.Reject("price must be greater than 0, got %v", p.Payload.Price)
	}
	if p.Payload.Stock < 0 {
		return nil, processor.Reject("stock must not be negative, got %d", p.Payload.Stock)
	}
	return []events.Draft{{Type: ProductCreatedType, Payload: ProductCreated(p.Payload)}}, nil
}

// DecideChangeName decides ChangeProductName.
func DecideChangeName(_ context.Context, p processor.DecideParams[State, ChangeProductName]) ([]events.Draft, error) {
	if p.Version == 0 {
		return nil, processor.Reject("product %s does not exist", p.Command.AggregateID)
	}
	if p.Payload.Name == "" {
		return nil, processor.Reject("a product needs a name")
	}
	if p.Payload.Name == p.State.Name {
		return nil, processor.Reject("the product is already named %q", p.Payload.Name)
	}
	return []events.Draft{{Type: ProductNameChangedType, Payload: ProductNameChanged{OldName: p.State.Name, Name: p.Payload.Name}}}, nil
}

// DecideChangePrice decides ChangePrice: PriceReduced or PriceIncreased.
func DecideChangePrice(_ context.Context, p processor.DecideParams[State, ChangePrice]) ([]events.Draft, error) {
	if p.Version == 0 {
		return nil, processor.Reject("product %s does not exist", p.Command.AggregateID)
	}
	if p.Payload.NewPrice <= 0 {
		return nil, processor.Reject("price must be greater than 0, got %v", p.Payload.NewPrice)
	}
	change := PriceChanged{OldPrice: p.State.Price, NewPrice: p.Payload.NewPrice}
	switch {
	case p.Payload.NewPrice < p.State.Price:
		return []events.Draft{{Type: PriceReducedType, Payload: change}}, nil
	case p.Payload.NewPrice > p.State.Price:
		return []events.Draft{{Type: PriceIncreasedType, Payload: change}}, nil
	default:
		return nil, processor.Reject("the price is already %v", p.State.Price)
	}
}

// DecideIncreaseStock decides IncreaseStock; the new stock must be higher.
func DecideIncreaseStock(_ context.Context, p processor.DecideParams[State, IncreaseStock]) ([]events.Draft, error) {
	if p.Version == 0 {
		return nil, processor.Reject("product %s does not exist", p.Command.AggregateID)
	}
	if p.Payload.NewStock < 0 {
		return nil, processor.Reject("stock must not be negative, got %d", p.Payload.NewStock)
	}
	if p.Payload.NewStock <= p.State.Stock {
		return nil, processor.Reject("IncreaseStock must raise the stock: it is %d, the command says %d", p.State.Stock, p.Payload.NewStock)
	}
	return []events.Draft{{Type: StockIncreasedType, Payload: StockIncreased{OldStock: p.State.Stock, NewStock: p.Payload.NewStock}}}, nil
}

// Evolve applies one event to a Product's state. Events it does not know
// (appended with AppendEvents) leave the state as it is.
func Evolve(state State, event events.Event) (State, error) {
	switch event.Type {
	case ProductCreatedType:
		created, err := events.DecodePayload[ProductCreated](event)
		if err != nil {
			return state, err
		}
		return State(created), nil
	case ProductNameChangedType:
		changed, err := events.DecodePayload[ProductNameChanged](event)
		if err != nil {
			return state, err
		}
		state.Name = changed.Name
	case PriceReducedType, PriceIncreasedType:
		changed, err := events.DecodePayload[PriceChanged](event)
		if err != nil {
			return state, err
		}
		state.Price = changed.NewPrice
	case StockIncreasedType:
		increased, err := events.DecodePayload[StockIncreased](event)
		if err != nil {
			return state, err
		}
		state.Stock = increased.NewStock
	}
	return state, nil
}

// Command builds a command envelope for a Product command, for examples and
// tests.
func Command(id, productID, commandType string, expectedVersion int64, payload any) (commands.Command, error) {
	raw, err := json.Marshal(payload)
	if err != nil {
		return commands.Command{}, errors.Wrapf(err, "encode %s payload of command %s", commandType, id)
	}
	return commands.Command{ID: id, AggregateID: productID, Type: commandType, ExpectedVersion: expectedVersion, Payload: raw}, nil
}
