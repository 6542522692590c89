package kafkaclient

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestSASLPasswordFileIsReadAtEachLogin logs in to an in-process broker with
// PLAIN and SCRAM-SHA-256 (SCRAM-SHA-512 runs against a real broker in
// cmd/arbiter's TestSecuredKafkaAndRedis); a password file rewritten between
// two clients is read again.
func TestSASLPasswordFileIsReadAtEachLogin(t *testing.T) {
	for _, mechanism := range []string{Plain, ScramSHA256, ScramSHA512} {
		t.Run(mechanism, func(t *testing.T) {
			cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser(mechanism, "arbiter", "first-password"))
			if err != nil {
				t.Fatal(err)
			}
			defer cluster.Close()
			passwordFile := filepath.Join(t.TempDir(), "password")
			config := Config{SASLMechanism: mechanism, SASLUsername: "arbiter", SASLPasswordFile: passwordFile}
			login := func(password string) error {
				if err := os.WriteFile(passwordFile, []byte(password+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				opts, err := config.Opts()
				if err != nil {
					t.Fatal(err)
				}
				client, err := kgo.NewClient(append(opts, kgo.SeedBrokers(cluster.ListenAddrs()...))...)
				if err != nil {
					t.Fatal(err)
				}
				defer client.Close()
				_, err = kadm.NewClient(client).ListTopics(context.Background())
				return config.Describe(err)
			}
			if err := login("first-password"); err != nil {
				t.Fatalf("login with the right password: %v", err)
			}
			// kfake drops the connection of a refused login where a real
			// broker answers SASL_AUTHENTICATION_FAILED, so only the refusal
			// is checked here; TestSecuredKafkaAndRedis checks the message.
			if err := login("rotated-away"); err == nil || strings.Contains(err.Error(), "rotated-away") {
				t.Fatalf("login after the file changed to a wrong password: %v; want a refusal that does not show the password", err)
			}
		})
	}
}

// TestOAuthTokenFileIsReadAtEachLogin: each OAUTHBEARER login sends the
// token the file holds then, so a refreshed token is used without a restart.
func TestOAuthTokenFileIsReadAtEachLogin(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	mechanism := Config{SASLMechanism: "oauthbearer", SASLOAuthTokenFile: tokenFile}.saslMechanism()
	for _, token := range []string{"token-one", "token-two"} {
		if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, message, err := mechanism.Authenticate(context.Background(), "127.0.0.1:9092")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(message), "auth=Bearer "+token+"\x01") {
			t.Fatalf("login message %q does not carry the file's token %q", message, token)
		}
	}
	if err := os.Remove(tokenFile); err != nil {
		t.Fatal(err)
	}
	if _, _, err := mechanism.Authenticate(context.Background(), "127.0.0.1:9092"); err == nil || !strings.Contains(err.Error(), "OAuth token file") {
		t.Fatalf("login without a token file: %v", err)
	}
}
