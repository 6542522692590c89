package redisclient_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/redisclient"
	"github.com/redis/go-redis/v9"
)

func TestRedactURL(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"},
		{"redis://user:s3cret@127.0.0.1:6379/0", "redis://user:xxxxx@127.0.0.1:6379/0"},
		{"rediss://:s3cret@redis:6380", "rediss://:xxxxx@redis:6380"},
		{"redis://user:s3cret@127.0.0.1:notaport/0", "redis://user:xxxxx@127.0.0.1:notaport/0"},
		{"redis://user:s3c@ret@host:1/0", "redis://user:xxxxx@host:1/0"},
		{"not a url", "not a url"},
		{"redis://su:s3cret@h:26379?master_name=m&password=p4ss&addr=h2:1", "redis://su:xxxxx@h:26379?master_name=m&password=xxxxx&addr=h2:1"},
		{"redis://h:1?addr=h2:2&PASSWORD=p4ss", "redis://h:1?addr=h2:2&PASSWORD=xxxxx"},
		{"redis://u:s3cret@h:1?addr=h2:2", "redis://u:xxxxx@h:1?addr=h2:2"},
	} {
		if got := redisclient.RedactURL(tc.url); got != tc.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.url, got, tc.want)
		}
	}
}

// TestErrorsShowNoPassword: a URL that does not parse used to be quoted whole
// in the error, password included.
func TestErrorsShowNoPassword(t *testing.T) {
	for _, url := range []string{
		"redis://user:s3cret@127.0.0.1:notaport/0",
		"redis://user:s3cret@127.0.0.1:6379/notadb",
		"http://user:s3cret@127.0.0.1:6379/0",
		"redis://user:s3cret@[::1/0",
	} {
		_, err := redisclient.Config{URL: url}.Options()
		if err == nil {
			t.Fatalf("%s: no error", url)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("the error for a bad URL shows its password: %v", err)
		}
	}
}

func TestOptions(t *testing.T) {
	dir := t.TempDir()
	passwordFile := filepath.Join(dir, "password")
	if err := os.WriteFile(passwordFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name         string
		config       redisclient.Config
		wantUser     string
		wantPassword string
		wantTLS      bool
		wantErr      string
	}{
		{name: "plain URL", config: redisclient.Config{URL: "redis://127.0.0.1:6379/0"}},
		{name: "credentials in the URL", config: redisclient.Config{URL: "redis://u:p@127.0.0.1:6379/0"}, wantUser: "u", wantPassword: "p"},
		{name: "fields override the URL", config: redisclient.Config{URL: "redis://u:p@127.0.0.1:6379/0", Username: "arbiter", Password: "q"}, wantUser: "arbiter", wantPassword: "q"},
		{name: "rediss", config: redisclient.Config{URL: "rediss://127.0.0.1:6380/0"}, wantTLS: true},
		{name: "password file", config: redisclient.Config{URL: "redis://127.0.0.1:6379/0", Username: "arbiter", PasswordFile: passwordFile}, wantUser: "arbiter", wantPassword: "from-file"},
		{name: "missing CA file", config: redisclient.Config{URL: "rediss://127.0.0.1:6380/0", TLSCAFile: filepath.Join(dir, "nope.pem")}, wantErr: "TLS CA file"},
		{name: "cert without key", config: redisclient.Config{URL: "rediss://127.0.0.1:6380/0", TLSCertFile: passwordFile}, wantErr: "both the certificate and the key"},
		{name: "no URL", config: redisclient.Config{}, wantErr: "no Redis URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			options, err := tc.config.Options()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			user, password := options.Username, options.Password
			if options.CredentialsProviderContext != nil {
				if user, password, err = options.CredentialsProviderContext(t.Context()); err != nil {
					t.Fatal(err)
				}
			}
			if user != tc.wantUser || password != tc.wantPassword || (options.TLSConfig != nil) != tc.wantTLS {
				t.Fatalf("user %q, password %q, TLS %v; want %q, %q, %v", user, password, options.TLSConfig != nil, tc.wantUser, tc.wantPassword, tc.wantTLS)
			}
		})
	}
}

// TestModes: each mode reads its URL form, refuses the others' with what to
// do instead, and carries the TLS and ACL settings, never showing a password
// in an error.
func TestModes(t *testing.T) {
	dir := t.TempDir()
	passwordFile := filepath.Join(dir, "password")
	if err := os.WriteFile(passwordFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const cluster = "redis://u:s3cret@10.0.0.1:7000?addr=10.0.0.2:7001&addr=10.0.0.3:7002"
	const sentinel = "redis://su:s3cret@10.0.0.1:26379?master_name=main&addr=10.0.0.2:26379&password=m4ster"
	for _, tc := range []struct {
		name    string
		config  redisclient.Config
		wantErr string
		check   func(t *testing.T, client redis.UniversalClient)
	}{
		{name: "standalone by default", config: redisclient.Config{URL: "redis://127.0.0.1:6379/0"}, check: func(t *testing.T, client redis.UniversalClient) {
			if _, ok := client.(*redis.Client); !ok {
				t.Errorf("client %T, want *redis.Client", client)
			}
		}},
		{name: "cluster", config: redisclient.Config{Mode: redisclient.ModeCluster, URL: cluster, Username: "arbiter", PasswordFile: passwordFile, TLSCAFile: writeCA(t, dir)}, check: func(t *testing.T, client redis.UniversalClient) {
			options := client.(*redis.ClusterClient).Options()
			if want := []string{"10.0.0.1:7000", "10.0.0.2:7001", "10.0.0.3:7002"}; strings.Join(options.Addrs, ",") != strings.Join(want, ",") {
				t.Errorf("addrs %v, want %v", options.Addrs, want)
			}
			user, password, err := options.CredentialsProviderContext(t.Context())
			if err != nil || user != "arbiter" || password != "from-file" {
				t.Errorf("credentials %q, %q, %v; want arbiter, from-file", user, password, err)
			}
			if options.TLSConfig == nil || options.TLSConfig.RootCAs == nil || options.TLSConfig.ServerName != "" {
				t.Errorf("TLS %+v: want the CA file's roots and no fixed server name (each node is checked against its own host)", options.TLSConfig)
			}
		}},
		{name: "cluster URL credentials", config: redisclient.Config{Mode: redisclient.ModeCluster, URL: cluster}, check: func(t *testing.T, client redis.UniversalClient) {
			options := client.(*redis.ClusterClient).Options()
			if options.Username != "u" || options.Password != "s3cret" {
				t.Errorf("credentials %q, %q; want the URL's", options.Username, options.Password)
			}
			// A dead master sends no MOVED: only the periodic reload finds
			// its promoted replica.
			if options.ClusterStateReloadInterval != redisclient.ClusterStateReloadInterval {
				t.Errorf("slot map reloaded every %s, want %s", options.ClusterStateReloadInterval, redisclient.ClusterStateReloadInterval)
			}
		}},
		{name: "sentinel", config: redisclient.Config{Mode: redisclient.ModeSentinel, URL: sentinel, Username: "arbiter", Password: "pw"}, check: func(t *testing.T, client redis.UniversalClient) {
			if _, ok := client.(*redis.Client); !ok {
				t.Errorf("client %T, want the failover *redis.Client", client)
			}
		}},
		{name: "unknown mode", config: redisclient.Config{Mode: "ring", URL: "redis://127.0.0.1:6379/0"}, wantErr: `unknown Redis mode "ring"`},
		{name: "cluster URL in standalone mode", config: redisclient.Config{URL: cluster}, wantErr: "use --redis-mode cluster"},
		{name: "sentinel URL in standalone mode", config: redisclient.Config{URL: sentinel}, wantErr: "use --redis-mode sentinel"},
		{name: "sentinel URL in cluster mode", config: redisclient.Config{Mode: redisclient.ModeCluster, URL: sentinel}, wantErr: "use --redis-mode sentinel"},
		{name: "cluster database", config: redisclient.Config{Mode: redisclient.ModeCluster, URL: "redis://u:s3cret@10.0.0.1:7000/2"}, wantErr: "database 0 only"},
		{name: "sentinel without master", config: redisclient.Config{Mode: redisclient.ModeSentinel, URL: "redis://u:s3cret@10.0.0.1:26379?password=m4ster"}, wantErr: "needs master_name="},
		{name: "bad cluster option", config: redisclient.Config{Mode: redisclient.ModeCluster, URL: cluster + "&password=m4ster"}, wantErr: "unexpected option"},
		{name: "bad sentinel port", config: redisclient.Config{Mode: redisclient.ModeSentinel, URL: "redis://u:s3cret@10.0.0.1:notaport?master_name=main&password=m4ster"}, wantErr: "not a URL"},
		{name: "no URL", config: redisclient.Config{Mode: redisclient.ModeCluster}, wantErr: "?addr="},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, err := tc.config.NewUniversalClient()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				for _, secret := range []string{"s3cret", "m4ster"} {
					if strings.Contains(err.Error(), secret) {
						t.Errorf("the error shows a password: %v", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			tc.check(t, client)
		})
	}
}

// writeCA writes a self-signed CA certificate and returns its file.
func writeCA(t *testing.T, dir string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
