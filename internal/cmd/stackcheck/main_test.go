package main

import (
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    config
		wantErr []string // parts of the error; nil for no error
	}{
		{
			name: "readiness of both",
			args: []string{"-brokers", "127.0.0.1:19092, 127.0.0.1:19094", "-redis", "redis://127.0.0.1:16379/0", "-wait", "2m", "-kafka-pid", "42"},
			want: config{
				brokers:    []string{"127.0.0.1:19092", "127.0.0.1:19094"},
				redisURL:   "redis://127.0.0.1:16379/0",
				wait:       2 * time.Minute,
				kafkaPID:   42,
				partitions: 12,
			},
		},
		{
			name: "topics",
			args: []string{"-brokers", "b:1", "-create-topics", "commands,,events", "-partitions", "3"},
			want: config{brokers: []string{"b:1"}, createTopics: []string{"commands", "events"}, partitions: 3},
		},
		{name: "nothing to check", args: nil, wantErr: []string{"give -brokers, -redis or both"}},
		{
			name:    "every problem at once",
			args:    []string{"-redis", "redis://x", "-create-topics", "t", "-partitions", "0", "extra"},
			wantErr: []string{"-create-topics needs -brokers", "-partitions must be positive", `unexpected arguments ["extra"]`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFlags(tt.args, io.Discard)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("parseFlags(%q) = %+v, want an error", tt.args, got)
				}
				for _, part := range tt.wantErr {
					if !strings.Contains(err.Error(), part) {
						t.Errorf("parseFlags(%q) error %q does not say %q", tt.args, err, part)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("parseFlags(%q): %v", tt.args, err)
			}
			if !slices.Equal(got.brokers, tt.want.brokers) || !slices.Equal(got.createTopics, tt.want.createTopics) ||
				got.redisURL != tt.want.redisURL || got.wait != tt.want.wait || got.kafkaPID != tt.want.kafkaPID ||
				got.partitions != tt.want.partitions {
				t.Errorf("parseFlags(%q) = %+v, want %+v", tt.args, got, tt.want)
			}
		})
	}
}

func TestProcessAlive(t *testing.T) {
	tests := []struct {
		name string
		pid  int
		want bool
	}{
		{name: "this process", pid: os.Getpid(), want: true},
		{name: "no such process", pid: 1 << 30, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := processAlive(tt.pid); got != tt.want {
				t.Errorf("processAlive(%d) = %v, want %v", tt.pid, got, tt.want)
			}
		})
	}
}

func TestRunExitCodes(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want int
	}{
		{name: "bad flags", args: []string{"-no-such-flag"}, want: exitUsage},
		{name: "unreachable Redis", args: []string{"-redis", "redis://127.0.0.1:1/0"}, want: exitNotReady},
		{name: "dead Kafka pid stops the wait", args: []string{"-brokers", "127.0.0.1:1", "-wait", "1m", "-kafka-pid", "1073741824"}, want: exitNotReady},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			if got := run(tt.args, io.Discard, io.Discard); got != tt.want {
				t.Errorf("run(%q) = %d, want %d", tt.args, got, tt.want)
			}
			if elapsed := time.Since(start); elapsed > 30*time.Second {
				t.Errorf("run(%q) took %s: it waited although it could not succeed", tt.args, elapsed)
			}
		})
	}
}
