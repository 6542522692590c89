package testenv

import (
	"context"
	"fmt"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// validTopic is Kafka's rule for topic names, less '.' and '_', which Name
// avoids.
var validTopic = regexp.MustCompile(`^[a-zA-Z0-9-]{1,249}$`)

func TestName(t *testing.T) {
	tests := []struct {
		name   string // becomes part of the subtest's name, and so of t.Name()
		prefix string
		want   string // prefix of the result, before the test name
	}{
		{name: "plain", prefix: "commands", want: "commands-TestName-plain-"},
		{name: "no prefix", prefix: "", want: "TestName-no-prefix-"},
		{name: "dots_and_underscores", prefix: "my.topic_v2", want: "my-topic-v2-TestName-dots-and-underscores-"},
		{name: "slashes/and spaces", prefix: "events", want: "events-TestName-slashes-and-spaces-"},
		{name: "unicode ✓ ünïcode", prefix: "grp", want: "grp-TestName-unicode-n-code-"},
		{name: strings.Repeat("long", 80), prefix: "conflicts", want: "conflicts-TestName-longlong"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first, second := Name(t, tt.prefix), Name(t, tt.prefix)
			for _, got := range []string{first, second} {
				if !validTopic.MatchString(got) {
					t.Errorf("Name(%q) = %q, not a valid topic name", tt.prefix, got)
				}
				if len(got) > maxNameLength {
					t.Errorf("Name(%q) = %q, %d characters, want at most %d", tt.prefix, got, len(got), maxNameLength)
				}
				if !strings.HasPrefix(got, tt.want) {
					t.Errorf("Name(%q) = %q, want it to start with %q", tt.prefix, got, tt.want)
				}
			}
			if first == second {
				t.Errorf("two calls of Name(%q) both returned %q, want unique names", tt.prefix, first)
			}
		})
	}
}

// recordingTB records how a helper ended a test without ending the real one.
type recordingTB struct {
	testing.TB
	mu      sync.Mutex
	fatal   string
	skipped string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.fatal = strings.TrimSpace(fmt.Sprintf(format, args...))
	r.mu.Unlock()
	runtime.Goexit()
}

func (r *recordingTB) Skip(args ...any) {
	r.mu.Lock()
	r.skipped = strings.TrimSpace(fmt.Sprint(args...))
	r.mu.Unlock()
	runtime.Goexit()
}

// runHelper calls helper with a recordingTB on a goroutine of its own, as
// Fatalf and Skip end the goroutine they are called on.
func runHelper(t *testing.T, helper func(testing.TB)) *recordingTB {
	t.Helper()
	recorder := &recordingTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		helper(recorder)
	}()
	<-done
	return recorder
}

func TestMissingServerFailsInCISkipsElsewhere(t *testing.T) {
	helpers := []struct {
		name    string
		envName string
		value   string
		call    func(testing.TB)
	}{
		{name: "Brokers unset", envName: EnvKafkaBrokers, value: "", call: func(tb testing.TB) { Brokers(tb) }},
		{name: "Brokers unreachable", envName: EnvKafkaBrokers, value: "127.0.0.1:1", call: func(tb testing.TB) { Brokers(tb) }},
		{name: "RedisURL unset", envName: EnvRedisURL, value: "", call: func(tb testing.TB) { RedisURL(tb) }},
		{name: "RedisURL unreachable", envName: EnvRedisURL, value: "redis://127.0.0.1:1/0", call: func(tb testing.TB) { RedisURL(tb) }},
	}
	environments := []struct {
		ci        string
		wantFatal bool
	}{
		{ci: "true", wantFatal: true},
		{ci: "", wantFatal: false},
		{ci: "false", wantFatal: false},
	}
	for _, helper := range helpers {
		for _, env := range environments {
			t.Run(helper.name+"/CI="+env.ci, func(t *testing.T) {
				t.Setenv(helper.envName, helper.value)
				t.Setenv(EnvCI, env.ci)
				recorder := runHelper(t, helper.call)

				message := recorder.skipped
				if env.wantFatal {
					message = recorder.fatal
					if recorder.skipped != "" {
						t.Errorf("under CI=%q the test was skipped (%q), want it failed", env.ci, recorder.skipped)
					}
				} else if recorder.fatal != "" {
					t.Errorf("under CI=%q the test failed (%q), want it skipped", env.ci, recorder.fatal)
				}
				if message == "" {
					t.Fatalf("under CI=%q the helper neither failed nor skipped the test", env.ci)
				}
				if !strings.Contains(message, "make test") || !strings.Contains(message, helper.envName) {
					t.Errorf("message %q does not name %s and say how to start the stack", message, helper.envName)
				}
			})
		}
	}
}

func TestKafkaFeaturesWithoutBrokers(t *testing.T) {
	if _, err := KafkaFeatures(context.Background(), nil); err == nil {
		t.Error("KafkaFeatures with no brokers returned no error")
	}
}
