package app

import (
	"context"
	"io"
	"strings"

	"github.com/arbiter-cqrs/arbiter/internal/verify"
	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/spf13/cobra"
)

func (c *cli) verifyCommand() *cobra.Command {
	var f commonFlags
	var crossCheck bool
	var maxAnomalies int
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "check the complete history of the topics (and Redis, with --redis): one outcome per command, contiguous versions, no lost update",
		Args:  cobra.NoArgs,
		RunE: c.run(func(ctx context.Context, _ []string) error {
			return runVerify(ctx, c.registry, f, crossCheck, maxAnomalies, c.stdout)
		}),
	}
	fs := cmd.Flags()
	f.register(fs)
	fs.BoolVar(&crossCheck, "cross-check", true, "read the output topics a second time with kcat and compare")
	fs.IntVar(&maxAnomalies, "max-anomalies", 50, "anomalies printed one per line (all are counted)")
	return cmd
}

// runVerify checks the complete history of the topics (see internal/verify).
func runVerify(ctx context.Context, registry *processor.Registry, f commonFlags, crossCheck bool, maxAnomalies int, stdout io.Writer) error {
	if f.redisURL != "" {
		if err := f.checkRedisConfig(); err != nil {
			return err
		}
	}
	if err := f.checkTopics(ctx, f.commandsTopic, f.eventsTopic, f.conflictsTopic); err != nil {
		return err
	}
	kafkaOptions, err := f.securityOpts()
	if err != nil {
		return err
	}
	verifyConfig := verify.Config{Brokers: f.brokerList(), CommandsTopic: f.commandsTopic, EventsTopic: f.eventsTopic, ConflictsTopic: f.conflictsTopic, KafkaOptions: kafkaOptions}
	history, err := verify.Read(ctx, verifyConfig)
	if err != nil {
		return err
	}
	// The rebases the handlers allow are not lost updates.
	opts := verify.CheckOptions{RebasePolicies: registry.RebasePolicies()}
	if f.redisURL != "" {
		store, closeStore, err := f.redisStore(ctx, versionstore.Options{})
		if err != nil {
			return err
		}
		defer closeStore()
		if opts.RedisVersions, err = store.Versions(ctx); err != nil {
			return err
		}
	}
	report := verify.Check(history, opts)
	if crossCheck {
		if verifyConfig.KcatProperties, err = f.kafka.LibrdkafkaProperties(); err != nil {
			return usagef("the cross-check reads with kcat, which cannot use these Kafka settings: %v; run with --cross-check=false", err)
		}
		disagreements, err := verify.CrossCheck(ctx, verifyConfig, history)
		if err != nil {
			return err
		}
		report.Anomalies = append(report.Anomalies, disagreements...)
		printf(stdout, "cross-checked the output topics with kcat: %d disagreements\n", len(disagreements))
	}
	for i, a := range report.Anomalies {
		if i == maxAnomalies {
			printf(stdout, "… %d more anomalies\n", len(report.Anomalies)-i)
			break
		}
		printf(stdout, "%s\n", a)
	}
	printf(stdout, "%s\n", strings.TrimRight(report.Summary(), "\n"))
	if !report.OK() {
		return &foundError{msg: "the history has anomalies (listed above)"}
	}
	return nil
}
