package stackprobe

import (
	"context"
	"maps"
	"testing"

	"github.com/cockroachdb/errors"
)

func TestParseRedisInfo(t *testing.T) {
	tests := []struct {
		name string
		text string
		want map[string]string
	}{
		{
			name: "server section",
			text: "# Server\r\nredis_version:7.0.15\r\nprocess_id:4242\r\nexecutable:/usr/bin/redis-server\r\n",
			want: map[string]string{"redis_version": "7.0.15", "process_id": "4242", "executable": "/usr/bin/redis-server"},
		},
		{
			name: "value with colons",
			text: "config_file:\r\nrun_id:abc\r\nlisteners:name=tcp,bind=127.0.0.1,port=6379\r\nexample:a:b\r\n",
			want: map[string]string{"config_file": "", "run_id": "abc", "listeners": "name=tcp,bind=127.0.0.1,port=6379", "example": "a:b"},
		},
		{
			name: "blank lines, headers and junk",
			text: "\r\n# Clients\r\nnot a field\r\nconnected_clients:1\r\n",
			want: map[string]string{"connected_clients": "1"},
		},
		{name: "empty", text: "", want: map[string]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseRedisInfo(tt.text); !maps.Equal(got, tt.want) {
				t.Errorf("ParseRedisInfo(%q) = %v, want %v", tt.text, got, tt.want)
			}
		})
	}
}

func TestProbesWithoutBrokers(t *testing.T) {
	probes := []struct {
		name  string
		probe func() error
	}{
		{name: "KafkaFeatures", probe: func() error { _, err := KafkaFeatures(context.Background(), nil); return err }},
		{name: "KafkaBrokerCount", probe: func() error { _, err := KafkaBrokerCount(context.Background(), nil); return err }},
		{name: "KafkaReady", probe: func() error { _, err := KafkaReady(context.Background(), nil); return err }},
	}
	for _, tt := range probes {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.probe(); !errors.Is(err, ErrNoBrokers) {
				t.Errorf("%s with no brokers returned %v, want ErrNoBrokers", tt.name, err)
			}
		})
	}
}
