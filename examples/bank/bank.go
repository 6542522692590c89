// Package bank is the second example domain, built only from Arbiter's
// public API: bank accounts whose balance may go below zero down to the
// account's overdraft limit and no further. Two withdrawals decided on the
// same balance cannot both pass the rule: the second one's expected version
// is stale, so it conflicts and its sender decides again on the new balance.
// Amounts are in cents.
package bank

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
	OpenAccountType = "OpenAccount"
	DepositType     = "Deposit"
	WithdrawType    = "Withdraw"
)

// Event types.
const (
	AccountOpenedType  = "AccountOpened"
	MoneyDepositedType = "MoneyDeposited"
	MoneyWithdrawnType = "MoneyWithdrawn"
)

// State is an account's state, stored as its snapshot.
type State struct {
	Owner          string `json:"owner"`
	Balance        int64  `json:"balance"`
	OverdraftLimit int64  `json:"overdraftLimit"`
}

// OpenAccount opens an account; it needs expectedVersion 0.
type OpenAccount struct {
	Owner string `json:"owner"`
	// OverdraftLimit is how far below zero the balance may go, >= 0.
	OverdraftLimit int64 `json:"overdraftLimit"`
}

// Deposit adds Amount (> 0) to the balance.
type Deposit struct {
	Amount int64 `json:"amount"`
}

// Withdraw takes Amount (> 0) from the balance, if the overdraft limit
// allows.
type Withdraw struct {
	Amount int64 `json:"amount"`
}

// AccountOpened is the payload of AccountOpened.
type AccountOpened struct {
	Owner          string `json:"owner"`
	OverdraftLimit int64  `json:"overdraftLimit"`
}

// Moved is the payload of MoneyDeposited and MoneyWithdrawn: the amount and
// the balance after it.
type Moved struct {
	Amount  int64 `json:"amount"`
	Balance int64 `json:"balance"`
}

// Aggregate is the Account aggregate type.
var Aggregate = processor.AggregateType[State]{Name: "Account", Evolve: Evolve}

// Register adds the Account handlers to a registry.
func Register(r *processor.Registry) error {
	return errors.Join(
		processor.Register(r, Aggregate, OpenAccountType, DecideOpen),
		processor.Register(r, Aggregate, DepositType, DecideDeposit),
		processor.Register(r, Aggregate, WithdrawType, DecideWithdraw),
	)
}

// DecideOpen decides OpenAccount.
func DecideOpen(_ context.Context, p processor.DecideParams[State, OpenAccount]) ([]events.Draft, error) {
	if p.Version != 0 {
		return nil, processor.Reject("account %s is already open (version %d)", p.Command.AggregateID, p.Version)
	}
	if p.Payload.Owner == "" {
		return nil, processor.Reject("an account needs an owner")
	}
	if p.Payload.OverdraftLimit < 0 {
		return nil, processor.Reject("the overdraft limit must not be negative, got %d", p.Payload.OverdraftLimit)
	}
	return []events.Draft{{Type: AccountOpenedType, Payload: AccountOpened(p.Payload)}}, nil
}

// DecideDeposit decides Deposit.
func DecideDeposit(_ context.Context, p processor.DecideParams[State, Deposit]) ([]events.Draft, error) {
	if p.Version == 0 {
		return nil, processor.Reject("account %s is not open", p.Command.AggregateID)
	}
	if p.Payload.Amount <= 0 {
		return nil, processor.Reject("a deposit must be positive, got %d", p.Payload.Amount)
	}
	return []events.Draft{{Type: MoneyDepositedType, Payload: Moved{Amount: p.Payload.Amount, Balance: p.State.Balance + p.Payload.Amount}}}, nil
}

// DecideWithdraw decides Withdraw: the balance after it must stay at or
// above minus the overdraft limit.
func DecideWithdraw(_ context.Context, p processor.DecideParams[State, Withdraw]) ([]events.Draft, error) {
	if p.Version == 0 {
		return nil, processor.Reject("account %s is not open", p.Command.AggregateID)
	}
	if p.Payload.Amount <= 0 {
		return nil, processor.Reject("a withdrawal must be positive, got %d", p.Payload.Amount)
	}
	balance := p.State.Balance - p.Payload.Amount
	if balance < -p.State.OverdraftLimit {
		return nil, processor.Reject("withdrawing %d would leave a balance of %d, below the overdraft limit of %d", p.Payload.Amount, balance, p.State.OverdraftLimit)
	}
	return []events.Draft{{Type: MoneyWithdrawnType, Payload: Moved{Amount: p.Payload.Amount, Balance: balance}}}, nil
}

// Evolve applies one event to an account's state. Events it does not know
// (appended with AppendEvents) leave the state as it is.
func Evolve(state State, event events.Event) (State, error) {
	switch event.Type {
	case AccountOpenedType:
		opened, err := events.DecodePayload[AccountOpened](event)
		if err != nil {
			return state, err
		}
		return State{Owner: opened.Owner, OverdraftLimit: opened.OverdraftLimit}, nil
	case MoneyDepositedType, MoneyWithdrawnType:
		moved, err := events.DecodePayload[Moved](event)
		if err != nil {
			return state, err
		}
		state.Balance = moved.Balance
	}
	return state, nil
}

// Command builds a command envelope for an Account command.
func Command(id, accountID, commandType string, expectedVersion int64, payload any) (commands.Command, error) {
	raw, err := json.Marshal(payload)
	if err != nil {
		return commands.Command{}, errors.Wrapf(err, "encode %s payload of command %s", commandType, id)
	}
	return commands.Command{ID: id, AggregateID: accountID, Type: commandType, ExpectedVersion: expectedVersion, Payload: raw}, nil
}
