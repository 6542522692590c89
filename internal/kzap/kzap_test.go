package kzap

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestLogger(t *testing.T) {
	tests := []struct {
		name      string
		zapLevel  zapcore.Level
		wantLevel kgo.LogLevel
		logAt     kgo.LogLevel
		wantZap   zapcore.Level
	}{
		{"info logger keeps franz-go at warnings", zap.InfoLevel, kgo.LogLevelWarn, kgo.LogLevelWarn, zap.WarnLevel},
		{"errors stay errors", zap.InfoLevel, kgo.LogLevelWarn, kgo.LogLevelError, zap.ErrorLevel},
		{"debug logger gets franz-go's debug lines", zap.DebugLevel, kgo.LogLevelDebug, kgo.LogLevelInfo, zap.DebugLevel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(tt.zapLevel)
			l := New(zap.New(core))
			if got := l.Level(); got != tt.wantLevel {
				t.Fatalf("Level() = %v, want %v", got, tt.wantLevel)
			}
			l.Log(tt.logAt, "msg", "broker id", 1, "dangling")
			entries := logs.All()
			if len(entries) != 1 || entries[0].Level != tt.wantZap {
				t.Fatalf("logged %+v, want one entry at %v", entries, tt.wantZap)
			}
			if fields := entries[0].ContextMap(); len(fields) != 1 || fields["broker_id"] != int64(1) {
				t.Fatalf("fields %v, want broker_id=1 only", fields)
			}
		})
	}
}
