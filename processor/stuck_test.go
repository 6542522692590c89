package processor

import (
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestAbortReporterOncePerInterval: a batch failing the same way on every
// retry is reported once, then once per interval with the retries counted,
// not once per retry.
func TestAbortReporterOncePerInterval(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(core)
	var r abortReporter
	records := []*kgo.Record{{Partition: 3}, {Partition: 1}, {Partition: 3}}
	stuck := errors.New("produce outcome record: MESSAGE_TOO_LARGE")
	for range 50 {
		r.aborted(log, zapcore.WarnLevel, records, stuck)
	}
	if logs.Len() != 1 {
		t.Fatalf("50 retries failing the same way logged %d lines, want 1", logs.Len())
	}
	first := logs.All()[0].ContextMap()
	if got := first["partitions"]; len(got.([]any)) != 2 {
		t.Errorf("the report must name partitions 1 and 3, got %v", got)
	}
	r.lastLogged = time.Now().Add(-abortReportInterval)
	r.aborted(log, zapcore.WarnLevel, records, stuck)
	if logs.Len() != 2 || logs.All()[1].ContextMap()["failed_retries_since_last_report"] != int64(49) {
		t.Fatalf("after the interval, want one line counting 49 retries, got %v", logs.All())
	}
	r.aborted(log, zapcore.WarnLevel, records, errors.New("another failure"))
	if logs.Len() != 3 {
		t.Fatalf("a new error must be reported at once; %d lines", logs.Len())
	}
	r.aborted(log, zapcore.WarnLevel, records, errors.New("another failure"))
	r.committed(log)
	if logs.Len() != 4 || logs.All()[3].Message != "batch committed after failed retries" {
		t.Fatalf("the commit that ends the failures must be reported, got %v", logs.All())
	}
}
