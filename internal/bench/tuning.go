package bench

import (
	"strconv"
	"strings"
	"time"

	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Tuning holds the worker knobs a run can turn beyond the batch size. Zero
// values keep the worker's defaults. docs/tuning.md describes each with its
// measured effect.
type Tuning struct {
	// Concurrency is the worker's Config.Concurrency (`arbiter worker
	// --concurrency`): transactional sessions per worker. 0 keeps 1.
	Concurrency int
	// Compression is the codec of the worker's outcome batches: "" (the
	// franz-go default, snappy), "none", "snappy", "lz4" or "zstd".
	Compression string
	// Linger is the worker producer's linger; 0 keeps the franz-go default
	// (10ms). The worker flushes at the end of every batch, so it only
	// matters while a batch is being produced.
	Linger time.Duration
	// WorkerArgs are extra `arbiter worker` flags given to every worker
	// process as they are (e.g. "--recent-events=-1"), to measure a
	// setting the other knobs do not cover. Worker processes only.
	WorkerArgs []string
}

// Validate reports unknown values.
func (t Tuning) Validate() error {
	switch t.Compression {
	case "", "none", "snappy", "lz4", "zstd":
	default:
		return errors.Newf("compression %q: use none, snappy, lz4 or zstd", t.Compression)
	}
	return nil
}

// String describes the non-default knobs.
func (t Tuning) String() string {
	var parts []string
	if t.Concurrency > 1 {
		parts = append(parts, "concurrency="+strconv.Itoa(t.Concurrency))
	}
	if t.Compression != "" {
		parts = append(parts, "compression="+t.Compression)
	}
	if t.Linger != 0 {
		parts = append(parts, "linger="+t.Linger.String())
	}
	parts = append(parts, t.WorkerArgs...)
	if len(parts) == 0 {
		return "defaults"
	}
	return strings.Join(parts, " ")
}

func (t Tuning) kafkaOptions() []kgo.Opt {
	var opts []kgo.Opt
	switch t.Compression {
	case "none":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.NoCompression()))
	case "snappy":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.SnappyCompression()))
	case "lz4":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.Lz4Compression()))
	case "zstd":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.ZstdCompression()))
	}
	if t.Linger > 0 {
		opts = append(opts, kgo.ProducerLinger(t.Linger))
	}
	return opts
}

// apply sets the knobs that are worker Config fields.
func (t Tuning) apply(cfg *processor.Config) {
	cfg.Concurrency = t.Concurrency
}

// workerFlags are the knobs as `arbiter worker` flags; knobs without a
// flag are refused for worker processes by Config.Validate.
func (t Tuning) workerFlags() []string {
	var flags []string
	if t.Concurrency > 1 {
		flags = append(flags, "--concurrency", strconv.Itoa(t.Concurrency))
	}
	return append(flags, t.WorkerArgs...)
}

// processCapable reports whether every non-default knob has a worker flag.
func (t Tuning) processCapable() bool {
	return t.Compression == "" && t.Linger == 0
}
