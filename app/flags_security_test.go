package app

import (
	"testing"

	"github.com/spf13/cobra"

	"github.com/arbiter-cqrs/arbiter/kafkaclient"
	"github.com/arbiter-cqrs/arbiter/redisclient"
)

// TestSecurityFlagsFromEnvironment: every ARBITER_KAFKA_* and ARBITER_REDIS_*
// security variable (the names the deployment manifests set) reaches the
// client configurations, and a flag overrides its variable.
func TestSecurityFlagsFromEnvironment(t *testing.T) {
	env := map[string]string{
		"ARBITER_KAFKA_TLS":                   "true",
		"ARBITER_KAFKA_TLS_CA_FILE":           "/ca.pem",
		"ARBITER_KAFKA_TLS_CERT_FILE":         "/cert.pem",
		"ARBITER_KAFKA_TLS_KEY_FILE":          "/key.pem",
		"ARBITER_KAFKA_TLS_SERVER_NAME":       "kafka.internal",
		"ARBITER_KAFKA_SASL_MECHANISM":        "SCRAM-SHA-512",
		"ARBITER_KAFKA_SASL_USERNAME":         "arbiter",
		"ARBITER_KAFKA_SASL_PASSWORD":         "env-password",
		"ARBITER_KAFKA_SASL_PASSWORD_FILE":    "/kafka-password",
		"ARBITER_KAFKA_SASL_OAUTH_TOKEN_FILE": "/token",
		"ARBITER_KAFKA_CLIENT_ID":             "arbiter-eu-1",
		"ARBITER_REDIS_USERNAME":              "arbiter",
		"ARBITER_REDIS_PASSWORD":              "redis-env-password",
		"ARBITER_REDIS_PASSWORD_FILE":         "/redis-password",
		"ARBITER_REDIS_TLS_CA_FILE":           "/redis-ca.pem",
		"ARBITER_REDIS_TLS_CERT_FILE":         "/redis-cert.pem",
		"ARBITER_REDIS_TLS_KEY_FILE":          "/redis-key.pem",
		"ARBITER_REDIS_MODE":                  "sentinel",
		"ARBITER_REDIS_URL":                   "redis://sentinel:26379?master_name=main",
	}
	c := &cli{lookupEnv: func(name string) (string, bool) {
		value, ok := env[name]
		return value, ok
	}}
	var f commonFlags
	cmd := &cobra.Command{Use: "test"}
	f.register(cmd.Flags())
	if err := cmd.Flags().Parse([]string{"--kafka-sasl-username", "from-flag"}); err != nil {
		t.Fatal(err)
	}
	if err := c.applyEnv(cmd); err != nil {
		t.Fatal(err)
	}
	wantKafka := kafkaclient.Config{
		ClientID: "arbiter-eu-1", TLS: true, TLSCAFile: "/ca.pem", TLSCertFile: "/cert.pem", TLSKeyFile: "/key.pem", TLSServerName: "kafka.internal",
		SASLMechanism: "SCRAM-SHA-512", SASLUsername: "from-flag", SASLPassword: "env-password", SASLPasswordFile: "/kafka-password", SASLOAuthTokenFile: "/token",
	}
	if f.kafka != wantKafka {
		t.Errorf("kafka configuration\n%+v\nwant\n%+v", f.kafka, wantKafka)
	}
	wantRedis := redisclient.Config{Username: "arbiter", Password: "redis-env-password", PasswordFile: "/redis-password",
		TLSCAFile: "/redis-ca.pem", TLSCertFile: "/redis-cert.pem", TLSKeyFile: "/redis-key.pem"}
	if f.redis != wantRedis {
		t.Errorf("redis configuration\n%+v\nwant\n%+v", f.redis, wantRedis)
	}
	if got := f.redisConfig(); got.Mode != redisclient.ModeSentinel || got.URL != env["ARBITER_REDIS_URL"] || got.Username != "arbiter" {
		t.Errorf("the client configuration has mode %q, URL %q, user %q; want the variables' sentinel, URL and user", got.Mode, got.URL, got.Username)
	}
}
