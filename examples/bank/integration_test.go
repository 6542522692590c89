package bank_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/app"
	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/examples/bank"
	"github.com/arbiter-cqrs/arbiter/internal/child"
	"github.com/arbiter-cqrs/arbiter/internal/testenv"
	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
)

// TestOverdraftAgainstTheRealStack runs the bank's worker through app.Main,
// as cmd/bank does, against the real Kafka and Redis. Alice and Bob both read
// acct-1 with a balance of 100.00 and a 50.00 overdraft limit and each
// withdraw 120.00: both are allowed on what they read, but only the first is
// applied; the second conflicts, and deciding again on the new balance
// (RetryOnConflict) refuses it, so the overdraft limit holds.
func TestOverdraftAgainstTheRealStack(t *testing.T) {
	brokers := testenv.Brokers(t)
	redisURL := testenv.RedisURL(t)
	name := testenv.Name(t, "")
	topics := []string{name + "-commands", name + "-events", name + "-conflicts"}
	testenv.CreateTopics(t, brokers, 3, topics...)

	registry := processor.NewRegistry()
	if err := bank.Register(registry); err != nil {
		t.Fatal(err)
	}
	workerCtx, stopWorker := context.WithCancel(context.Background())
	var stderr child.Buffer
	exited := make(chan int, 1)
	go func() {
		exited <- app.Main(workerCtx, registry, []string{"worker",
			"--brokers", strings.Join(brokers, ","), "--redis", redisURL, "--key-prefix", name, "--group", name,
			"--commands-topic", topics[0], "--events-topic", topics[1], "--conflicts-topic", topics[2],
			"--session-timeout", "6s", "--transaction-timeout", "6s", "--log-format", "json",
		}, app.Stdout(&stderr), app.Stderr(&stderr))
	}()
	defer func() {
		stopWorker()
		if code := <-exited; code != app.ExitOK {
			t.Errorf("the worker exited with %d, want 0 after its context ended:\n%s", code, stderr.String())
		}
		if t.Failed() {
			t.Logf("worker output:\n%s", stderr.String())
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	producer, err := commands.NewProducer(ctx, commands.ProducerConfig{Brokers: brokers, CommandsTopic: topics[0], EventsTopic: topics[1], ConflictsTopic: topics[2]})
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	send := func(id, commandType string, expectedVersion int64, payload any) (commands.Applied, error) {
		t.Helper()
		cmd, err := bank.Command(id, accountID, commandType, expectedVersion, payload)
		if err != nil {
			t.Fatal(err)
		}
		return producer.SendAndWait(ctx, cmd)
	}
	if _, err := send("open", bank.OpenAccountType, 0, bank.OpenAccount{Owner: "alice", OverdraftLimit: 5000}); err != nil {
		t.Fatalf("open acct-1: %v", err)
	}
	if _, err := send("salary", bank.DepositType, 1, bank.Deposit{Amount: 10000}); err != nil {
		t.Fatalf("deposit: %v", err)
	}

	// Both read version 2, balance 100.00.
	if applied, err := send("alice-withdraws", bank.WithdrawType, 2, bank.Withdraw{Amount: 12000}); err != nil || applied.Version != 3 {
		t.Fatalf("Alice's withdrawal: %+v, %v; want applied at version 3", applied, err)
	}
	_, err = send("bob-withdraws", bank.WithdrawType, 2, bank.Withdraw{Amount: 12000})
	if !errors.Is(err, commands.ErrVersionConflict) {
		t.Fatalf("Bob's withdrawal decided on a stale balance: %v; want a version conflict", err)
	}
	store := versionstore.New(testenv.Redis(t), versionstore.Options{KeyPrefix: name})
	_, err = commands.RetryOnConflict(ctx, producer, store, commands.RetryPolicy{}, accountID, func(_ context.Context, p commands.RetryParams) (commands.Command, error) {
		return bank.Command("", accountID, bank.WithdrawType, p.Current.Version, bank.Withdraw{Amount: 12000})
	})
	if !errors.Is(err, commands.ErrRejected) || !strings.Contains(err.Error(), "overdraft limit") {
		t.Fatalf("Bob's withdrawal decided again on the balance of -20.00: %v; want a rejection by the overdraft limit", err)
	}
	version, state, err := versionstore.GetState[bank.State](ctx, store, accountID)
	if err != nil || version != 3 || state.Balance != -2000 {
		t.Fatalf("acct-1 is at version %d with %+v (%v); want version 3, balance -2000", version, state, err)
	}
}
