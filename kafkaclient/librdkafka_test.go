package kafkaclient

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLibrdkafkaProperties(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	ca, cert, key := file("ca.pem", "ca"), file("cert.pem", "cert"), file("key.pem", "key")
	passwordFile, tokenFile := file("password", "from-file\n"), file("token", "token")
	tests := []struct {
		name    string
		cfg     Config
		want    map[string]string
		wantErr string
	}{
		{name: "plaintext", cfg: Config{}, want: map[string]string{}},
		{name: "TLS", cfg: Config{TLSCAFile: ca}, want: map[string]string{"security.protocol": "SSL", "ssl.ca.location": ca}},
		{name: "mTLS", cfg: Config{TLS: true, TLSCertFile: cert, TLSKeyFile: key},
			want: map[string]string{"security.protocol": "SSL", "ssl.certificate.location": cert, "ssl.key.location": key}},
		{name: "SASL_SSL SCRAM with a password file", cfg: Config{TLSCAFile: ca, SASLMechanism: "scram-sha-512", SASLUsername: "arbiter", SASLPasswordFile: passwordFile},
			want: map[string]string{"security.protocol": "SASL_SSL", "ssl.ca.location": ca, "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": "arbiter", "sasl.password": "from-file"}},
		{name: "SASL_PLAINTEXT PLAIN", cfg: Config{SASLMechanism: "PLAIN", SASLUsername: "u", SASLPassword: "p"},
			want: map[string]string{"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "PLAIN", "sasl.username": "u", "sasl.password": "p"}},
		{name: "OAUTHBEARER refused", cfg: Config{TLS: true, SASLMechanism: "OAUTHBEARER", SASLOAuthTokenFile: tokenFile}, wantErr: "OAUTHBEARER"},
		{name: "server name refused", cfg: Config{TLS: true, TLSServerName: "kafka.internal"}, wantErr: "kafka.internal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.cfg.LibrdkafkaProperties()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one naming %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, tt.want) {
				t.Errorf("properties\n%v\nwant\n%v", got, tt.want)
			}
		})
	}
}
