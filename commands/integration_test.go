package commands_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/examples/product"
	"github.com/arbiter-cqrs/arbiter/internal/testenv"
	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// stack is one test's slice of the real Kafka and Redis with an in-process
// worker, and a Producer on it.
type stack struct {
	t        *testing.T
	store    *versionstore.Store
	producer *commands.Producer
	cfg      commands.ProducerConfig
}

func newStack(t *testing.T) *stack {
	t.Helper()
	brokers := testenv.Brokers(t)
	name := testenv.Name(t, "")
	cfg := commands.ProducerConfig{
		Brokers:        brokers,
		CommandsTopic:  name + "-commands",
		EventsTopic:    name + "-events",
		ConflictsTopic: name + "-conflicts",
		Logger:         zaptest.NewLogger(t).Named("producer"),
	}
	testenv.CreateTopics(t, brokers, 3, cfg.CommandsTopic, cfg.EventsTopic, cfg.ConflictsTopic)
	s := &stack{t: t, cfg: cfg, store: versionstore.New(testenv.Redis(t), versionstore.Options{KeyPrefix: name})}

	registry := processor.NewRegistry()
	if err := product.Register(registry); err != nil {
		t.Fatal(err)
	}
	worker, err := processor.New(processor.Config{
		Brokers: brokers, Group: name, CommandsTopic: cfg.CommandsTopic, EventsTopic: cfg.EventsTopic, ConflictsTopic: cfg.ConflictsTopic,
		Registry: registry, Store: s.store, Logger: zaptest.NewLogger(t).Named("worker"), SessionTimeout: 6 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- worker.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})

	s.producer, err = commands.NewProducer(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.producer.Close)
	return s
}

func productCommand(t *testing.T, id, productID, commandType string, expectedVersion int64, payload any) commands.Command {
	t.Helper()
	cmd, err := product.Command(id, productID, commandType, expectedVersion, payload)
	if err != nil {
		t.Fatal(err)
	}
	return cmd
}

func (s *stack) sendAndWait(cmd commands.Command) (commands.Applied, error) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return s.producer.SendAndWait(ctx, cmd)
}

// productAtVersion5 brings a product to version 5 (price 25, stock 100)
// through SendAndWait, each command applied at the next version.
func (s *stack) productAtVersion5(productID string) {
	t := s.t
	t.Helper()
	setup := []commands.Command{
		productCommand(t, productID+"-v1", productID, product.CreateProductType, 0, product.CreateProduct{Name: "Chair", Price: 30, Stock: 10}),
		productCommand(t, productID+"-v2", productID, product.ChangePriceType, 1, product.ChangePrice{NewPrice: 28}),
		productCommand(t, productID+"-v3", productID, product.IncreaseStockType, 2, product.IncreaseStock{NewStock: 50}),
		productCommand(t, productID+"-v4", productID, product.ChangePriceType, 3, product.ChangePrice{NewPrice: 25}),
		productCommand(t, productID+"-v5", productID, product.IncreaseStockType, 4, product.IncreaseStock{NewStock: 100}),
	}
	for i, cmd := range setup {
		applied, err := s.sendAndWait(cmd)
		if err != nil || applied.Version != int64(i+1) || len(applied.Events) != 1 {
			t.Fatalf("setup command %s: got %+v, %v; want applied at version %d", cmd.ID, applied, err, i+1)
		}
	}
}

// TestSendAndWait is the Alice-and-Bob story through the Go client, and the
// other outcomes SendAndWait reports.
func TestSendAndWait(t *testing.T) {
	s := newStack(t)
	const productID = "prod-123"
	s.productAtVersion5(productID)

	bob := productCommand(t, "bob-1", productID, product.IncreaseStockType, 5, product.IncreaseStock{NewStock: 120})
	alice := productCommand(t, "alice-1", productID, product.ChangePriceType, 5, product.ChangePrice{NewPrice: 22})

	t.Run("Bob's IncreaseStock is applied at version 6", func(t *testing.T) {
		applied, err := s.sendAndWait(bob)
		if err != nil {
			t.Fatalf("Bob's command: %v", err)
		}
		if applied.Version != 6 || applied.Duplicate || len(applied.Events) != 1 || applied.Events[0].Type != product.StockIncreasedType || applied.Events[0].CommandID != bob.ID {
			t.Fatalf("Bob's command: got %+v, want applied at version 6 with one StockIncreased", applied)
		}
	})
	t.Run("Alice's stale ChangePrice is a version conflict, expected 5 actual 6", func(t *testing.T) {
		_, err := s.sendAndWait(alice)
		if !errors.Is(err, commands.ErrVersionConflict) {
			t.Fatalf("Alice's command: got %v, want ErrVersionConflict", err)
		}
		var conflict *commands.ConflictError
		if !errors.As(err, &conflict) || conflict.ExpectedVersion != 5 || conflict.ActualVersion != 6 || conflict.Duplicate || conflict.CommandID != alice.ID {
			t.Fatalf("Alice's conflict details: %+v", conflict)
		}
	})
	t.Run("a resend of Bob's applied command reports the original outcome", func(t *testing.T) {
		applied, err := s.sendAndWait(bob)
		if err != nil || applied.Version != 6 || !applied.Duplicate {
			t.Fatalf("resent applied command: got %+v, %v; want Applied at version 6, Duplicate", applied, err)
		}
	})
	t.Run("a resend of Alice's conflicted command reports the original conflict", func(t *testing.T) {
		_, err := s.sendAndWait(alice)
		var conflict *commands.ConflictError
		if !errors.As(err, &conflict) || !errors.Is(err, commands.ErrVersionConflict) || !conflict.Duplicate || conflict.ExpectedVersion != 5 || conflict.ActualVersion != 6 {
			t.Fatalf("resent conflicted command: got %v, want a duplicate version conflict expected 5 actual 6", err)
		}
	})
	t.Run("rejected and unknown_type", func(t *testing.T) {
		_, err := s.sendAndWait(productCommand(t, "rejected-1", productID, product.IncreaseStockType, 6, product.IncreaseStock{NewStock: 1}))
		var conflict *commands.ConflictError
		if !errors.Is(err, commands.ErrRejected) || !errors.As(err, &conflict) || conflict.Message == "" {
			t.Fatalf("got %v, want ErrRejected with the handler's message", err)
		}
		_, err = s.sendAndWait(productCommand(t, "unknown-1", productID, "Teleport", 6, nil))
		if !errors.Is(err, commands.ErrUnknownType) {
			t.Fatalf("got %v, want ErrUnknownType", err)
		}
	})
	t.Run("an invalid command is refused before sending", func(t *testing.T) {
		_, err := s.sendAndWait(commands.Command{ID: "no-type", AggregateID: productID, ExpectedVersion: 6})
		var invalid *commands.InvalidError
		if !errors.Is(err, commands.ErrInvalid) || !errors.As(err, &invalid) {
			t.Fatalf("got %v, want an *InvalidError", err)
		}
	})
	t.Run("a command with several events reports all of them", func(t *testing.T) {
		payload, _ := json.Marshal(map[string]any{"events": []map[string]any{{"type": "A"}, {"type": "B"}, {"type": "C"}}})
		applied, err := s.sendAndWait(commands.Command{ID: "append-1", AggregateID: "log-1", Type: processor.AppendEventsType, ExpectedVersion: 0, Payload: payload})
		if err != nil || applied.Version != 3 || len(applied.Events) != 3 {
			t.Fatalf("got %+v, %v; want applied at version 3 with 3 events", applied, err)
		}
		for i, e := range applied.Events {
			if e.Version != int64(i+1) || e.Type != string(rune('A'+i)) {
				t.Fatalf("event %d: %+v", i, e)
			}
		}
	})
	t.Run("many concurrent waits, several events each", func(t *testing.T) {
		const aggregates, perAggregate = 20, 10
		var wg sync.WaitGroup
		errs := make(chan error, aggregates)
		for a := range aggregates {
			wg.Add(1)
			go func() {
				defer wg.Done()
				aggregateID := fmt.Sprintf("stream-%d", a)
				for i := range perAggregate {
					applied, err := s.sendAndWait(commands.Command{ID: fmt.Sprintf("%s-%d", aggregateID, i), AggregateID: aggregateID,
						Type: processor.AppendEventsType, ExpectedVersion: int64(2 * i), Payload: []byte(`{"events":[{"type":"X"},{"type":"Y"}]}`)})
					if err != nil || applied.Version != int64(2*i+2) || len(applied.Events) != 2 {
						errs <- errors.Newf("%s command %d: got %+v, %v; want applied at version %d with 2 events", aggregateID, i, applied, err, 2*i+2)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
	t.Run("a wait times out cleanly with its context", func(t *testing.T) {
		// Nothing answers a command on a topic no worker reads, so only
		// the context ends the wait.
		cfg := s.cfg
		cfg.CommandsTopic = cfg.CommandsTopic + "-unread"
		testenv.CreateTopics(t, cfg.Brokers, 1, cfg.CommandsTopic)
		p, err := commands.NewProducer(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		start := time.Now()
		_, err = p.SendAndWait(ctx, productCommand(t, "lost-1", productID, product.ChangePriceType, 6, product.ChangePrice{NewPrice: 1}))
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 10*time.Second {
			t.Fatalf("got %v after %v, want context.DeadlineExceeded after about 2s", err, time.Since(start))
		}
	})
}

// TestRetryOnConflict: Alice reads prod-123 at version 5 and decides on it;
// Bob's IncreaseStock is applied before her command arrives. RetryOnConflict
// reads again, Alice decides again on version 6 (stock 120), and her price
// change is applied at version 7.
func TestRetryOnConflict(t *testing.T) {
	s := newStack(t)
	const productID = "prod-123"
	s.productAtVersion5(productID)

	type seen struct {
		attempt int
		version int64
		state   product.State
	}
	var decisions []seen
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	applied, err := commands.RetryOnConflict(ctx, s.producer, s.store, commands.RetryPolicy{MaxAttempts: 3}, productID,
		func(ctx context.Context, p commands.RetryParams) (commands.Command, error) {
			state, err := versionstore.DecodeState[product.State](p.Current)
			if err != nil {
				return commands.Command{}, err
			}
			decisions = append(decisions, seen{p.Attempt, p.Current.Version, state})
			if p.Attempt == 1 {
				// Bob is quicker: his command is applied between
				// Alice's read and her send.
				bob := productCommand(t, "bob-1", productID, product.IncreaseStockType, 5, product.IncreaseStock{NewStock: 120})
				if applied, err := s.producer.SendAndWait(ctx, bob); err != nil || applied.Version != 6 {
					return commands.Command{}, errors.Newf("Bob's command: %+v, %v", applied, err)
				}
			}
			// Alice's rule: 3 off the price she sees, only while the
			// stock is at least 100.
			if state.Stock < 100 {
				return commands.Command{}, errors.New("stock too low for a discount")
			}
			return product.Command("", productID, product.ChangePriceType, p.Current.Version, product.ChangePrice{NewPrice: state.Price - 3})
		})
	if err != nil {
		t.Fatalf("RetryOnConflict: %v", err)
	}
	if applied.Version != 7 || len(applied.Events) != 1 || applied.Events[0].Type != product.PriceReducedType {
		t.Fatalf("got %+v, want the price change applied at version 7", applied)
	}
	if len(decisions) != 2 || decisions[0].version != 5 || decisions[1].version != 6 || decisions[1].state.Stock != 120 || decisions[1].state.Price != 25 {
		t.Fatalf("decide saw %+v; want version 5, then version 6 with stock 120 and price 25", decisions)
	}
	version, state, err := versionstore.GetState[product.State](ctx, s.store, productID)
	if err != nil || version != 7 || state.Price != 22 || state.Stock != 120 {
		t.Fatalf("redis holds version %d state %+v (%v); want version 7, price 22, stock 120", version, state, err)
	}
}
