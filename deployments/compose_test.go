package deployments

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

const (
	repoRoot         = ".."
	composeFile      = "docker-compose.yml"
	serverProperties = "kafka/server.properties"
	kafkaPom         = "kafka/pom.xml"
	stackScript      = "scripts/stack.sh"

	// wantTopicPartitions is the partition count of the worker's topics,
	// everywhere they are created.
	wantTopicPartitions = "12"
)

// loadCompose loads docker-compose.yml as `docker compose` would, with the
// Compose Specification's JSON schema validation and consistency checks on,
// and an empty environment so that the result does not depend on the shell.
func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	options, err := cli.NewProjectOptions(
		[]string{filepath.Join(repoRoot, composeFile)},
		cli.WithWorkingDirectory(repoRoot),
		cli.WithEnv(nil),
		cli.WithInterpolation(true),
		cli.WithConsistency(true),
		cli.WithLoadOptions(func(options *loader.Options) {
			options.SkipValidation = false
		}),
	)
	if err != nil {
		t.Fatalf("compose options: %v", err)
	}
	project, err := options.LoadProject(ctx)
	if err != nil {
		t.Fatalf("load %s: %v", composeFile, err)
	}
	return project
}

func service(t *testing.T, project *types.Project, name string) types.ServiceConfig {
	t.Helper()
	svc, err := project.GetService(name)
	if err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	return svc
}

// readProperties parses a Java .properties file of plain key=value lines.
func readProperties(t *testing.T, path string) map[string]string {
	t.Helper()
	file, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	properties := make(map[string]string)
	scanner := bufio.NewScanner(file)
	for scanner.Scan() {
		line := strings.TrimSpace(scanner.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "!") {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: line %q is not key=value", path, line)
		}
		properties[strings.TrimSpace(key)] = strings.TrimSpace(value)
	}
	if err := scanner.Err(); err != nil {
		t.Fatal(err)
	}
	return properties
}

// envName is the apache/kafka image's variable for a broker setting.
func envName(property string) string {
	return "KAFKA_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "__").Replace(property))
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestComposeLoadsWithSchemaValidation(t *testing.T) {
	project := loadCompose(t)
	want := []string{"init", "kafka", "redis", "worker"}
	if got := project.ServiceNames(); !slices.Equal(sorted(got), want) {
		t.Errorf("%s defines services %v, want %v", composeFile, sorted(got), want)
	}
}

func sorted(names []string) []string {
	names = slices.Clone(names)
	slices.Sort(names)
	return names
}

func TestComposeKafkaMatchesServerProperties(t *testing.T) {
	project := loadCompose(t)
	kafka := service(t, project, "kafka")
	properties := readProperties(t, serverProperties)

	// The settings that make a one-broker cluster work as the tests expect.
	shared := []string{
		"process.roles",
		"node.id",
		"controller.listener.names",
		"inter.broker.listener.name",
		"offsets.topic.replication.factor",
		"offsets.topic.num.partitions",
		"transaction.state.log.replication.factor",
		"transaction.state.log.min.isr",
		"transaction.state.log.num.partitions",
		"share.coordinator.state.topic.replication.factor",
		"share.coordinator.state.topic.min.isr",
		"group.initial.rebalance.delay.ms",
		"group.min.session.timeout.ms",
		"num.partitions",
		"default.replication.factor",
		"auto.create.topics.enable",
	}
	// Every replication setting of server.properties must be in the list:
	// the image keeps no defaults once any KAFKA_* variable is set, and a
	// missing one means replication factor 3 on a single broker.
	for key := range properties {
		if (strings.Contains(key, "replication.factor") || strings.HasSuffix(key, "min.isr")) && !slices.Contains(shared, key) {
			t.Errorf("%s sets %s, but this test does not compare it with %s", serverProperties, key, composeFile)
		}
	}
	for _, key := range shared {
		t.Run(key, func(t *testing.T) {
			want, ok := properties[key]
			if !ok {
				t.Fatalf("%s does not set %s", serverProperties, key)
			}
			got := kafka.Environment[envName(key)]
			switch {
			case got == nil:
				t.Errorf("%s: kafka does not set %s (%s=%s in %s)", composeFile, envName(key), key, want, serverProperties)
			case *got != want:
				t.Errorf("%s: kafka sets %s=%s, but %s has %s=%s", composeFile, envName(key), *got, serverProperties, key, want)
			}
		})
	}
}

func TestComposeKafkaImageMatchesPom(t *testing.T) {
	project := loadCompose(t)
	match := regexp.MustCompile(`<kafka\.version>([^<]+)</kafka\.version>`).FindStringSubmatch(readFile(t, kafkaPom))
	if match == nil {
		t.Fatalf("%s has no <kafka.version>", kafkaPom)
	}
	want := "apache/kafka:" + match[1]
	for _, name := range []string{"kafka", "init"} {
		if got := service(t, project, name).Image; got != want {
			t.Errorf("%s: %s runs %s, want %s (the broker version of %s)", composeFile, name, got, want, kafkaPom)
		}
	}
}

func TestComposeHealthchecks(t *testing.T) {
	project := loadCompose(t)
	tests := []struct {
		service string
		want    string // part of the healthcheck command
	}{
		{service: "kafka", want: "kafka-broker-api-versions.sh"},
		{service: "redis", want: "redis-cli ping"},
	}
	for _, tt := range tests {
		t.Run(tt.service, func(t *testing.T) {
			check := service(t, project, tt.service).HealthCheck
			if check == nil || check.Disable {
				t.Fatalf("%s: %s has no healthcheck", composeFile, tt.service)
			}
			if got := strings.Join(check.Test, " "); !strings.Contains(got, tt.want) {
				t.Errorf("%s: %s healthcheck runs %q, want it to run %q", composeFile, tt.service, got, tt.want)
			}
		})
	}
	redis := service(t, project, "redis")
	if got := strings.Join(redis.Command, " "); !strings.Contains(got, "--appendonly yes") {
		t.Errorf("%s: redis runs %q, want --appendonly yes", composeFile, got)
	}
}

func TestTopicPartitionsAgree(t *testing.T) {
	project := loadCompose(t)
	initCommand := strings.Join(service(t, project, "init").Command, " ")
	script := readFile(t, filepath.Join(repoRoot, stackScript))

	partitions := regexp.MustCompile(`--partitions\s+(\d+)`).FindAllStringSubmatch(initCommand, -1)
	if len(partitions) == 0 {
		t.Fatalf("%s: the init command creates no topic with --partitions: %q", composeFile, initCommand)
	}
	for _, match := range partitions {
		if match[1] != wantTopicPartitions {
			t.Errorf("%s: init creates topics with %s partitions, want %s", composeFile, match[1], wantTopicPartitions)
		}
	}
	scriptDefault := regexp.MustCompile(`ARBITER_STACK_TOPIC_PARTITIONS:-(\d+)`).FindStringSubmatch(script)
	if scriptDefault == nil || scriptDefault[1] != wantTopicPartitions {
		t.Errorf("%s: default of ARBITER_STACK_TOPIC_PARTITIONS is %v, want %s", stackScript, scriptDefault, wantTopicPartitions)
	}

	// The same topics everywhere.
	scriptTopics := regexp.MustCompile(`WORKER_TOPICS="([^"]+)"`).FindStringSubmatch(script)
	if scriptTopics == nil {
		t.Fatalf("%s defines no WORKER_TOPICS", stackScript)
	}
	for _, topic := range strings.Split(scriptTopics[1], ",") {
		if !regexp.MustCompile(`\b` + regexp.QuoteMeta(topic) + `\b`).MatchString(initCommand) {
			t.Errorf("%s: init does not create topic %s, which %s creates", composeFile, topic, stackScript)
		}
	}
	// The events topic keeps every event: rebuild-versions reads it from
	// offset 0.
	if !regexp.MustCompile(`\bevents:-1\b`).MatchString(initCommand) || !strings.Contains(initCommand, `--config "retention.ms=${topic#*:}"`) {
		t.Errorf("%s: init must create the events topic with retention.ms=-1: %q", composeFile, initCommand)
	}
	if !strings.Contains(initCommand, "--if-not-exists") {
		t.Errorf("%s: init must create topics with --if-not-exists so that it can run again", composeFile)
	}
}

func TestComposeWorkerScales(t *testing.T) {
	project := loadCompose(t)
	worker := service(t, project, "worker")

	if worker.ContainerName != "" {
		t.Errorf("worker has container_name %q: docker compose up --scale worker=N needs none", worker.ContainerName)
	}
	for _, port := range worker.Ports {
		if port.Published != "" {
			t.Errorf("worker publishes host port %s: a second replica could not bind it", port.Published)
		}
	}
	if worker.Build == nil {
		t.Error("worker has no build section")
	}
	if len(worker.Command) == 0 || worker.Command[0] != "worker" {
		t.Errorf("worker runs %q, want the worker subcommand", worker.Command)
	}
	wantDependencies := map[string]string{
		"init":  types.ServiceConditionCompletedSuccessfully,
		"redis": types.ServiceConditionHealthy,
	}
	for name, condition := range wantDependencies {
		if got := worker.DependsOn[name].Condition; got != condition {
			t.Errorf("worker depends on %s with condition %q, want %q", name, got, condition)
		}
	}
	if got := service(t, project, "init").DependsOn["kafka"].Condition; got != types.ServiceConditionHealthy {
		t.Errorf("init depends on kafka with condition %q, want %q", got, types.ServiceConditionHealthy)
	}
}
