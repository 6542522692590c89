//go:build !arbiter_faults

package app

import (
	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
)

// FaultInjection reports whether this binary was built with the
// arbiter_faults build tag: with the fault-injection hooks that the chaos
// runner and the integration tests use, and with the chaos subcommand. A
// release binary has neither.
const FaultInjection = false

// brokerPIDEnv is empty in a release binary: bench --broker-pid has no
// environment variable there (the test stack's is a test variable).
const brokerPIDEnv = ""

// testHooks does nothing in a release binary: the fault-injection hooks
// exist only under the arbiter_faults build tag.
func testHooks(*processor.Config, *zap.Logger, func(string) (string, bool)) error { return nil }

// chaosCommand is a stub in a release binary: the chaos runner needs workers
// with the fault-injection hooks.
func (c *cli) chaosCommand() *cobra.Command {
	return &cobra.Command{
		Use:                "chaos",
		Short:              "run workers and producers under injected faults, then verify (a binary built with -tags arbiter_faults)",
		DisableFlagParsing: true,
		RunE: func(*cobra.Command, []string) error {
			return usagef("this binary was built without the fault-injection hooks that chaos injects: build it with 'go build -tags arbiter_faults'")
		},
	}
}
