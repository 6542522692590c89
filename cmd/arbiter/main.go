// Command arbiter runs Arbiter workers and the tools around them.
//
// Usage:
//
//	arbiter worker [flags]            run a worker (embedded Kafka and Redis when neither is given)
//	arbiter topics create [flags]     create the commands, events and conflicts topics
//	arbiter get [flags] <aggregate>   print an aggregate's version and state as Redis holds them
//	arbiter rebuild-versions [flags]  recompute versions and snapshots in Redis from the events topic
//	arbiter bench [flags]             measure workers: throughput, latency, round trips, CPU, Redis memory
//	arbiter send [flags]              send one command from flags, or many from -f file.jsonl or stdin
//	arbiter verify [flags]            check the complete history of the topics (and Redis)
//	arbiter chaos [flags]             run workers and producers under injected faults, then verify
//	arbiter tail events|conflicts     print the events or conflict records as they come
//
// Exit codes: 0 success; 1 a failure while running (for send: a line that was
// not sent, or a command without an outcome within --wait-timeout); 2 a usage
// or configuration error; 3 Kafka or Redis could not be reached; 4 a check
// found problems (rebuild-versions --dry-run found mismatches); 5 send --wait:
// every command was sent and answered, but some were not applied (a
// conflict: version_conflict, rejected, invalid, unknown_type).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/cockroachdb/errors"
)

// Exit codes.
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitUnreachable = 3
	exitFound       = 4
	exitNotApplied  = 5
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

const usage = `arbiter: a Kafka-backed command processor with optimistic concurrency control

Usage:
  arbiter worker [flags]             run a worker; with neither --brokers nor --redis it starts
                                     an embedded Kafka and Redis for development
  arbiter topics create [flags]      create the commands, events and conflicts topics
  arbiter get [flags] <aggregate-id> print an aggregate's version and state as Redis holds them
  arbiter rebuild-versions [flags]   recompute versions and snapshots in Redis from the events topic
  arbiter bench [flags]              measure workers against Kafka and Redis (embedded when neither
                                     is given); --baseline adds the per-command design beside it
  arbiter send [flags]               send one command (--aggregate, --type, --expected-version,
                                     --payload) or many (-f file.jsonl, or stdin); --wait prints outcomes
  arbiter tail events|conflicts      print events or conflict records (--json, --aggregate,
                                     --from-start, --limit N, --exit-at-end)
  arbiter verify [flags]             check the complete history of the topics (and Redis, with --redis):
                                     one outcome per command, contiguous versions, no lost update
  arbiter chaos [flags]              run workers and producers under injected faults, then verify

Run 'arbiter <command> -h' for a command's flags. Every flag has an ARBITER_* environment variable.
Exit codes: 0 ok, 1 failure, 2 usage or configuration error, 3 Kafka or Redis unreachable,
4 a check found problems, 5 send --wait: some commands were not applied.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	var err error
	switch args[0] {
	case "worker":
		err = runWorker(ctx, args[1:], stdout, stderr)
	case "topics":
		err = runTopics(ctx, args[1:], stdout, stderr)
	case "get":
		err = runGet(ctx, args[1:], stdout, stderr)
	case "rebuild-versions":
		err = runRebuild(ctx, args[1:], stdout, stderr)
	case "bench":
		err = runBench(ctx, args[1:], stdout, stderr)
	case "send":
		err = runSend(ctx, args[1:], stdout, stderr)
	case "tail":
		err = runTail(ctx, args[1:], stdout, stderr)
	case "verify":
		err = runVerify(ctx, args[1:], stdout, stderr)
	case "chaos":
		err = runChaos(ctx, args[1:], stdout, stderr)
	default:
		err = usagef("unknown command %q; run 'arbiter help' for the list", args[0])
	}
	return report(err, stderr)
}

func report(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	var usageErr *usageError
	var unreachable *unreachableError
	var found *foundError
	var notApplied *notAppliedError
	switch {
	case errors.Is(err, errHelp):
		return exitOK
	case errors.As(err, &usageErr):
		fmt.Fprintf(stderr, "arbiter: %s\n", usageErr.msg)
		return exitUsage
	case errors.As(err, &unreachable):
		fmt.Fprintf(stderr, "arbiter: %v\n", err)
		return exitUnreachable
	case errors.As(err, &found):
		fmt.Fprintf(stderr, "arbiter: %s\n", found.msg)
		return exitFound
	case errors.As(err, &notApplied):
		fmt.Fprintf(stderr, "arbiter: %s\n", notApplied.msg)
		return exitNotApplied
	default:
		fmt.Fprintf(stderr, "arbiter: %v\n", err)
		return exitFailure
	}
}
