// Package app is the arbiter command line as a library: Main runs every
// subcommand of the arbiter binary (worker, send, tail, get, topics,
// rebuild-versions, verify, bench, chaos, version, completion) with the
// caller's handler registry, so a binary of one's own aggregates is a few
// lines:
//
//	func main() {
//		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
//		registry := processor.NewRegistry()
//		bank.Register(registry)
//		code := app.Main(ctx, registry, os.Args[1:])
//		stop()
//		os.Exit(code)
//	}
//
// Exit codes (the constants Exit…): 0 success; 1 a failure while running
// (for send: a line that was not sent, or a command without an outcome within
// --wait-timeout); 2 a usage or configuration error, a malformed ARBITER_*
// environment variable included; 3 Kafka or Redis could not be reached; 4 a
// check found problems (rebuild-versions --dry-run found mismatches, verify
// or chaos found anomalies); 5 send --wait: every command was sent and
// answered, but some were not applied (a conflict: version_conflict,
// rejected, invalid, unknown_type).
package app

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"
)

// Exit codes of Main.
const (
	ExitOK          = 0
	ExitFailure     = 1
	ExitUsage       = 2
	ExitUnreachable = 3
	ExitFound       = 4
	ExitNotApplied  = 5
)

// The package's own short names for the exit codes.
const (
	exitOK          = ExitOK
	exitFailure     = ExitFailure
	exitUsage       = ExitUsage
	exitUnreachable = ExitUnreachable
	exitFound       = ExitFound
	exitNotApplied  = ExitNotApplied
)

// usageError marks a usage or configuration problem (exit code 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{msg: fmt.Sprintf(format, args...)} }

// unreachableError marks a server that could not be reached (exit code 3).
type unreachableError struct{ err error }

func (e *unreachableError) Error() string { return e.err.Error() }
func (e *unreachableError) Unwrap() error { return e.err }

// foundError marks a check that found problems (exit code 4).
type foundError struct{ msg string }

func (e *foundError) Error() string { return e.msg }

// Option changes how Main runs; the defaults suit a binary's main.
type Option func(*cli)

// Stdout sets where results go. default: os.Stdout
func Stdout(w io.Writer) Option { return func(c *cli) { c.stdout = w } }

// Stderr sets where logs, progress and errors go. default: os.Stderr
func Stderr(w io.Writer) Option { return func(c *cli) { c.stderr = w } }

// LookupEnv sets how ARBITER_* environment variables are read, for tests.
// default: os.LookupEnv
func LookupEnv(lookup func(name string) (string, bool)) Option {
	return func(c *cli) { c.lookupEnv = lookup }
}

// Name sets the binary's name in help and messages. default: "arbiter"
func Name(name string) Option { return func(c *cli) { c.name = name } }

// cli is one run of Main: its registry, output and environment.
type cli struct {
	registry  *processor.Registry
	stdout    io.Writer
	stderr    io.Writer
	lookupEnv func(string) (string, bool)
	name      string
	// ran is set once a subcommand's own code starts: an error before
	// that came from parsing the command line, a usage error.
	ran bool
}

// Main runs the arbiter command line given by args (without the program
// name) with registry's handlers, and returns the process's exit code. ctx
// ends a running worker gracefully; a binary's main cancels it on SIGINT and
// SIGTERM (signal.NotifyContext).
func Main(ctx context.Context, registry *processor.Registry, args []string, opts ...Option) int {
	c := &cli{registry: registry, stdout: os.Stdout, stderr: os.Stderr, lookupEnv: os.LookupEnv, name: "arbiter"}
	for _, opt := range opts {
		opt(c)
	}
	if c.registry == nil {
		c.registry = processor.NewRegistry()
	}
	root := c.rootCommand()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err != nil && !c.ran {
		var usageErr *usageError
		if !errors.As(err, &usageErr) {
			err = usagef("%v; run '%s --help' for the commands and flags", err, c.name)
		}
	}
	return report(c.name, err, c.stderr)
}

func (c *cli) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   c.name,
		Short: "a Kafka-backed command processor with optimistic concurrency control",
		Long: c.name + ": a Kafka-backed command processor with optimistic concurrency control.\n\n" +
			"Every flag has an ARBITER_* environment variable (named in its help); a malformed one is a usage error.\n" +
			"Exit codes: 0 ok, 1 failure, 2 usage or configuration error, 3 Kafka or Redis unreachable,\n" +
			"4 a check found problems, 5 send --wait: some commands were not applied.",
		SilenceUsage:  true,
		SilenceErrors: true,
		// A bare 'arbiter' is a usage error, as before; 'arbiter --help' is not.
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SetOut(c.stderr)
			_ = cmd.Usage()
			return usagef("no command given")
		},
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return c.applyEnv(cmd)
		},
	}
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usagef("%v; run '%s --help' for the flags", err, cmd.CommandPath())
	})
	root.AddCommand(
		c.workerCommand(),
		c.topicsCommand(),
		c.getCommand(),
		c.rebuildCommand(),
		c.benchCommand(),
		c.sendCommand(),
		c.tailCommand(),
		c.verifyCommand(),
		c.chaosCommand(),
		c.versionCommand(),
	)
	return root
}

// run adapts a subcommand's body to cobra, marking that parsing is over.
func (c *cli) run(body func(ctx context.Context, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c.ran = true
		return body(cmd.Context(), args)
	}
}

func report(name string, err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	var usageErr *usageError
	var unreachable *unreachableError
	var found *foundError
	var notApplied *notAppliedError
	switch {
	case errors.As(err, &usageErr):
		fmt.Fprintf(stderr, "%s: %s\n", name, usageErr.msg)
		return exitUsage
	case errors.As(err, &unreachable):
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return exitUnreachable
	case errors.As(err, &found):
		fmt.Fprintf(stderr, "%s: %s\n", name, found.msg)
		return exitFound
	case errors.As(err, &notApplied):
		fmt.Fprintf(stderr, "%s: %s\n", name, notApplied.msg)
		return exitNotApplied
	default:
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return exitFailure
	}
}
