package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/examples/product"
	"github.com/arbiter-cqrs/arbiter/redisclient"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"go.uber.org/zap"
)

// ContentionConfig configures the contention scenario: a few hot Product
// aggregates, many clients each running read → decide → SendAndWait in a
// loop, half of them changing the price and half raising the stock — the
// seed's Alice and Bob, many times over. It runs twice on fresh topics, once
// with strict commands and once with onConflict "rebase", and reports for
// each the share of commands applied and the commands per second. A client
// does not retry: a conflict counts as a command not applied, and the
// client reads again. Zero fields take the defaults noted.
type ContentionConfig struct {
	// Brokers are the Kafka seed brokers. Required.
	Brokers []string
	// RedisURL is the redis:// URL of the Redis server. Required.
	RedisURL string
	// RedisMode is how RedisURL is read. default: standalone
	RedisMode redisclient.Mode
	// Aggregates is the number of hot aggregates. default: 4
	Aggregates int
	// Clients is the number of concurrent clients, spread evenly over the
	// aggregates in pairs: of each pair, one changes the price and one
	// raises the stock. default: 16
	Clients int
	// Duration is how long each mode sends. default: 10s
	Duration time.Duration
	// Partitions of the run's topics. default: 4
	Partitions int
	// Seed seeds the clients' choices. default: 1
	Seed uint64
	// Progress receives a line per mode. default: none
	Progress io.Writer
	// Logger receives the in-process worker's logs. default: zap.NewNop()
	Logger *zap.Logger
	// Security are the TLS, SASL and ACL settings of a secured Kafka and
	// Redis.
	Security Security
}

func (c *ContentionConfig) setDefaults() {
	if c.Aggregates <= 0 {
		c.Aggregates = 4
	}
	if c.Clients <= 0 {
		c.Clients = 16
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Partitions <= 0 {
		c.Partitions = 4
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
}

// ContentionReport is the result of the contention scenario.
type ContentionReport struct {
	Aggregates int              `json:"aggregates"`
	Clients    int              `json:"clients"`
	Duration   float64          `json:"durationSecs"`
	Modes      []ContentionMode `json:"modes"`
}

// ContentionMode is one mode's figures.
type ContentionMode struct {
	// OnConflict is "strict" or "rebase".
	OnConflict string `json:"onConflict"`
	// Sent counts the commands sent and answered; Applied those applied
	// (Rebased of them decided again past others' events), Conflicts the
	// version conflicts, Rejected the rest.
	Sent      int `json:"sent"`
	Applied   int `json:"applied"`
	Rebased   int `json:"rebased"`
	Conflicts int `json:"conflicts"`
	Rejected  int `json:"rejected"`
	// AppliedShare is Applied / Sent.
	AppliedShare float64 `json:"appliedShare"`
	// CommandsPerSec and AppliedPerSec are per second of sending.
	CommandsPerSec float64 `json:"commandsPerSec"`
	AppliedPerSec  float64 `json:"appliedPerSec"`
	// RecentListBytes is the largest MEMORY USAGE of a hot aggregate's
	// recent-events list at the end.
	RecentListBytes int64 `json:"recentListBytes"`
}

// RunContention runs the contention scenario, strict then rebase.
func RunContention(ctx context.Context, cfg ContentionConfig) (*ContentionReport, error) {
	cfg.setDefaults()
	if len(cfg.Brokers) == 0 || cfg.RedisURL == "" {
		return nil, &ConfigError{Err: errors.New("the contention scenario needs Kafka brokers and a Redis URL")}
	}
	kafka, rdb, err := connect(ctx, cfg.Brokers, cfg.Security, cfg.RedisURL, cfg.RedisMode)
	if err != nil {
		return nil, err
	}
	defer kafka.Close()
	defer rdb.Close()
	report := &ContentionReport{Aggregates: cfg.Aggregates, Clients: cfg.Clients, Duration: cfg.Duration.Seconds()}
	for _, onConflict := range []string{commands.OnConflictStrict, commands.OnConflictRebase} {
		mode, err := runContentionMode(ctx, cfg, kadm.NewClient(kafka), rdb, onConflict)
		if err != nil {
			return nil, errors.Wrapf(err, "contention scenario, %s", onConflict)
		}
		fmt.Fprintf(cfg.Progress, "bench contention %s: %d sent, %.1f%% applied, %.0f commands/s\n", onConflict, mode.Sent, 100*mode.AppliedShare, mode.CommandsPerSec)
		report.Modes = append(report.Modes, mode)
	}
	return report, nil
}

func runContentionMode(ctx context.Context, cfg ContentionConfig, admin *kadm.Client, rdb redis.UniversalClient, onConflict string) (ContentionMode, error) {
	mode := ContentionMode{OnConflict: onConflict}
	tag := randomTag()
	name := "bench-contention-" + tag
	spec := runSpec{
		brokers:        cfg.Brokers,
		redisURL:       cfg.RedisURL,
		redisMode:      cfg.RedisMode,
		commandsTopic:  name + "-commands",
		eventsTopic:    name + "-events",
		conflictsTopic: name + "-conflicts",
		group:          name,
		keyPrefix:      "b" + tag,
		maxBatch:       2000,
		security:       cfg.Security,
		log:            cfg.Logger,
	}
	if err := createTopics(ctx, admin, int32(cfg.Partitions), spec.commandsTopic, spec.eventsTopic, spec.conflictsTopic); err != nil {
		return mode, err
	}
	defer func() {
		cleanupCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
		defer cancel()
		_, _ = admin.DeleteTopics(cleanupCtx, spec.commandsTopic, spec.eventsTopic, spec.conflictsTopic)
		_, _ = admin.DeleteGroups(cleanupCtx, spec.group)
		_ = deleteKeys(cleanupCtx, rdb, spec.keyPrefix)
	}()
	workers, err := startInProcess(ctx, spec, 1, tag)
	if err != nil {
		return mode, err
	}
	defer func() { _, _ = workers.stop() }()
	if err := waitForGroup(ctx, admin, spec.group, spec.commandsTopic, 1, int32(cfg.Partitions)); err != nil {
		return mode, err
	}
	kafkaSecurity, err := cfg.Security.kafkaOpts()
	if err != nil {
		return mode, err
	}
	producer, err := commands.NewProducer(ctx, commands.ProducerConfig{
		Brokers: cfg.Brokers, CommandsTopic: spec.commandsTopic, EventsTopic: spec.eventsTopic, ConflictsTopic: spec.conflictsTopic,
		Linger: time.Millisecond, FollowFromStart: true, OnConflict: onConflict, Logger: cfg.Logger,
		KafkaOptions: kafkaSecurity,
	})
	if err != nil {
		return mode, err
	}
	defer producer.Close()
	store := versionstore.New(rdb, versionstore.Options{KeyPrefix: spec.keyPrefix})

	ids := make([]string, cfg.Aggregates)
	for a := range ids {
		ids[a] = fmt.Sprintf("hot-%d", a)
		create, err := product.Command(commands.NewID(), ids[a], product.CreateProductType, 0, product.CreateProduct{Name: ids[a], Price: 100, Stock: 100})
		if err != nil {
			return mode, err
		}
		if _, err := producer.SendAndWait(ctx, create); err != nil {
			return mode, errors.Wrapf(err, "create aggregate %s", ids[a])
		}
	}

	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	sendCtx, stop := context.WithTimeout(ctx, cfg.Duration)
	defer stop()
	start := time.Now()
	for client := range cfg.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(cfg.Seed, uint64(client)))
			var local ContentionMode
			err := contentionClient(sendCtx, producer, store, ids[(client/2)%len(ids)], client%2 == 0, rng, &local)
			mu.Lock()
			defer mu.Unlock()
			mode.Sent += local.Sent
			mode.Applied += local.Applied
			mode.Rebased += local.Rebased
			mode.Conflicts += local.Conflicts
			mode.Rejected += local.Rejected
			if err != nil && firstErr == nil {
				firstErr = err
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	if firstErr != nil {
		return mode, firstErr
	}
	if mode.Sent > 0 {
		mode.AppliedShare = float64(mode.Applied) / float64(mode.Sent)
	}
	mode.CommandsPerSec = float64(mode.Sent) / elapsed
	mode.AppliedPerSec = float64(mode.Applied) / elapsed
	for _, id := range ids {
		used, err := store.RecentMemory(ctx, id)
		if err != nil {
			return mode, err
		}
		mode.RecentListBytes = max(mode.RecentListBytes, used)
	}
	return mode, nil
}

// contentionClient reads, decides and sends until ctx ends: a new price
// (changePrice) or one more unit of stock, decided on the state it read.
func contentionClient(ctx context.Context, producer *commands.Producer, store *versionstore.Store, aggregateID string, changePrice bool, rng *rand.Rand, m *ContentionMode) error {
	for ctx.Err() == nil {
		version, state, err := versionstore.GetState[product.State](ctx, store, aggregateID)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		commandType, payload := product.IncreaseStockType, any(product.IncreaseStock{NewStock: state.Stock + 1})
		if changePrice {
			commandType, payload = product.ChangePriceType, product.ChangePrice{NewPrice: float64(1 + rng.IntN(100_000))}
		}
		raw, err := json.Marshal(payload)
		if err != nil {
			return errors.Wrap(err, "encode a payload")
		}
		cmd := commands.Command{ID: commands.NewID(), AggregateID: aggregateID, Type: commandType, ExpectedVersion: version, Payload: raw}
		// The last command is awaited past the end of the sending time, so
		// that every command sent is counted with its outcome.
		waitCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		applied, err := producer.SendAndWait(waitCtx, cmd)
		cancel()
		m.Sent++
		switch {
		case err == nil:
			m.Applied++
			if len(applied.Events) > 0 && applied.Events[0].RebasedFrom != nil {
				m.Rebased++
			}
		case errors.Is(err, commands.ErrVersionConflict):
			m.Conflicts++
		case errors.Is(err, commands.ErrRejected):
			m.Rejected++
		default:
			return errors.Wrapf(err, "send %s to %s", commandType, aggregateID)
		}
	}
	return nil
}

// WriteTable prints the scenario's figures for people.
func (r *ContentionReport) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "contention: %d hot aggregates, %d clients (half ChangePrice, half IncreaseStock), read → decide → send, no retries, %.0fs per mode\n",
		r.Aggregates, r.Clients, r.Duration)
	fmt.Fprintf(w, "%-8s %8s %8s %8s %9s %8s %9s %11s %10s %11s\n", "mode", "sent", "applied", "rebased", "conflicts", "rejected", "applied%", "commands/s", "applied/s", "list bytes")
	for _, m := range r.Modes {
		fmt.Fprintf(w, "%-8s %8d %8d %8d %9d %8d %8.1f%% %11.0f %10.0f %11d\n",
			m.OnConflict, m.Sent, m.Applied, m.Rebased, m.Conflicts, m.Rejected, 100*m.AppliedShare, m.CommandsPerSec, m.AppliedPerSec, m.RecentListBytes)
	}
}
