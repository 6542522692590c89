package kafkaclient_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kerr"
	"go.uber.org/goleak"

	"github.com/arbiter-cqrs/arbiter/kafkaclient"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		name    string
		config  kafkaclient.Config
		options int
		wantErr []string
	}{
		{name: "zero: plaintext", config: kafkaclient.Config{}, options: 0},
		{name: "client ID", config: kafkaclient.Config{ClientID: "arbiter-test"}, options: 1},
		{name: "TLS with the system roots", config: kafkaclient.Config{TLS: true}, options: 1},
		{name: "SCRAM from a file", config: kafkaclient.Config{SASLMechanism: "scram-sha-512", SASLUsername: "u", SASLPasswordFile: secret}, options: 1},
		{name: "PLAIN from the environment", config: kafkaclient.Config{SASLMechanism: kafkaclient.Plain, SASLUsername: "u", SASLPassword: "p"}, options: 1},
		{name: "OAUTHBEARER", config: kafkaclient.Config{SASLMechanism: kafkaclient.OAuthBearer, SASLOAuthTokenFile: secret}, options: 1},
		{name: "SCRAM without user or password", config: kafkaclient.Config{SASLMechanism: kafkaclient.ScramSHA256},
			wantErr: []string{"needs a user name", "needs a password"}},
		{name: "unknown mechanism", config: kafkaclient.Config{SASLMechanism: "GSSAPI"}, wantErr: []string{`"GSSAPI" is not supported`}},
		{name: "credentials without mechanism", config: kafkaclient.Config{SASLUsername: "u"}, wantErr: []string{"no SASL mechanism"}},
		{name: "OAUTHBEARER without token", config: kafkaclient.Config{SASLMechanism: kafkaclient.OAuthBearer}, wantErr: []string{"needs a token file"}},
		{name: "missing files, cert without key", config: kafkaclient.Config{TLSCAFile: missing, TLSCertFile: secret},
			wantErr: []string{"Kafka TLS CA file", "both the certificate and the key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts, err := tc.config.Opts()
			if len(tc.wantErr) > 0 {
				for _, want := range tc.wantErr {
					if err == nil || !strings.Contains(err.Error(), want) {
						t.Errorf("error %v, want one containing %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(opts) != tc.options {
				t.Fatalf("%d options, want %d", len(opts), tc.options)
			}
		})
	}
}

// TestDescribeNamesTheMechanismNotThePassword: a refused login is explained
// with the mechanism and user, and the password is nowhere in it.
func TestDescribeNamesTheMechanismNotThePassword(t *testing.T) {
	config := kafkaclient.Config{SASLMechanism: kafkaclient.ScramSHA512, SASLUsername: "arbiter", SASLPassword: "s3cret"}
	err := config.Describe(errors.Wrap(kerr.SaslAuthenticationFailed, "list topics"))
	if !errors.Is(err, kafkaclient.ErrAuthentication) {
		t.Fatalf("%v is not ErrAuthentication", err)
	}
	if message := err.Error(); !strings.Contains(message, "SCRAM-SHA-512") || !strings.Contains(message, "arbiter") || strings.Contains(message, "s3cret") {
		t.Fatalf("message %q: want the mechanism and user, not the password", message)
	}
	other := errors.New("dial tcp: connection refused")
	if got := config.Describe(other); got != other {
		t.Fatalf("Describe changed an unrelated error: %v", got)
	}
}
