package processor_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/examples/product"
	"github.com/arbiter-cqrs/arbiter/internal/testkit"
	"github.com/arbiter-cqrs/arbiter/internal/verify"
	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ambiguousEnd ends transactions for real, but once armed it reports the
// next commit that went through as not committed, without an error, and
// rewinds the session to the offsets committed before it: what franz-go's
// GroupTransactSession.End does when EndTxn fails with
// UNKNOWN_SERVER_ERROR after the broker committed (it retries as an abort,
// which sends nothing, and resets to the offsets it last knew committed).
type ambiguousEnd struct {
	armed atomic.Bool
	done  chan struct{}
}

func newAmbiguousEnd() *ambiguousEnd { return &ambiguousEnd{done: make(chan struct{})} }

func (a *ambiguousEnd) end(ctx context.Context, sess *kgo.GroupTransactSession, commit kgo.TransactionEndTry) (bool, error) {
	// Armed is read before the transaction ends: a batch whose outcomes
	// the test saw before arming is not the one made ambiguous.
	fire := a.armed.CompareAndSwap(true, false)
	before := sess.Client().CommittedOffsets()
	committed, err := sess.End(ctx, commit)
	if !fire || !committed || err != nil {
		if fire {
			a.armed.Store(true) // nothing committed: the next commit then
		}
		return committed, err
	}
	sess.Client().SetOffsets(before)
	close(a.done) // armed once: fires once
	return false, nil
}

// sessionCounter counts the sessions a worker started.
// abortedEnd aborts one transaction whose commit was wanted and reports
// it, as franz-go does when the group took a partition from the member
// during the transaction: not committed, no error, the session rewound to
// the committed offsets. Nothing was committed, so the worker keeps its
// session.
type abortedEnd struct {
	armed atomic.Bool
	done  chan struct{}
}

func newAbortedEnd() *abortedEnd { return &abortedEnd{done: make(chan struct{})} }

func (a *abortedEnd) end(ctx context.Context, sess *kgo.GroupTransactSession, commit kgo.TransactionEndTry) (bool, error) {
	if commit != kgo.TryCommit || !a.armed.CompareAndSwap(true, false) {
		return sess.End(ctx, commit)
	}
	committed, err := sess.End(ctx, kgo.TryAbort)
	if committed || err != nil {
		return committed, err
	}
	close(a.done)
	return false, nil
}

func (a *abortedEnd) configure(*processor.Config) {}
func (a *abortedEnd) prepare(worker *processor.Worker) {
	processor.SetEndTransaction(worker, a.end)
}
func (a *abortedEnd) arm()                   { a.armed.Store(true) }
func (a *abortedEnd) fired() <-chan struct{} { return a.done }

type sessionCounter struct {
	joins atomic.Int32
}

func (c *sessionCounter) ObserveBatch(processor.BatchObservation) {}
func (c *sessionCounter) ObserveRedis(processor.RedisObservation) {}
func (c *sessionCounter) ObserveSession(o processor.SessionObservation) {
	if o.State == processor.SessionJoining {
		c.joins.Add(1)
	}
}

// ambiguity makes a worker's next commit after arm ambiguous: the broker
// commits and the worker is told it did not.
type ambiguity interface {
	// configure and prepare install it on the worker, before it runs.
	configure(cfg *processor.Config)
	prepare(worker *processor.Worker)
	arm()
	// fired is closed once a commit was made ambiguous.
	fired() <-chan struct{}
}

func (a *ambiguousEnd) configure(*processor.Config) {}
func (a *ambiguousEnd) prepare(worker *processor.Worker) {
	processor.SetEndTransaction(worker, a.end)
}
func (a *ambiguousEnd) arm()                   { a.armed.Store(true) }
func (a *ambiguousEnd) fired() <-chan struct{} { return a.done }

func (u *unknownEndTxn) configure(cfg *processor.Config) {
	cfg.KafkaOptions = append(cfg.KafkaOptions, kgo.Dialer(u.dial))
}
func (u *unknownEndTxn) prepare(*processor.Worker) {}
func (u *unknownEndTxn) arm()                      { u.armed.Store(true) }
func (u *unknownEndTxn) fired() <-chan struct{}    { return u.done }

// TestAmbiguousCommit (issue 10, scenario 5): a transaction the broker
// committed but the worker was told did not commit must not be replayed in
// the same session. The worker replaces the session, which fetches the
// committed offsets from the broker; every command keeps exactly one
// outcome and no aggregate version is published twice, in the ambiguous
// batch and in the batches after it, and verify finds no anomaly.
func TestAmbiguousCommit(t *testing.T) {
	tests := []struct {
		name      string
		ambiguity func() ambiguity
		// replace: the broker committed, so the session must be
		// replaced; otherwise nothing was, and replacing it (a rejoin,
		// which takes partitions from the other members, whose
		// transactions then abort too) would turn every rebalance into a
		// storm of them.
		replace bool
	}{
		// What the worker is told, without going through franz-go.
		{"End reports not committed", func() ambiguity { return newAmbiguousEnd() }, true},
		// The broker's answer rewritten on the wire: franz-go's own
		// handling of it (retry as an abort, rewind) reaches the worker.
		{"EndTxn answers UNKNOWN_SERVER_ERROR", func() ambiguity { return newUnknownEndTxn() }, true},
		// A transaction franz-go aborted, as after a revoke.
		{"a wanted commit aborted", func() ambiguity { return newAbortedEnd() }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testAmbiguousCommit(t, tt.ambiguity(), tt.replace)
		})
	}
}

func testAmbiguousCommit(t *testing.T, ambiguous ambiguity, wantReplace bool) {
	const partitions = 2
	s := newStack(t, partitions)
	sessions := &sessionCounter{}
	var replayed atomic.Int64
	worker := s.newWorker(s.group, func(cfg *processor.Config) {
		cfg.Observer = sessions
		cfg.Hooks.AfterBatch = func(_ context.Context, params processor.BatchParams) {
			replayed.Add(int64(params.Replayed))
		}
		ambiguous.configure(cfg)
	})
	ambiguous.prepare(worker)
	s.run(worker)

	// One product per partition, so that the ambiguous commit covers both.
	products := make([]string, partitions)
	for p := range products {
		products[p] = testkit.AggregateOn("ambiguous", int32(p), partitions)
	}
	var all []string
	phase := func(name string, commandsOf func(productID string) []commands.Command) {
		t.Helper()
		var cmds []commands.Command
		for _, productID := range products {
			cmds = append(cmds, commandsOf(productID)...)
		}
		ids := make([]string, len(cmds))
		for i, cmd := range cmds {
			ids[i] = cmd.ID
		}
		s.send(cmds...)
		s.out.WaitFor(90*time.Second, ids...)
		all = append(all, ids...)
		t.Logf("%s: %d commands have their outcomes", name, len(ids))
	}

	phase("created", func(productID string) []commands.Command {
		return []commands.Command{
			productCommand(t, productID+"-create", productID, product.CreateProductType, 0, product.CreateProduct{Name: "Desk", Price: 100, Stock: 5}),
		}
	})
	// The group has committed offsets on both partitions now: the rewind
	// after the ambiguous commit goes back to the start of its batch.
	ambiguous.arm()
	phase("ambiguous batch", func(productID string) []commands.Command {
		return []commands.Command{
			productCommand(t, productID+"-price", productID, product.ChangePriceType, 1, product.ChangePrice{NewPrice: 90}),
			productCommand(t, productID+"-stale", productID, product.ChangePriceType, 1, product.ChangePrice{NewPrice: 80}),
			productCommand(t, productID+"-stock", productID, product.IncreaseStockType, 2, product.IncreaseStock{NewStock: 10}),
		}
	})
	// The outcomes are visible as soon as the broker committed, maybe
	// before the worker was told otherwise.
	select {
	case <-ambiguous.fired():
	case <-time.After(90 * time.Second):
		t.Fatal("no commit was reported as not committed: the test did not make the commit ambiguous")
	}
	// Outcomes on a partition are read in order: once these are there, any
	// second copy of the ambiguous batch's outcomes would be too.
	phase("after the ambiguous batch", func(productID string) []commands.Command {
		return []commands.Command{
			productCommand(t, productID+"-after", productID, product.ChangePriceType, 3, product.ChangePrice{NewPrice: 70}),
		}
	})

	got := s.out.Snapshot()
	exactlyOne(t, got, all...)
	for _, productID := range products {
		for _, id := range []string{productID + "-price", productID + "-stock", productID + "-after"} {
			if o := got[id]; len(o.Events) == 0 {
				t.Errorf("command %s was not applied: %+v", id, o)
			}
		}
		if o := got[productID+"-stale"]; len(o.Conflicts) == 0 || o.Conflicts[0].Reason != events.ReasonVersionConflict {
			t.Errorf("command %s expected a version conflict: %+v", productID+"-stale", o)
		}
	}
	checkVersionsOnce(t, got, products, 4)
	t.Logf("sessions started: %d; outcomes replayed: %d", sessions.joins.Load(), replayed.Load())
	switch joins := sessions.joins.Load(); {
	case wantReplace && joins < 2:
		t.Errorf("the worker started %d sessions: the one told its commit did not go through was not replaced", joins)
	case !wantReplace && joins != 1:
		t.Errorf("the worker started %d sessions: it replaced a session whose transaction the broker did not commit", joins)
	}
	if !wantReplace && replayed.Load() == 0 {
		t.Error("the aborted batch's decisions were not replayed")
	}
	checkVerify(t, s)
}

// checkVersionsOnce checks that each product's events carry the versions 1
// to last, each once.
func checkVersionsOnce(t *testing.T, got map[string]testkit.Outcome, products []string, last int64) {
	t.Helper()
	versions := make(map[string][]int64)
	for _, o := range got {
		for _, e := range o.Events {
			versions[e.AggregateID] = append(versions[e.AggregateID], e.Version)
		}
	}
	for _, productID := range products {
		seen := versions[productID]
		sort.Slice(seen, func(i, j int) bool { return seen[i] < seen[j] })
		want := make([]int64, last)
		for i := range want {
			want[i] = int64(i + 1)
		}
		if fmt.Sprint(seen) != fmt.Sprint(want) {
			t.Errorf("product %s has event versions %v, want %v: a version published twice or missing", productID, seen, want)
		}
	}
}

// checkVerify runs arbiter verify's checks on the stack's topics and Redis:
// it must find no anomaly.
func checkVerify(t *testing.T, s *stack) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	history, err := verify.Read(ctx, verify.Config{
		Brokers: s.brokers, CommandsTopic: s.topics.Commands, EventsTopic: s.topics.Events, ConflictsTopic: s.topics.Conflicts,
	})
	if err != nil {
		t.Fatalf("read the history: %v", err)
	}
	versions, err := s.store.Versions(ctx)
	if err != nil {
		t.Fatalf("read the versions in redis: %v", err)
	}
	registry := processor.NewRegistry()
	if err := product.Register(registry); err != nil {
		t.Fatal(err)
	}
	report := verify.Check(history, verify.CheckOptions{RedisVersions: versions, RebasePolicies: registry.RebasePolicies()})
	t.Logf("verify: %s", report.Summary())
	for _, anomaly := range report.Anomalies {
		t.Errorf("verify: %s", anomaly)
	}
}

// EndTxn's Kafka API key, and its first flexible version (a tagged-field
// byte in the request and response headers).
const (
	endTxnAPIKey      = 26
	endTxnFlexibleMin = 3
)

// unknownEndTxn is a kgo.Dialer whose connections, once armed, answer the
// next EndTxn with UNKNOWN_SERVER_ERROR after the broker carried it out:
// the real ambiguous commit, seen through franz-go's own handling of it.
type unknownEndTxn struct {
	armed atomic.Bool
	done  chan struct{}
}

func newUnknownEndTxn() *unknownEndTxn { return &unknownEndTxn{done: make(chan struct{})} }

func (u *unknownEndTxn) dial(ctx context.Context, network, host string) (net.Conn, error) {
	conn, err := (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, network, host)
	if err != nil {
		return nil, err
	}
	return &rewritingConn{Conn: conn, owner: u, rewriting: make(map[int32]int16)}, nil
}

// rewritingConn follows the requests written to find the EndTxn commit
// sent once armed, and rewrites the error code of its response.
type rewritingConn struct {
	net.Conn
	owner *unknownEndTxn

	writeMu sync.Mutex
	written []byte
	// rewriting maps the correlation ID of the EndTxn whose response is
	// to be rewritten to its request version.
	rewriting map[int32]int16

	pending []byte // the rest of the response frame being read
}

func (c *rewritingConn) Write(p []byte) (int, error) {
	c.writeMu.Lock()
	c.written = append(c.written, p...)
	for len(c.written) >= 4 {
		size := int(binary.BigEndian.Uint32(c.written))
		if len(c.written) < 4+size {
			break
		}
		frame := c.written[4 : 4+size]
		// Armed is read before the broker gets the commit: a batch whose
		// outcomes the test saw before arming is not the one made
		// ambiguous.
		if len(frame) >= 8 && int16(binary.BigEndian.Uint16(frame)) == endTxnAPIKey && endTxnCommits(frame) &&
			c.owner.armed.CompareAndSwap(true, false) {
			c.rewriting[int32(binary.BigEndian.Uint32(frame[4:]))] = int16(binary.BigEndian.Uint16(frame[2:]))
		}
		c.written = c.written[4+size:]
	}
	c.writeMu.Unlock()
	return c.Conn.Write(p)
}

func (c *rewritingConn) Read(p []byte) (int, error) {
	if len(c.pending) == 0 {
		var sizeBytes [4]byte
		if _, err := io.ReadFull(c.Conn, sizeBytes[:]); err != nil {
			return 0, err
		}
		frame := make([]byte, 4+binary.BigEndian.Uint32(sizeBytes[:]))
		copy(frame, sizeBytes[:])
		if _, err := io.ReadFull(c.Conn, frame[4:]); err != nil {
			return 0, err
		}
		c.rewrite(frame)
		c.pending = frame
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// rewrite sets the error code of the selected EndTxn's response frame to
// UNKNOWN_SERVER_ERROR when the broker reported success.
func (c *rewritingConn) rewrite(frame []byte) {
	if len(frame) < 8 {
		return
	}
	correlationID := int32(binary.BigEndian.Uint32(frame[4:]))
	c.writeMu.Lock()
	version, ok := c.rewriting[correlationID]
	delete(c.rewriting, correlationID)
	c.writeMu.Unlock()
	if !ok {
		return
	}
	at := 4 + 4 + 4 // size, correlation ID, throttle
	if version >= endTxnFlexibleMin {
		at++ // the response header's empty tagged fields
	}
	if len(frame) < at+2 || binary.BigEndian.Uint16(frame[at:]) != 0 {
		c.owner.armed.Store(true) // not committed: the next commit then
		return
	}
	binary.BigEndian.PutUint16(frame[at:], 0xffff) // UNKNOWN_SERVER_ERROR, -1
	close(c.owner.done)
}

// endTxnCommits tells whether an EndTxn request frame (without its size)
// asks to commit.
func endTxnCommits(frame []byte) bool {
	flexible := int16(binary.BigEndian.Uint16(frame[2:])) >= endTxnFlexibleMin
	at := 8 // API key, version, correlation ID
	if at+2 > len(frame) {
		return false
	}
	if clientID := int16(binary.BigEndian.Uint16(frame[at:])); clientID > 0 {
		at += int(clientID)
	}
	at += 2
	if flexible {
		at++ // the request header's empty tagged fields
		length, n := binary.Uvarint(frame[min(at, len(frame)):])
		if n <= 0 {
			return false
		}
		at += n + int(length) - 1 // a compact string: length + 1
	} else {
		if at+2 > len(frame) {
			return false
		}
		at += 2 + int(int16(binary.BigEndian.Uint16(frame[at:])))
	}
	at += 8 + 2 // producer ID, epoch
	return at < len(frame) && frame[at] == 1
}
