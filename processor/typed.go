package processor

import (
	"fmt"

	"github.com/arbiter-cqrs/arbiter/commands"
)

// codecFor returns the aggregate type a command is decided with (nil for an
// untyped aggregate), or why the command is refused: an aggregate's type is
// fixed by its first event, so a command whose handler belongs to another
// type is refused, and AppendEvents may not write into an aggregate whose
// type has Go handlers unless the type allows it. The rule reads only the
// aggregate's type and version, which Redis holds with every snapshot, so the
// outcome does not depend on where batch boundaries fall.
func (d *decider) codecFor(h *handler, cmd commands.Command, run *aggregateRun) (aggregateCodec, string) {
	if h.aggregate == nil {
		codec, typed := d.registry.aggregates[run.typeName]
		if typed && !codec.allowsAppendEvents() {
			return nil, fmt.Sprintf("aggregate %s is a %s, whose commands have Go handlers: %s may not append events to it, which would bypass the handlers' rules; send one of its command types (or register %s with AllowAppendEvents)",
				cmd.AggregateID, run.typeName, cmd.Type, run.typeName)
		}
		return codec, ""
	}
	switch want := h.aggregate.name(); {
	case run.typeName == want:
	case run.typeName != "":
		return nil, fmt.Sprintf("aggregate %s is a %s; command type %s is for %s aggregates", cmd.AggregateID, run.typeName, cmd.Type, want)
	case run.version > 0:
		return nil, fmt.Sprintf("aggregate %s was created without a type (by %s) and is at version %d; command type %s is for %s aggregates",
			cmd.AggregateID, AppendEventsType, run.version, cmd.Type, want)
	}
	return h.aggregate, ""
}
