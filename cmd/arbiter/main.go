// Command arbiter runs Arbiter workers, with the Product example's handlers
// registered, and the tools around them; 'arbiter --help' lists the
// subcommands. Everything but the registration is package app: a binary of
// one's own aggregates is this file with another Register call.
//
// Exit codes: 0 success; 1 a failure while running (for send: a line that was
// not sent, or a command without an outcome within --wait-timeout); 2 a usage
// or configuration error (a malformed ARBITER_* environment variable
// included); 3 Kafka or Redis could not be reached; 4 a check found problems
// (rebuild-versions --dry-run found mismatches, verify or chaos found
// anomalies); 5 send --wait: every command was sent and answered, but some
// were not applied (a conflict: version_conflict, rejected, invalid,
// unknown_type).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/arbiter-cqrs/arbiter/app"
	"github.com/arbiter-cqrs/arbiter/examples/product"
	"github.com/arbiter-cqrs/arbiter/processor"
)

func main() {
	registry := processor.NewRegistry()
	if err := product.Register(registry); err != nil {
		fmt.Fprintf(os.Stderr, "arbiter: register the Product handlers: %v\n", err)
		os.Exit(app.ExitFailure)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := app.Main(ctx, registry, os.Args[1:])
	stop()
	os.Exit(code)
}
