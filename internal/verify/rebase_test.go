package verify

import (
	"slices"
	"strings"
	"testing"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/processor"
)

// rebasedCommand appends a command record that opted in to rebasing.
func (b *historyBuilder) rebasedCommand(partition int32, id, aggregateID, commandType string, expectedVersion int64, onConflict string) Position {
	cmd := commands.Command{ID: id, AggregateID: aggregateID, Type: commandType, ExpectedVersion: expectedVersion, OnConflict: onConflict}
	value, err := cmd.Encode()
	if err != nil {
		b.t.Fatalf("encode command: %v", err)
	}
	return b.raw(partition, aggregateID, string(value))
}

// TestCheckRebase: a command applied past expectedVersion + 1 is a rebase
// only with rebasedFrom, the opt-in, a declared policy and no dependent
// event between; every other case stays a lost update.
func TestCheckRebase(t *testing.T) {
	policies := map[string]processor.RebasePolicy{
		"ChangePrice": {DependsOn: []string{"PriceIncreased", "PriceReduced", "ProductCreated"}},
		"Resolved":    {Custom: true},
	}
	// The seed: p at version 2 (created, then stock raised at 2), and a
	// ChangePrice that expected version 1.
	tests := []struct {
		name        string
		commandType string
		onConflict  string
		between     string // the type of the event at version 2
		rebasedFrom *int64
		policies    map[string]processor.RebasePolicy
		wantLost    string // a substring of the lost update's detail; "" for a rebase
	}{
		{name: "rebase past an independent event", commandType: "ChangePrice", onConflict: "rebase", between: "StockIncreased", rebasedFrom: events.Version(1), policies: policies},
		{name: "custom resolver", commandType: "Resolved", onConflict: "rebase", between: "PriceReduced", rebasedFrom: events.Version(1), policies: policies},
		{name: "past a dependent event", commandType: "ChangePrice", onConflict: "rebase", between: "PriceReduced", rebasedFrom: events.Version(1), policies: policies,
			wantLost: "rebased past PriceReduced at version 2"},
		{name: "no rebasedFrom", commandType: "ChangePrice", onConflict: "rebase", between: "StockIncreased", policies: policies,
			wantLost: "but its first event is version 3, not 2"},
		{name: "wrong rebasedFrom", commandType: "ChangePrice", onConflict: "rebase", between: "StockIncreased", rebasedFrom: events.Version(0), policies: policies,
			wantLost: "rebasedFrom 0 is not that expectedVersion"},
		{name: "did not opt in", commandType: "ChangePrice", between: "StockIncreased", rebasedFrom: events.Version(1), policies: policies,
			wantLost: "did not opt in"},
		{name: "undeclared command type", commandType: "Rename", onConflict: "rebase", between: "StockIncreased", rebasedFrom: events.Version(1), policies: policies,
			wantLost: "declares no event types"},
		{name: "no policies given", commandType: "ChangePrice", onConflict: "rebase", between: "StockIncreased", rebasedFrom: events.Version(1),
			wantLost: "declares no event types"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newHistoryBuilder(t)
			b.events(b.command(0, "create", "p", "CreateProduct", 0), 1, "ProductCreated")
			b.events(b.command(0, "bob", "p", "IncreaseStock", 1), 2, tt.between)
			alice := b.rebasedCommand(0, "alice", "p", tt.commandType, 1, tt.onConflict)
			b.events(alice, 3, "PriceReduced")
			b.h.Events[len(b.h.Events)-1].Event.RebasedFrom = tt.rebasedFrom
			report := Check(&b.h, CheckOptions{RebasePolicies: tt.policies})
			if tt.wantLost == "" {
				if !report.OK() || report.Rebased != 1 {
					t.Fatalf("want a clean history with one rebase, got:\n%s", report.Summary())
				}
				if !strings.Contains(report.Summary(), "(rebased 1)") {
					t.Errorf("the summary does not count the rebase: %s", report.Summary())
				}
				return
			}
			if len(report.Anomalies) != 1 || report.Anomalies[0].Kind != KindLostUpdate || report.Anomalies[0].CommandID != "alice" ||
				!strings.Contains(report.Anomalies[0].Detail, tt.wantLost) {
				t.Fatalf("want one lost update of alice saying %q, got:\n%s", tt.wantLost, report.Summary())
			}
			if slices.ContainsFunc(report.Anomalies, func(a Anomaly) bool { return a.Kind != KindLostUpdate }) || report.Rebased != 0 {
				t.Errorf("unexpected report:\n%s", report.Summary())
			}
		})
	}
}
