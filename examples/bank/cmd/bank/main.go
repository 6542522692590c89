// Command bank is an Arbiter worker and toolbox for the bank example's
// accounts: every subcommand of arbiter (worker, send, tail, get,
// rebuild-versions, ...), with the Account handlers registered.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/arbiter-cqrs/arbiter/app"
	"github.com/arbiter-cqrs/arbiter/examples/bank"
	"github.com/arbiter-cqrs/arbiter/processor"
)

func main() {
	registry := processor.NewRegistry()
	if err := bank.Register(registry); err != nil {
		fmt.Fprintln(os.Stderr, "bank:", err)
		os.Exit(app.ExitFailure)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := app.Main(ctx, registry, os.Args[1:], app.Name("bank"))
	stop()
	os.Exit(code)
}
