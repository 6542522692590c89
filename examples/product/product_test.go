package product_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/examples/product"
	"github.com/arbiter-cqrs/arbiter/processor"
)

const productID = "prod-123"

// widget is prod-123 at version 5, where the Alice-and-Bob story starts.
var widget = product.State{Name: "Widget", Price: 25, Stock: 100}

// decision is what a Decide function is expected to answer.
type decision struct {
	// rejected, when set, is part of the rejection message expected.
	rejected string
	// events are the expected drafts, payloads as the typed structs.
	events []events.Draft
	// state is the state after the events, at version+len(events).
	state product.State
}

// params builds the parameters of a decision on state at version.
func params[C any](t *testing.T, commandType string, version int64, state product.State, expectedVersion int64, payload C) processor.DecideParams[product.State, C] {
	t.Helper()
	cmd, err := product.Command("c-1", productID, commandType, expectedVersion, payload)
	if err != nil {
		t.Fatalf("build %s command: %v", commandType, err)
	}
	if err := cmd.Validate(); err != nil {
		t.Fatalf("product.Command built an invalid %s command: %v", commandType, err)
	}
	return processor.DecideParams[product.State, C]{State: state, Version: version, Command: cmd, Payload: payload}
}

// apply evolves state at version with the drafts, as the worker does once
// they are events.
func apply(t *testing.T, state product.State, version int64, drafts []events.Draft) (product.State, int64) {
	t.Helper()
	for _, draft := range drafts {
		payload, err := draft.EncodePayload()
		if err != nil {
			t.Fatalf("encode payload of %s: %v", draft.Type, err)
		}
		version++
		event := events.Event{
			ID:            events.EventID(productID, version),
			AggregateID:   productID,
			AggregateType: product.Aggregate.Name,
			Type:          draft.Type,
			Version:       version,
			CommandID:     "c-1",
			Payload:       payload,
		}
		if state, err = product.Evolve(state, event); err != nil {
			t.Fatalf("Evolve with %s %s: %v", draft.Type, payload, err)
		}
	}
	return state, version
}

// checkDecision compares a Decide function's answer with want, and the state
// that Evolve gives from its events.
func checkDecision(t *testing.T, state product.State, version int64, drafts []events.Draft, err error, want decision) {
	t.Helper()
	if want.rejected != "" {
		if !errors.Is(err, processor.ErrRejected) {
			t.Fatalf("decision = %v, %v; want a rejection (errors.Is processor.ErrRejected): the rule %q is broken", drafts, err, want.rejected)
		}
		var rejection *processor.RejectionError
		if !errors.As(err, &rejection) || !strings.Contains(rejection.Message, want.rejected) {
			t.Errorf("rejection message %q, want it to contain %q", err, want.rejected)
		}
		if len(drafts) != 0 {
			t.Errorf("a rejected command decided events %v: a rejection must produce none", drafts)
		}
		return
	}
	if err != nil {
		t.Fatalf("decision failed: %v; want events %v", err, want.events)
	}
	if len(drafts) != len(want.events) {
		t.Fatalf("decided %d events %v, want %d: %v", len(drafts), drafts, len(want.events), want.events)
	}
	for i := range drafts {
		gotPayload, err := drafts[i].EncodePayload()
		if err != nil {
			t.Fatalf("encode payload of decided event %s: %v", drafts[i].Type, err)
		}
		wantPayload, err := json.Marshal(want.events[i].Payload)
		if err != nil {
			t.Fatal(err)
		}
		if drafts[i].Type != want.events[i].Type || !bytes.Equal(gotPayload, wantPayload) {
			t.Errorf("event %d = %s %s, want %s %s", i, drafts[i].Type, gotPayload, want.events[i].Type, wantPayload)
		}
	}
	gotState, gotVersion := apply(t, state, version, drafts)
	if gotState != want.state || gotVersion != version+int64(len(want.events)) {
		t.Errorf("after the events: %+v at version %d, want %+v at version %d", gotState, gotVersion, want.state, version+int64(len(want.events)))
	}
}

func TestDecideCreate(t *testing.T) {
	tests := []struct {
		name            string
		version         int64
		state           product.State
		expectedVersion int64
		payload         product.CreateProduct
		want            decision
	}{
		{
			name:    "creates",
			payload: product.CreateProduct{Name: "Widget", Price: 25, Stock: 100},
			want: decision{
				events: []events.Draft{{Type: product.ProductCreatedType, Payload: product.ProductCreated{Name: "Widget", Price: 25, Stock: 100}}},
				state:  product.State{Name: "Widget", Price: 25, Stock: 100},
			},
		},
		{
			name:    "stock 0 is allowed",
			payload: product.CreateProduct{Name: "Gadget", Price: 0.01, Stock: 0},
			want: decision{
				events: []events.Draft{{Type: product.ProductCreatedType, Payload: product.ProductCreated{Name: "Gadget", Price: 0.01, Stock: 0}}},
				state:  product.State{Name: "Gadget", Price: 0.01, Stock: 0},
			},
		},
		{name: "price 0", payload: product.CreateProduct{Name: "Widget", Price: 0, Stock: 1}, want: decision{rejected: "price must be greater than 0"}},
		{name: "negative price", payload: product.CreateProduct{Name: "Widget", Price: -5, Stock: 1}, want: decision{rejected: "price must be greater than 0"}},
		{name: "negative stock", payload: product.CreateProduct{Name: "Widget", Price: 5, Stock: -1}, want: decision{rejected: "stock must not be negative"}},
		{name: "no name", payload: product.CreateProduct{Price: 5, Stock: 1}, want: decision{rejected: "needs a name"}},
		{name: "expectedVersion 1", expectedVersion: 1, payload: product.CreateProduct{Name: "Widget", Price: 25, Stock: 100}, want: decision{rejected: "needs expectedVersion 0"}},
		{name: "expectedVersion -1 (any)", expectedVersion: -1, payload: product.CreateProduct{Name: "Widget", Price: 25, Stock: 100}, want: decision{rejected: "needs expectedVersion 0"}},
		{name: "expectedVersion -2 (exists)", expectedVersion: -2, payload: product.CreateProduct{Name: "Widget", Price: 25, Stock: 100}, want: decision{rejected: "needs expectedVersion 0"}},
		{name: "product exists", version: 5, state: widget, payload: product.CreateProduct{Name: "Widget 2", Price: 30, Stock: 1}, want: decision{rejected: "already exists at version 5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			drafts, err := product.DecideCreate(context.Background(), params(t, product.CreateProductType, tt.version, tt.state, tt.expectedVersion, tt.payload))
			checkDecision(t, tt.state, tt.version, drafts, err, tt.want)
		})
	}
}

func TestDecideChangeName(t *testing.T) {
	tests := []struct {
		name    string
		version int64
		state   product.State
		payload product.ChangeProductName
		want    decision
	}{
		{
			name: "renames", version: 5, state: widget, payload: product.ChangeProductName{Name: "Widget Pro"},
			want: decision{
				events: []events.Draft{{Type: product.ProductNameChangedType, Payload: product.ProductNameChanged{OldName: "Widget", Name: "Widget Pro"}}},
				state:  product.State{Name: "Widget Pro", Price: 25, Stock: 100},
			},
		},
		{name: "same name", version: 5, state: widget, payload: product.ChangeProductName{Name: "Widget"}, want: decision{rejected: `already named "Widget"`}},
		{name: "no name", version: 5, state: widget, payload: product.ChangeProductName{}, want: decision{rejected: "needs a name"}},
		{name: "product does not exist", payload: product.ChangeProductName{Name: "Widget"}, want: decision{rejected: "does not exist"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			drafts, err := product.DecideChangeName(context.Background(), params(t, product.ChangeProductNameType, tt.version, tt.state, tt.version, tt.payload))
			checkDecision(t, tt.state, tt.version, drafts, err, tt.want)
		})
	}
}

func TestDecideChangePrice(t *testing.T) {
	tests := []struct {
		name    string
		version int64
		state   product.State
		payload product.ChangePrice
		want    decision
	}{
		{
			name: "lower price", version: 5, state: widget, payload: product.ChangePrice{NewPrice: 22},
			want: decision{
				events: []events.Draft{{Type: product.PriceReducedType, Payload: product.PriceChanged{OldPrice: 25, NewPrice: 22}}},
				state:  product.State{Name: "Widget", Price: 22, Stock: 100},
			},
		},
		{
			name: "a cent lower", version: 5, state: widget, payload: product.ChangePrice{NewPrice: 24.99},
			want: decision{
				events: []events.Draft{{Type: product.PriceReducedType, Payload: product.PriceChanged{OldPrice: 25, NewPrice: 24.99}}},
				state:  product.State{Name: "Widget", Price: 24.99, Stock: 100},
			},
		},
		{
			name: "higher price", version: 5, state: widget, payload: product.ChangePrice{NewPrice: 30},
			want: decision{
				events: []events.Draft{{Type: product.PriceIncreasedType, Payload: product.PriceChanged{OldPrice: 25, NewPrice: 30}}},
				state:  product.State{Name: "Widget", Price: 30, Stock: 100},
			},
		},
		{name: "same price", version: 5, state: widget, payload: product.ChangePrice{NewPrice: 25}, want: decision{rejected: "the price is already 25"}},
		{name: "price 0", version: 5, state: widget, payload: product.ChangePrice{NewPrice: 0}, want: decision{rejected: "price must be greater than 0"}},
		{name: "negative price", version: 5, state: widget, payload: product.ChangePrice{NewPrice: -22}, want: decision{rejected: "price must be greater than 0"}},
		{name: "product does not exist", payload: product.ChangePrice{NewPrice: 22}, want: decision{rejected: "does not exist"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			drafts, err := product.DecideChangePrice(context.Background(), params(t, product.ChangePriceType, tt.version, tt.state, tt.version, tt.payload))
			checkDecision(t, tt.state, tt.version, drafts, err, tt.want)
		})
	}
}

func TestDecideIncreaseStock(t *testing.T) {
	tests := []struct {
		name    string
		version int64
		state   product.State
		payload product.IncreaseStock
		want    decision
	}{
		{
			name: "raises", version: 5, state: widget, payload: product.IncreaseStock{NewStock: 120},
			want: decision{
				events: []events.Draft{{Type: product.StockIncreasedType, Payload: product.StockIncreased{OldStock: 100, NewStock: 120}}},
				state:  product.State{Name: "Widget", Price: 25, Stock: 120},
			},
		},
		{
			name: "raises from 0", version: 1, state: product.State{Name: "Gadget", Price: 1}, payload: product.IncreaseStock{NewStock: 1},
			want: decision{
				events: []events.Draft{{Type: product.StockIncreasedType, Payload: product.StockIncreased{OldStock: 0, NewStock: 1}}},
				state:  product.State{Name: "Gadget", Price: 1, Stock: 1},
			},
		},
		{name: "same stock", version: 5, state: widget, payload: product.IncreaseStock{NewStock: 100}, want: decision{rejected: "must raise the stock"}},
		{name: "lower stock", version: 5, state: widget, payload: product.IncreaseStock{NewStock: 99}, want: decision{rejected: "must raise the stock"}},
		{name: "negative stock", version: 5, state: widget, payload: product.IncreaseStock{NewStock: -1}, want: decision{rejected: "stock must not be negative"}},
		{name: "negative stock on an empty shelf", version: 1, state: product.State{Name: "Gadget", Price: 1, Stock: -5}, payload: product.IncreaseStock{NewStock: -1}, want: decision{rejected: "stock must not be negative"}},
		{name: "product does not exist", payload: product.IncreaseStock{NewStock: 10}, want: decision{rejected: "does not exist"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			drafts, err := product.DecideIncreaseStock(context.Background(), params(t, product.IncreaseStockType, tt.version, tt.state, tt.version, tt.payload))
			checkDecision(t, tt.state, tt.version, drafts, err, tt.want)
		})
	}
}

func TestEvolve(t *testing.T) {
	tests := []struct {
		name      string
		state     product.State
		eventType string
		payload   string
		want      product.State
		wantErr   bool
	}{
		{name: "created", eventType: product.ProductCreatedType, payload: `{"name":"Widget","price":25,"stock":100}`, want: widget},
		{name: "created again replaces the state", state: product.State{Name: "Old", Price: 1, Stock: 1}, eventType: product.ProductCreatedType, payload: `{"name":"Widget","price":25,"stock":100}`, want: widget},
		{name: "name changed", state: widget, eventType: product.ProductNameChangedType, payload: `{"oldName":"Widget","name":"Gizmo"}`, want: product.State{Name: "Gizmo", Price: 25, Stock: 100}},
		{name: "price reduced", state: widget, eventType: product.PriceReducedType, payload: `{"oldPrice":25,"newPrice":22}`, want: product.State{Name: "Widget", Price: 22, Stock: 100}},
		{name: "price increased", state: widget, eventType: product.PriceIncreasedType, payload: `{"oldPrice":25,"newPrice":30}`, want: product.State{Name: "Widget", Price: 30, Stock: 100}},
		{name: "stock increased", state: widget, eventType: product.StockIncreasedType, payload: `{"oldStock":100,"newStock":120}`, want: product.State{Name: "Widget", Price: 25, Stock: 120}},
		{name: "unknown event type leaves the state", state: widget, eventType: "InventoryCounted", payload: `{"count":3}`, want: widget},
		{name: "payload of the wrong shape", state: widget, eventType: product.PriceReducedType, payload: `{"newPrice":"cheap"}`, want: widget, wantErr: true},
		{name: "payload not JSON", state: widget, eventType: product.StockIncreasedType, payload: `{`, want: widget, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			event := events.Event{ID: events.EventID(productID, 6), AggregateID: productID, Type: tt.eventType, Version: 6, Payload: json.RawMessage(tt.payload)}
			got, err := product.Evolve(tt.state, event)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Evolve(%+v, %s %s) error = %v, want error %t", tt.state, tt.eventType, tt.payload, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("Evolve(%+v, %s %s) = %+v, want %+v", tt.state, tt.eventType, tt.payload, got, tt.want)
			}
		})
	}
}

// TestAliceAndBob tells the story with plain functions: prod-123 is at
// version 5 (price 25, stock 100). Bob's IncreaseStock(120) is decided first,
// on version 5; Alice's ChangePrice(22) is then decided on version 6, the
// state Bob's event left.
func TestAliceAndBob(t *testing.T) {
	ctx := context.Background()
	state, version := widget, int64(5)

	bob, err := product.DecideIncreaseStock(ctx, params(t, product.IncreaseStockType, version, state, 5, product.IncreaseStock{NewStock: 120}))
	checkDecision(t, state, version, bob, err, decision{
		events: []events.Draft{{Type: product.StockIncreasedType, Payload: product.StockIncreased{OldStock: 100, NewStock: 120}}},
		state:  product.State{Name: "Widget", Price: 25, Stock: 120},
	})
	state, version = apply(t, state, version, bob)
	if version != 6 {
		t.Fatalf("after Bob's command prod-123 is at version %d, want 6", version)
	}

	alice, err := product.DecideChangePrice(ctx, params(t, product.ChangePriceType, version, state, 6, product.ChangePrice{NewPrice: 22}))
	checkDecision(t, state, version, alice, err, decision{
		events: []events.Draft{{Type: product.PriceReducedType, Payload: product.PriceChanged{OldPrice: 25, NewPrice: 22}}},
		state:  product.State{Name: "Widget", Price: 22, Stock: 120},
	})
	state, version = apply(t, state, version, alice)
	if want := (product.State{Name: "Widget", Price: 22, Stock: 120}); state != want || version != 7 {
		t.Errorf("at the end of the story prod-123 is %+v at version %d, want %+v at version 7: neither change may be lost", state, version, want)
	}
}

func TestRegister(t *testing.T) {
	registry := processor.NewRegistry()
	if err := product.Register(registry); err != nil {
		t.Fatalf("Register on a new registry: %v", err)
	}
	for _, commandType := range []string{product.CreateProductType, product.ChangeProductNameType, product.ChangePriceType, product.IncreaseStockType} {
		if got := registry.AggregateTypeOf(commandType); got != product.Aggregate.Name {
			t.Errorf("AggregateTypeOf(%s) = %q, want %q", commandType, got, product.Aggregate.Name)
		}
	}
	if err := product.Register(registry); err == nil {
		t.Errorf("Register twice on one registry succeeded, want an error: command types must have one handler")
	}

	// The registry evolves JSON snapshots with the same Evolve.
	snapshot, err := json.Marshal(widget)
	if err != nil {
		t.Fatal(err)
	}
	next, err := registry.Evolve(product.Aggregate.Name, snapshot, events.Event{Type: product.PriceReducedType, Payload: json.RawMessage(`{"oldPrice":25,"newPrice":22}`)})
	if err != nil {
		t.Fatalf("registry.Evolve: %v", err)
	}
	var got product.State
	if err := json.Unmarshal(next, &got); err != nil || got != (product.State{Name: "Widget", Price: 22, Stock: 100}) {
		t.Errorf("registry.Evolve snapshot = %s (%v), want the Widget at price 22", next, err)
	}
}

func TestCommand(t *testing.T) {
	cmd, err := product.Command("c-7", productID, product.ChangePriceType, 5, product.ChangePrice{NewPrice: 22})
	if err != nil {
		t.Fatal(err)
	}
	want := commands.Command{ID: "c-7", AggregateID: productID, Type: product.ChangePriceType, ExpectedVersion: 5, Payload: json.RawMessage(`{"newPrice":22}`)}
	if cmd.ID != want.ID || cmd.AggregateID != want.AggregateID || cmd.Type != want.Type || cmd.ExpectedVersion != want.ExpectedVersion || !bytes.Equal(cmd.Payload, want.Payload) {
		t.Errorf("Command = %+v (payload %s), want %+v (payload %s)", cmd, cmd.Payload, want, want.Payload)
	}
	if _, err := product.Command("c-8", productID, product.ChangePriceType, 5, func() {}); err == nil {
		t.Errorf("Command with a payload that is not JSON succeeded, want an error")
	}
}
