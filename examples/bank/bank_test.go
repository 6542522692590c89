package bank_test

import (
	"context"
	"strings"
	"testing"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/examples/bank"
	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/cockroachdb/errors"
)

const accountID = "acct-1"

// open is acct-1 at version 3: opened with a 50.00 overdraft limit, 100.00
// deposited, 30.00 withdrawn.
var open = bank.State{Owner: "alice", Balance: 7000, OverdraftLimit: 5000}

// evolve applies the drafts to state at version as the worker would, once
// they are events.
func evolve(t *testing.T, state bank.State, version int64, drafts []events.Draft) bank.State {
	t.Helper()
	for _, draft := range drafts {
		payload, err := draft.EncodePayload()
		if err != nil {
			t.Fatal(err)
		}
		version++
		event := events.Event{ID: events.EventID(accountID, version), AggregateID: accountID, AggregateType: bank.Aggregate.Name, Type: draft.Type, Version: version, Payload: payload}
		if state, err = bank.Evolve(state, event); err != nil {
			t.Fatalf("Evolve with %s %s: %v", draft.Type, payload, err)
		}
	}
	return state
}

func decide[C any](t *testing.T, fn processor.DecideFunc[bank.State, C], commandType string, version int64, state bank.State, payload C) ([]events.Draft, error) {
	t.Helper()
	cmd, err := bank.Command("c-1", accountID, commandType, version, payload)
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Validate(); err != nil {
		t.Fatalf("bank.Command built an invalid command: %v", err)
	}
	return fn(context.Background(), processor.DecideParams[bank.State, C]{State: state, Version: version, Command: cmd, Payload: payload})
}

// TestAccountRules: each rule of the account, and the balance Evolve gives
// after each accepted command.
func TestAccountRules(t *testing.T) {
	tests := []struct {
		name     string
		decide   func(t *testing.T) ([]events.Draft, error)
		version  int64
		state    bank.State
		rejected string     // part of the rejection message, if rejected
		want     bank.State // the state after the events, if accepted
	}{
		{name: "open", version: 0, decide: func(t *testing.T) ([]events.Draft, error) {
			return decide(t, bank.DecideOpen, bank.OpenAccountType, 0, bank.State{}, bank.OpenAccount{Owner: "alice", OverdraftLimit: 5000})
		}, want: bank.State{Owner: "alice", OverdraftLimit: 5000}},
		{name: "open twice", decide: func(t *testing.T) ([]events.Draft, error) {
			return decide(t, bank.DecideOpen, bank.OpenAccountType, 3, open, bank.OpenAccount{Owner: "bob"})
		}, rejected: "already open"},
		{name: "open with a negative overdraft limit", decide: func(t *testing.T) ([]events.Draft, error) {
			return decide(t, bank.DecideOpen, bank.OpenAccountType, 0, bank.State{}, bank.OpenAccount{Owner: "alice", OverdraftLimit: -1})
		}, rejected: "must not be negative"},
		{name: "deposit", state: open, decide: func(t *testing.T) ([]events.Draft, error) {
			return decide(t, bank.DecideDeposit, bank.DepositType, 3, open, bank.Deposit{Amount: 500})
		}, want: bank.State{Owner: "alice", Balance: 7500, OverdraftLimit: 5000}},
		{name: "deposit to no account", decide: func(t *testing.T) ([]events.Draft, error) {
			return decide(t, bank.DecideDeposit, bank.DepositType, 0, bank.State{}, bank.Deposit{Amount: 500})
		}, rejected: "not open"},
		{name: "deposit nothing", decide: func(t *testing.T) ([]events.Draft, error) {
			return decide(t, bank.DecideDeposit, bank.DepositType, 3, open, bank.Deposit{Amount: 0})
		}, rejected: "must be positive"},
		{name: "withdraw into the overdraft", state: open, decide: func(t *testing.T) ([]events.Draft, error) {
			return decide(t, bank.DecideWithdraw, bank.WithdrawType, 3, open, bank.Withdraw{Amount: 12000})
		}, want: bank.State{Owner: "alice", Balance: -5000, OverdraftLimit: 5000}},
		{name: "withdraw past the overdraft limit", decide: func(t *testing.T) ([]events.Draft, error) {
			return decide(t, bank.DecideWithdraw, bank.WithdrawType, 3, open, bank.Withdraw{Amount: 12001})
		}, rejected: "below the overdraft limit of 5000"},
		{name: "withdraw a negative amount", decide: func(t *testing.T) ([]events.Draft, error) {
			return decide(t, bank.DecideWithdraw, bank.WithdrawType, 3, open, bank.Withdraw{Amount: -1})
		}, rejected: "must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			drafts, err := tt.decide(t)
			if tt.rejected != "" {
				if !errors.Is(err, processor.ErrRejected) || !strings.Contains(err.Error(), tt.rejected) {
					t.Fatalf("decision = %v, %v; want a rejection saying %q", drafts, err, tt.rejected)
				}
				return
			}
			if err != nil || len(drafts) != 1 {
				t.Fatalf("decision = %v, %v; want one event", drafts, err)
			}
			if got := evolve(t, tt.state, tt.version, drafts); got != tt.want {
				t.Fatalf("state after %s = %+v, want %+v", drafts[0].Type, got, tt.want)
			}
		})
	}
}

// TestRegister: the three command types belong to the Account aggregate.
func TestRegister(t *testing.T) {
	registry := processor.NewRegistry()
	if err := bank.Register(registry); err != nil {
		t.Fatal(err)
	}
	for _, commandType := range []string{bank.OpenAccountType, bank.DepositType, bank.WithdrawType} {
		if got := registry.AggregateTypeOf(commandType); got != "Account" {
			t.Errorf("AggregateTypeOf(%s) = %q, want Account", commandType, got)
		}
	}
	if err := bank.Register(registry); err == nil {
		t.Error("registering the handlers twice succeeded")
	}
}
