package processor

import (
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// abortReportInterval is how often a batch that keeps failing the same way is
// reported again.
const abortReportInterval = time.Minute

// abortReporter reports aborted batches of one session. The first abort with
// a new error is logged at once; while the same error repeats, one line per
// abortReportInterval says how many retries failed since, so that partitions
// that cannot move are reported clearly without a line per retry.
type abortReporter struct {
	lastError  string
	lastLogged time.Time
	repeats    int
}

// aborted reports one aborted batch.
func (r *abortReporter) aborted(log *zap.Logger, level zapcore.Level, records []*kgo.Record, err error) {
	message := errorField(err).String
	now := time.Now()
	if message == r.lastError && now.Sub(r.lastLogged) < abortReportInterval {
		r.repeats++
		return
	}
	msg := "aborting batch; its records will be processed again"
	if message == r.lastError {
		msg = "batch still failing; its partitions do not move until it commits"
	}
	log.Check(level, msg).Write(
		zap.Int("records", len(records)),
		zap.Int32s("partitions", capPartitions(batchPartitions(records))),
		zap.Int("failed_retries_since_last_report", r.repeats),
		zap.String("error", message))
	r.lastError, r.lastLogged, r.repeats = message, now, 0
}

// committed ends a run of failures.
func (r *abortReporter) committed(log *zap.Logger) {
	if r.lastError == "" {
		return
	}
	if r.repeats > 0 {
		log.Info("batch committed after failed retries", zap.Int("failed_retries_since_last_report", r.repeats))
	}
	*r = abortReporter{}
}

// batchPartitions lists the distinct partitions of a batch's records, in
// order.
func batchPartitions(records []*kgo.Record) []int32 {
	var partitions []int32
	for _, rec := range records {
		if !slices.Contains(partitions, rec.Partition) {
			partitions = append(partitions, rec.Partition)
		}
	}
	slices.Sort(partitions)
	return partitions
}

// capPartitions keeps a log line short: at most 64 partitions.
func capPartitions(partitions []int32) []int32 { return partitions[:min(len(partitions), 64)] }
