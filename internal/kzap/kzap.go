// Package kzap adapts a zap logger to franz-go's kgo.Logger: the one adapter
// of the worker, the producer and the follower.
package kzap

import (
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// New returns a kgo.Logger that writes to log. Its level is warnings unless
// log has debug enabled: franz-go's info lines (one per transaction) would
// be a log line per batch on the hot path. Keys become zap field names, with
// spaces as underscores.
func New(log *zap.Logger) kgo.Logger { return logger{log: log} }

type logger struct{ log *zap.Logger }

func (l logger) Level() kgo.LogLevel {
	if l.log.Core().Enabled(zap.DebugLevel) {
		return kgo.LogLevelDebug
	}
	return kgo.LogLevelWarn
}

func (l logger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	fields := make([]zap.Field, 0, len(keyvals)/2)
	for i := 0; i+1 < len(keyvals); i += 2 {
		key, _ := keyvals[i].(string)
		fields = append(fields, zap.Any(strings.ReplaceAll(key, " ", "_"), keyvals[i+1]))
	}
	switch level {
	case kgo.LogLevelError:
		l.log.Error(msg, fields...)
	case kgo.LogLevelWarn:
		l.log.Warn(msg, fields...)
	default:
		l.log.Debug(msg, fields...)
	}
}
