package redisclient_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arbiter-cqrs/arbiter/redisclient"
)

func TestRedactURL(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"},
		{"redis://user:s3cret@127.0.0.1:6379/0", "redis://user:xxxxx@127.0.0.1:6379/0"},
		{"rediss://:s3cret@redis:6380", "rediss://:xxxxx@redis:6380"},
		{"redis://user:s3cret@127.0.0.1:notaport/0", "redis://user:xxxxx@127.0.0.1:notaport/0"},
		{"redis://user:s3c@ret@host:1/0", "redis://user:xxxxx@host:1/0"},
		{"not a url", "not a url"},
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
