//go:build arbiter_faults

package app

import (
	"context"
	"os"
	"strconv"
	"syscall"

	"github.com/arbiter-cqrs/arbiter/processor"
	"go.uber.org/zap"
)

// FaultInjection reports whether this binary was built with the
// arbiter_faults build tag: with the fault-injection hooks that the chaos
// runner and the integration tests use, and with the chaos subcommand. A
// release binary has neither.
const FaultInjection = true

// brokerPIDEnv is the environment variable of bench --broker-pid, set by
// the test stack's env file.
const brokerPIDEnv = "ARBITER_TEST_KAFKA_PID"

// testHooks wires the fault-injection hooks that integration tests use, each
// set by an environment variable whose value N picks the N-th batch with new
// outcomes:
//
//	ARBITER_TEST_EXIT_AFTER_REDIS_COMMIT   exit (code 86) after the Redis compare-and-set, before producing
//	ARBITER_TEST_EXIT_BEFORE_END           exit with the batch's records in the open transaction
//	ARBITER_TEST_STOP_BEFORE_REDIS_COMMIT  SIGSTOP itself after deciding, before the compare-and-set
//	ARBITER_TEST_STOP_AFTER_REDIS_COMMIT   SIGSTOP itself after the compare-and-set, before producing
//
// A stopped worker is a zombie: the test wakes it with SIGCONT after the
// group has given its partitions away.
func testHooks(cfg *processor.Config, log *zap.Logger, lookupEnv func(string) (string, bool)) error {
	hooks := []struct {
		variable string
		stop     bool
		hook     *func(context.Context, processor.BatchParams)
	}{
		{"ARBITER_TEST_EXIT_AFTER_REDIS_COMMIT", false, &cfg.Hooks.AfterRedisCommit},
		{"ARBITER_TEST_EXIT_BEFORE_END", false, &cfg.Hooks.BeforeEnd},
		{"ARBITER_TEST_STOP_BEFORE_REDIS_COMMIT", true, &cfg.Hooks.BeforeRedisCommit},
		{"ARBITER_TEST_STOP_AFTER_REDIS_COMMIT", true, &cfg.Hooks.AfterRedisCommit},
	}
	for _, h := range hooks {
		fn, err := faultAfter(h.variable, h.stop, log, lookupEnv)
		if err != nil {
			return err
		}
		if fn != nil {
			*h.hook = fn
		}
	}
	return nil
}

func faultAfter(variable string, stop bool, log *zap.Logger, lookupEnv func(string) (string, bool)) (func(context.Context, processor.BatchParams), error) {
	value, _ := lookupEnv(variable)
	if value == "" {
		return nil, nil
	}
	n, err := strconv.Atoi(value)
	if err != nil || n < 1 {
		return nil, usagef("%s=%q: want a positive batch count", variable, value)
	}
	seen := 0
	return func(_ context.Context, params processor.BatchParams) {
		if params.Applied+params.Conflicts == 0 {
			return
		}
		seen++
		if seen != n {
			return
		}
		log.Warn("test hook fired", zap.String("hook", variable), zap.Int("batch", seen), zap.Int("records", params.Records))
		_ = log.Sync()
		if stop {
			_ = syscall.Kill(os.Getpid(), syscall.SIGSTOP)
			log.Warn("test hook: woke up", zap.String("hook", variable))
			return
		}
		os.Exit(testHookExitCode)
	}, nil
}
