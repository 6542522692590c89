package app

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/internal/testenv"
	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestTailExitAtEndAfterAbortedTransaction puts an aborted transaction at
// the end of the committed range: its marker lies past the last stable
// offset because another transaction is still open, so a read_committed
// reader is never given a record at the offset before the last stable one
// while that transaction stays open. tail --exit-at-end must still stop,
// having printed the committed record only.
func TestTailExitAtEndAfterAbortedTransaction(t *testing.T) {
	brokers := testenv.Brokers(t)
	eventsTopic := testenv.Name(t, "events")
	testenv.CreateTopics(t, brokers, 1, eventsTopic)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	newClient := func(opts ...kgo.Opt) *kgo.Client {
		client, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(eventsTopic)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(client.Close)
		return client
	}
	plain := newClient()
	aborting := newClient(kgo.TransactionalID(testenv.Name(t, "aborting")))
	open := newClient(kgo.TransactionalID(testenv.Name(t, "open")), kgo.TransactionTimeout(time.Minute))

	produce := func(client *kgo.Client, values ...string) {
		t.Helper()
		for _, value := range values {
			if err := client.ProduceSync(ctx, &kgo.Record{Key: []byte("a"), Value: []byte(value)}).FirstErr(); err != nil {
				t.Fatalf("produce %s: %v", value, err)
			}
		}
	}
	produce(plain, `{"id":"committed"}`)
	if err := aborting.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produce(aborting, `{"id":"aborted-1"}`, `{"id":"aborted-2"}`)
	if err := open.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produce(open, `{"id":"open"}`)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := open.EndTransaction(ctx, kgo.TryAbort); err != nil {
			t.Errorf("abort the open transaction: %v", err)
		}
	})
	if err := aborting.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatalf("abort: %v", err)
	}

	// Well within the open transaction's minute: a tail that waits for it
	// to end is cut off by this deadline.
	tailCtx, cancelTail := context.WithTimeout(ctx, 20*time.Second)
	defer cancelTail()
	var stdout, stderr bytes.Buffer
	env := map[string]string{"ARBITER_BROKERS": strings.Join(brokers, ","), "ARBITER_EVENTS_TOPIC": eventsTopic}
	code := Main(tailCtx, processor.NewRegistry(), []string{"tail", "events", "--json", "--from-start", "--exit-at-end"},
		Stdout(&stdout), Stderr(&stderr), LookupEnv(func(name string) (string, bool) { v, ok := env[name]; return v, ok }))
	if tailCtx.Err() != nil {
		t.Fatalf("tail --exit-at-end did not stop while a transaction stays open after an aborted one (printed %q, stderr %q)", stdout.String(), stderr.String())
	}
	if code != 0 || stdout.String() != "{\"id\":\"committed\"}\n" {
		t.Fatalf("tail --exit-at-end: exit %d, printed %q (stderr %q); want exit 0 and the committed record only", code, stdout.String(), stderr.String())
	}
}
