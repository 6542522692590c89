package events

import "github.com/cockroachdb/errors"

// The default topic names of the wire contract.
const (
	DefaultCommandsTopic  = "commands"
	DefaultEventsTopic    = "events"
	DefaultConflictsTopic = "conflicts"
)

// SetDefaultTopics fills each empty topic name with its default; every
// component's configuration names the same three topics.
func SetDefaultTopics(commandsTopic, eventsTopic, conflictsTopic *string) {
	for _, t := range []struct {
		name     *string
		fallback string
	}{{commandsTopic, DefaultCommandsTopic}, {eventsTopic, DefaultEventsTopic}, {conflictsTopic, DefaultConflictsTopic}} {
		if *t.name == "" {
			*t.name = t.fallback
		}
	}
}

// ValidateTopics reports three topic names that are not all different: a
// worker reading its own output, or outcomes mixed into one topic, would
// break the contract.
func ValidateTopics(commandsTopic, eventsTopic, conflictsTopic string) error {
	if commandsTopic == eventsTopic || commandsTopic == conflictsTopic || eventsTopic == conflictsTopic {
		return errors.Newf("the commands, events and conflicts topics must differ, got %q, %q and %q", commandsTopic, eventsTopic, conflictsTopic)
	}
	return nil
}
