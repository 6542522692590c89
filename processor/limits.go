package processor

import (
	"fmt"
	"strconv"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/versionstore"
)

// Default per-command limits on what one command may make a worker publish.
const (
	// DefaultMaxCommandEvents is the default of Config.MaxCommandEvents.
	DefaultMaxCommandEvents = 1000
	// DefaultMaxCommandOutcomeBytes is the default of
	// Config.MaxCommandOutcomeBytes.
	DefaultMaxCommandOutcomeBytes = 4 << 20
)

// boundConflict cuts the fields of a conflict record that echo the command
// record (aggregate ID, command ID, message) to their limits, and lists what
// was cut. A conflict must be small whatever the input: one that cannot be
// produced would hold its whole batch, and every partition in it, hostage.
func boundConflict(conflict *events.Conflict) {
	var cut *events.Cut
	if conflict.AggregateID, cut = events.CutString("aggregateId", conflict.AggregateID, events.MaxEchoedIDBytes); cut != nil {
		conflict.Cut = append(conflict.Cut, *cut)
	}
	if conflict.CommandID, cut = events.CutString("commandId", conflict.CommandID, events.MaxEchoedIDBytes); cut != nil {
		conflict.Cut = append(conflict.Cut, *cut)
	}
	setMessage(conflict, conflict.Message)
}

// setMessage sets a conflict's message, cut to events.MaxMessageBytes.
func setMessage(conflict *events.Conflict, message string) {
	for k := range conflict.Cut {
		if conflict.Cut[k].Field == "message" {
			conflict.Cut = append(conflict.Cut[:k], conflict.Cut[k+1:]...)
			break
		}
	}
	var cut *events.Cut
	if conflict.Message, cut = events.CutString("message", message, events.MaxMessageBytes); cut != nil {
		conflict.Cut = append(conflict.Cut, *cut)
	}
}

// outcomeIdentity returns the record key and the arbiter-command-id header
// value of record i's outcome records: the aggregate ID (the record's own key
// when it has none) and the command ID, cut like the conflict's fields so
// that no outcome record carries an unbounded key or header. A record with
// neither gets "<topic>/<partition>/<offset>" of the command record, the same
// on every replay: a compacted conflicts topic refuses records without a
// key, and a refused record would hold its partition.
func (b *batch) outcomeIdentity(i int) (key, commandID []byte) {
	key = b.records[i].Key
	if aggregateID := b.commands[i].AggregateID; aggregateID != "" && aggregateID != string(key) {
		key = []byte(aggregateID)
	}
	if len(key) == 0 {
		rec := b.records[i]
		key = []byte(rec.Topic + "/" + strconv.FormatInt(int64(rec.Partition), 10) + "/" + strconv.FormatInt(rec.Offset, 10))
	}
	if len(key) > events.MaxEchoedIDBytes {
		short, _ := events.CutString("aggregateId", string(key), events.MaxEchoedIDBytes)
		key = []byte(short)
	}
	if id := b.commands[i].ID; id != "" {
		short, _ := events.CutString("commandId", id, events.MaxEchoedIDBytes)
		commandID = []byte(short)
	}
	return key, commandID
}

// recordOverhead is what an outcome record carries beside its value: its key
// and headers.
func recordOverhead(aggregateID, commandID string) int {
	return len(aggregateID) + len(events.HeaderKind) + len(events.KindConflict) + len(events.HeaderCommandID) + len(commandID)
}

// commandBudget counts one command's outcome records against the limits of
// Config.MaxCommandEvents and Config.MaxCommandOutcomeBytes.
type commandBudget struct {
	maxEvents, maxBytes int
	bytes               int
}

// budget returns a fresh count against the decider's per-command limits.
func (d *decider) budget() commandBudget {
	c := commandBudget{maxEvents: d.maxEvents, maxBytes: d.maxBytes}
	if c.maxEvents <= 0 {
		c.maxEvents = DefaultMaxCommandEvents
	}
	if c.maxBytes <= 0 {
		c.maxBytes = DefaultMaxCommandOutcomeBytes
	}
	return c
}

// checkEvents refuses a command deciding more events than allowed, before
// any of them is encoded.
func (c *commandBudget) checkEvents(commandType string, n int) error {
	if n > c.maxEvents {
		return Reject("command type %s decided %d events, over the limit of %d events per command (max-command-events); send fewer events per command",
			commandType, n, c.maxEvents)
	}
	return nil
}

// add counts one encoded outcome record and refuses the command once its
// records pass the byte limit. Metadata copied into every event counts once
// per event.
func (c *commandBudget) add(commandType string, record versionstore.OutcomeRecord, overhead int) error {
	c.bytes += len(record.Value) + overhead
	if c.bytes > c.maxBytes {
		return Reject("the outcome records of command type %s pass %d bytes, over the limit of %d bytes per command (max-command-outcome-bytes; metadata is copied into every event); send fewer or smaller events, or less metadata",
			commandType, c.bytes, c.maxBytes)
	}
	return nil
}

// capField bounds a string taken from a record before it goes into a log
// line.
func capField(value string) string {
	const maxLogField = 256
	if len(value) <= maxLogField {
		return value
	}
	return fmt.Sprintf("%s… (%d bytes)", value[:maxLogField], len(value))
}
