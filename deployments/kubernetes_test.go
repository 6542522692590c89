package deployments

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/arbiter-cqrs/arbiter/internal/metrics"
	"github.com/arbiter-cqrs/arbiter/internal/testenv"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

const (
	kubernetesDir = "kubernetes"
	baseDir       = "kubernetes/base"
	workerName    = "arbiter-worker"
	workerImage   = "arbiter"
)

// overlays are the directories under kubernetes/overlays.
var overlays = []string{"dev", "production"}

// The following mirror the parts of the CRDs' and kustomize's schemas that
// the manifests use, for strict decoding. KEDA's Go API
// (github.com/kedacore/keda/v2/apis) lives in KEDA's main module, which
// would bring every scaler's dependencies (cloud SDKs, database drivers)
// into go.sum for two small types; kustomize's (sigs.k8s.io/kustomize/api)
// likewise. The Prometheus Operator's API module is small: its real types
// are used.

type kustomization struct {
	metav1.TypeMeta    `json:",inline"`
	Namespace          string               `json:"namespace,omitempty"`
	Labels             []kustomizeLabels    `json:"labels,omitempty"`
	Resources          []string             `json:"resources,omitempty"`
	Patches            []kustomizePatch     `json:"patches,omitempty"`
	ConfigMapGenerator []configMapGenerator `json:"configMapGenerator,omitempty"`
	Images             []kustomizeImage     `json:"images,omitempty"`
}

type kustomizeLabels struct {
	Pairs            map[string]string `json:"pairs"`
	IncludeSelectors bool              `json:"includeSelectors,omitempty"`
}

type kustomizePatch struct {
	Path   string           `json:"path,omitempty"`
	Patch  string           `json:"patch,omitempty"`
	Target *kustomizeTarget `json:"target,omitempty"`
}

type kustomizeTarget struct {
	Group   string `json:"group,omitempty"`
	Version string `json:"version,omitempty"`
	Kind    string `json:"kind,omitempty"`
	Name    string `json:"name,omitempty"`
}

type configMapGenerator struct {
	Name    string   `json:"name"`
	Files   []string `json:"files"`
	Options struct {
		DisableNameSuffixHash bool              `json:"disableNameSuffixHash,omitempty"`
		Labels                map[string]string `json:"labels,omitempty"`
	} `json:"options"`
}

type kustomizeImage struct {
	Name    string `json:"name"`
	NewName string `json:"newName,omitempty"`
	NewTag  string `json:"newTag,omitempty"`
}

// scaledObject mirrors keda.sh/v1alpha1 ScaledObject.
type scaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		MinReplicaCount *int32 `json:"minReplicaCount,omitempty"`
		MaxReplicaCount *int32 `json:"maxReplicaCount,omitempty"`
		PollingInterval *int32 `json:"pollingInterval,omitempty"`
		CooldownPeriod  *int32 `json:"cooldownPeriod,omitempty"`
		Advanced        *struct {
			HorizontalPodAutoscalerConfig *struct {
				Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
			} `json:"horizontalPodAutoscalerConfig,omitempty"`
		} `json:"advanced,omitempty"`
		Triggers []struct {
			Type              string            `json:"type"`
			Metadata          map[string]string `json:"metadata"`
			AuthenticationRef *struct {
				Name string `json:"name"`
			} `json:"authenticationRef,omitempty"`
		} `json:"triggers"`
	} `json:"spec"`
}

// triggerAuthentication mirrors keda.sh/v1alpha1 TriggerAuthentication.
type triggerAuthentication struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SecretTargetRef []struct {
			Parameter string `json:"parameter"`
			Name      string `json:"name"`
			Key       string `json:"key"`
		} `json:"secretTargetRef"`
	} `json:"spec"`
}

// dashboard mirrors the parts of Grafana's dashboard JSON model used.
type dashboard struct {
	UID           string   `json:"uid"`
	Title         string   `json:"title"`
	Description   string   `json:"description"`
	Tags          []string `json:"tags"`
	Timezone      string   `json:"timezone"`
	SchemaVersion int      `json:"schemaVersion"`
	Version       int      `json:"version"`
	Editable      bool     `json:"editable"`
	Refresh       string   `json:"refresh"`
	Time          struct {
		From string `json:"from"`
		To   string `json:"to"`
	} `json:"time"`
	Templating struct {
		List []struct {
			Name       string      `json:"name"`
			Label      string      `json:"label"`
			Type       string      `json:"type"`
			Query      string      `json:"query"`
			Datasource *datasource `json:"datasource,omitempty"`
			Refresh    int         `json:"refresh,omitempty"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID          int        `json:"id"`
		Type        string     `json:"type"`
		Title       string     `json:"title"`
		Description string     `json:"description"`
		Datasource  datasource `json:"datasource"`
		GridPos     struct {
			H, W, X, Y int
		} `json:"gridPos"`
		FieldConfig struct {
			Defaults struct {
				Unit string `json:"unit"`
			} `json:"defaults"`
			Overrides []json.RawMessage `json:"overrides"`
		} `json:"fieldConfig"`
		Targets []struct {
			RefID        string     `json:"refId"`
			Expr         string     `json:"expr"`
			LegendFormat string     `json:"legendFormat"`
			Datasource   datasource `json:"datasource"`
		} `json:"targets"`
	} `json:"panels"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// manifests is what one kustomization directory holds, decoded.
type manifests struct {
	dir            string
	kustomization  kustomization
	statefulSets   []appsv1.StatefulSet
	services       []corev1.Service
	budgets        []policyv1.PodDisruptionBudget
	jobs           []batchv1.Job
	secrets        []corev1.Secret
	serviceMonitor []monitoringv1.ServiceMonitor
	rules          []monitoringv1.PrometheusRule
	scaledObjects  []scaledObject
	triggerAuths   []triggerAuthentication
	dashboards     []dashboard
	configMaps     []corev1.ConfigMap
}

// strict decodes YAML or JSON into out, failing on unknown or duplicate
// fields.
func strict(t *testing.T, where string, data []byte, out any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(data, out); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
}

// load decodes every file of a kustomization directory strictly, and
// checks that the kustomization lists exactly the files the directory
// holds.
func load(t *testing.T, dir string) *manifests {
	t.Helper()
	m := &manifests{dir: dir}
	strict(t, filepath.Join(dir, "kustomization.yaml"), readBytes(t, filepath.Join(dir, "kustomization.yaml")), &m.kustomization)
	if m.kustomization.Kind != "Kustomization" || m.kustomization.APIVersion != "kustomize.config.k8s.io/v1beta1" {
		t.Fatalf("%s/kustomization.yaml: %s %s", dir, m.kustomization.APIVersion, m.kustomization.Kind)
	}
	listed := map[string]bool{}
	for _, r := range m.kustomization.Resources {
		if !strings.HasPrefix(r, "../") {
			listed[r] = true
		}
	}
	for _, p := range m.kustomization.Patches {
		if p.Path != "" {
			listed[p.Path] = true
		}
	}
	for _, g := range m.kustomization.ConfigMapGenerator {
		for _, f := range g.Files {
			listed[f] = true
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || name == "kustomization.yaml" {
			continue
		}
		if !listed[name] {
			t.Errorf("%s/%s is not used by its kustomization.yaml", dir, name)
		}
		delete(listed, name)
		m.decode(t, filepath.Join(dir, name))
	}
	for name := range listed {
		t.Errorf("%s/kustomization.yaml lists %s, which does not exist", dir, name)
	}
	return m
}

func readBytes(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

var documentSeparator = regexp.MustCompile(`(?m)^---\s*$`)

func (m *manifests) decode(t *testing.T, path string) {
	t.Helper()
	data := readBytes(t, path)
	if strings.HasSuffix(path, ".json") {
		var d dashboard
		strict(t, path, data, &d)
		m.dashboards = append(m.dashboards, d)
		return
	}
	m.decodeDocuments(t, path, data)
}

// decodeDocuments decodes each document of a YAML stream strictly into the
// Go type of its kind.
func (m *manifests) decodeDocuments(t *testing.T, path string, data []byte) {
	t.Helper()
	for i, doc := range documentSeparator.Split(string(data), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		where := path + " document " + strconv.Itoa(i+1)
		var typeMeta metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &typeMeta); err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		raw := []byte(doc)
		switch typeMeta.APIVersion + " " + typeMeta.Kind {
		case "apps/v1 StatefulSet":
			m.statefulSets = append(m.statefulSets, decodeAs[appsv1.StatefulSet](t, where, raw))
		case "v1 Service":
			m.services = append(m.services, decodeAs[corev1.Service](t, where, raw))
		case "policy/v1 PodDisruptionBudget":
			m.budgets = append(m.budgets, decodeAs[policyv1.PodDisruptionBudget](t, where, raw))
		case "batch/v1 Job":
			m.jobs = append(m.jobs, decodeAs[batchv1.Job](t, where, raw))
		case "v1 ConfigMap":
			m.configMaps = append(m.configMaps, decodeAs[corev1.ConfigMap](t, where, raw))
		case "v1 Secret":
			m.secrets = append(m.secrets, decodeAs[corev1.Secret](t, where, raw))
		case "monitoring.coreos.com/v1 ServiceMonitor":
			m.serviceMonitor = append(m.serviceMonitor, decodeAs[monitoringv1.ServiceMonitor](t, where, raw))
		case "monitoring.coreos.com/v1 PrometheusRule":
			m.rules = append(m.rules, decodeAs[monitoringv1.PrometheusRule](t, where, raw))
		case "keda.sh/v1alpha1 ScaledObject":
			m.scaledObjects = append(m.scaledObjects, decodeAs[scaledObject](t, where, raw))
		case "keda.sh/v1alpha1 TriggerAuthentication":
			m.triggerAuths = append(m.triggerAuths, decodeAs[triggerAuthentication](t, where, raw))
		default:
			t.Fatalf("%s: no Go type to check %s %s against; add it to this test", where, typeMeta.APIVersion, typeMeta.Kind)
		}
	}
}

func decodeAs[T any](t *testing.T, where string, data []byte) T {
	t.Helper()
	var out T
	strict(t, where, data, &out)
	return out
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// envNames lists the ARBITER_* environment variables the CLI reads, from
// its source: cmd/arbiter and app.
func envNames(t *testing.T) map[string]bool {
	t.Helper()
	literal := regexp.MustCompile(`"(ARBITER_[A-Z0-9_]+)"`)
	names := map[string]bool{}
	for _, dir := range []string{"cmd/arbiter", "app"} {
		files, _ := filepath.Glob(filepath.Join(repoRoot, dir, "*.go"))
		for _, file := range files {
			if strings.HasSuffix(file, "_test.go") {
				continue
			}
			for _, match := range literal.FindAllStringSubmatch(string(readBytes(t, file)), -1) {
				if !strings.HasPrefix(match[1], "ARBITER_TEST_") {
					names[match[1]] = true
				}
			}
		}
	}
	if len(names) < 10 {
		t.Fatalf("found only %d ARBITER_* variables in the CLI's source: has it moved?", len(names))
	}
	return names
}

// recordingRegisterer records the names of the metrics registered on it.
type recordingRegisterer struct {
	*prometheus.Registry
	names map[string]bool
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *recordingRegisterer) Register(c prometheus.Collector) error {
	descs := make(chan *prometheus.Desc)
	go func() { c.Describe(descs); close(descs) }()
	for desc := range descs {
		if match := fqName.FindStringSubmatch(desc.String()); match != nil {
			r.names[match[1]] = true
		}
	}
	return r.Registry.Register(c)
}

func (r *recordingRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// metricNames lists every metric a worker exposes: Arbiter's and the
// franz-go client's (kprom registers those when a client starts).
func metricNames(t *testing.T) map[string]bool {
	t.Helper()
	reg := &recordingRegisterer{Registry: prometheus.NewRegistry(), names: map[string]bool{}}
	m, err := metrics.New(metrics.Config{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	client, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}, m.KafkaSessionOptions("names")...)...)
	if err != nil {
		t.Fatal(err)
	}
	client.Close()
	for _, name := range metrics.Names() {
		if !reg.names[name] {
			t.Fatalf("metrics.Names() lists %s, which is not registered", name)
		}
	}
	return reg.names
}

var metricReference = regexp.MustCompile(`\barbiter_[a-z0-9_]+`)

// checkMetricNames reports the metric names in a PromQL expression that no
// worker exposes; a histogram's _bucket, _sum and _count series are known
// by its name.
func checkMetricNames(t *testing.T, where, expr string, known map[string]bool) {
	t.Helper()
	for _, name := range metricReference.FindAllString(expr, -1) {
		base := name
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if trimmed, ok := strings.CutSuffix(name, suffix); ok && known[trimmed] {
				base = trimmed
			}
		}
		if !known[base] {
			t.Errorf("%s uses %s, which the worker does not expose", where, name)
		}
	}
}

// container returns the named container of a pod template.
func container(t *testing.T, where string, spec corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("%s: no container %s", where, name)
	return corev1.Container{}
}

// mergeEnv applies a patch's env list to a container's as a strategic merge
// patch does: by name, replacing or appending.
func mergeEnv(env, patch []corev1.EnvVar) []corev1.EnvVar {
	out := slices.Clone(env)
	for _, p := range patch {
		i := slices.IndexFunc(out, func(e corev1.EnvVar) bool { return e.Name == p.Name })
		if i >= 0 {
			out[i] = p
		} else {
			out = append(out, p)
		}
	}
	return out
}

func envValue(env []corev1.EnvVar, name string) (string, bool) {
	for _, e := range env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

func matches(selector map[string]string, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func one[T any](t *testing.T, where, kind string, items []T) T {
	t.Helper()
	if len(items) != 1 {
		t.Fatalf("%s: want one %s, found %d", where, kind, len(items))
	}
	return items[0]
}

// TestKubernetesBase decodes every file of the kustomize base strictly and
// checks the references between them and to the worker's code.
func TestKubernetesBase(t *testing.T) {
	base := load(t, filepath.Join(baseDir))
	env := envNames(t)
	known := metricNames(t)

	sts := one(t, baseDir, "StatefulSet", base.statefulSets)
	svc := one(t, baseDir, "Service", base.services)
	pdb := one(t, baseDir, "PodDisruptionBudget", base.budgets)
	job := one(t, baseDir, "Job", base.jobs)
	monitor := one(t, baseDir, "ServiceMonitor", base.serviceMonitor)
	scaler := one(t, baseDir, "ScaledObject", base.scaledObjects)
	rules := one(t, baseDir, "PrometheusRule", base.rules)
	board := one(t, baseDir, "dashboard", base.dashboards)
	podLabels := sts.Spec.Template.Labels

	t.Run("StatefulSet", func(t *testing.T) {
		if sts.Name != workerName || !matches(sts.Spec.Selector.MatchLabels, podLabels) {
			t.Errorf("StatefulSet %s: selector %v does not select its pods %v", sts.Name, sts.Spec.Selector.MatchLabels, podLabels)
		}
		if sts.Spec.ServiceName != svc.Name {
			t.Errorf("serviceName %q, want the Service %q", sts.Spec.ServiceName, svc.Name)
		}
		worker := container(t, "StatefulSet", sts.Spec.Template.Spec, "worker")
		if worker.Image != workerImage || !slices.Equal(worker.Args, []string{"worker"}) {
			t.Errorf("worker container runs %s %v", worker.Image, worker.Args)
		}
		for _, e := range worker.Env {
			if !env[e.Name] {
				t.Errorf("env %s is not a variable the CLI reads", e.Name)
			}
		}
		instance := slices.IndexFunc(worker.Env, func(e corev1.EnvVar) bool {
			return e.Name == "ARBITER_INSTANCE_ID" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name"
		})
		if instance < 0 {
			t.Error("ARBITER_INSTANCE_ID must come from the pod's name (fieldRef metadata.name)")
		}
		addr, ok := envValue(worker.Env, "ARBITER_HTTP_ADDR")
		if !ok {
			addr = metrics.DefaultAddr
		}
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatalf("ARBITER_HTTP_ADDR %q: %v", addr, err)
		}
		httpPort := slices.IndexFunc(worker.Ports, func(p corev1.ContainerPort) bool {
			return p.Name == "http" && strconv.Itoa(int(p.ContainerPort)) == port
		})
		if httpPort < 0 {
			t.Errorf("no container port named http on %s (ARBITER_HTTP_ADDR %q): %+v", port, addr, worker.Ports)
		}
		for _, probe := range []struct {
			name  string
			probe *corev1.Probe
			path  string
		}{{"liveness", worker.LivenessProbe, metrics.HealthPath}, {"readiness", worker.ReadinessProbe, metrics.ReadyPath}} {
			if probe.probe == nil || probe.probe.HTTPGet == nil {
				t.Errorf("no %s probe over HTTP", probe.name)
				continue
			}
			if get := probe.probe.HTTPGet; get.Path != probe.path || get.Port != intstr.FromString("http") {
				t.Errorf("%s probe GETs %s on %s, want %s on the http port", probe.name, get.Path, get.Port.String(), probe.path)
			}
		}
		if worker.Resources.Requests.Cpu().IsZero() || worker.Resources.Requests.Memory().IsZero() {
			t.Errorf("the worker has no CPU or memory request: %v", worker.Resources.Requests)
		}
		grace := sts.Spec.Template.Spec.TerminationGracePeriodSeconds
		if grace == nil || *grace <= 10 {
			t.Errorf("terminationGracePeriodSeconds must outlast the transaction timeout (10s): %v", grace)
		}
	})

	t.Run("Service, PodDisruptionBudget, ServiceMonitor", func(t *testing.T) {
		if !matches(svc.Spec.Selector, podLabels) || !matches(pdb.Spec.Selector.MatchLabels, podLabels) {
			t.Errorf("the Service (%v) and the PodDisruptionBudget (%v) must select the worker pods %v", svc.Spec.Selector, pdb.Spec.Selector.MatchLabels, podLabels)
		}
		if svc.Spec.ClusterIP != corev1.ClusterIPNone || !svc.Spec.PublishNotReadyAddresses {
			t.Error("the Service must be headless and publish not-ready addresses (a worker waiting for a rebuild must still be scraped)")
		}
		servicePort := one(t, "Service", "port", svc.Spec.Ports)
		if servicePort.TargetPort != intstr.FromString("http") {
			t.Errorf("Service targets %s, want the container's http port", servicePort.TargetPort.String())
		}
		if pdb.Spec.MaxUnavailable == nil && pdb.Spec.MinAvailable == nil {
			t.Error("the PodDisruptionBudget allows anything")
		}
		if !matches(monitor.Spec.Selector.MatchLabels, svc.Labels) {
			t.Errorf("ServiceMonitor selects %v, the Service is labelled %v", monitor.Spec.Selector.MatchLabels, svc.Labels)
		}
		endpoint := one(t, "ServiceMonitor", "endpoint", monitor.Spec.Endpoints)
		if endpoint.Port != servicePort.Name || endpoint.Path != metrics.MetricsPath {
			t.Errorf("ServiceMonitor scrapes port %q path %q, want %q %q", endpoint.Port, endpoint.Path, servicePort.Name, metrics.MetricsPath)
		}
	})

	t.Run("topics Job", func(t *testing.T) {
		topics := container(t, "Job", job.Spec.Template.Spec, "topics")
		script := strings.Join(topics.Args, "\n")
		for _, e := range topics.Env {
			if strings.HasPrefix(e.Name, "ARBITER_") && !env[e.Name] {
				t.Errorf("Job env %s is not a variable the CLI reads", e.Name)
			}
			if !strings.Contains(script, "$"+e.Name) && !strings.Contains(script, "${"+e.Name) {
				t.Errorf("Job env %s is not used by its script", e.Name)
			}
		}
		if !regexp.MustCompile(`--topic "\$ARBITER_EVENTS_TOPIC" [^\n]*--config retention\.ms=-1`).MatchString(script) {
			t.Error("the events topic must be created with retention.ms=-1: rebuild-versions replays it from the start")
		}
		if partitions, _ := envValue(topics.Env, "ARBITER_PARTITIONS"); partitions != wantTopicPartitions {
			t.Errorf("the Job creates topics with %s partitions, docker-compose.yml and the test stack with %s", partitions, wantTopicPartitions)
		}
		worker := container(t, "StatefulSet", sts.Spec.Template.Spec, "worker")
		for _, name := range []string{"ARBITER_BROKERS", "ARBITER_COMMANDS_TOPIC", "ARBITER_EVENTS_TOPIC", "ARBITER_CONFLICTS_TOPIC"} {
			jobValue, _ := envValue(topics.Env, name)
			workerValue, _ := envValue(worker.Env, name)
			if jobValue == "" || jobValue != workerValue {
				t.Errorf("%s: the Job creates %q, the worker uses %q", name, jobValue, workerValue)
			}
		}
	})

	t.Run("KEDA cap", func(t *testing.T) {
		if ref := scaler.Spec.ScaleTargetRef; ref.Kind != "StatefulSet" || ref.Name != sts.Name || ref.APIVersion != "apps/v1" {
			t.Errorf("ScaledObject scales %+v", ref)
		}
		checkScaling(t, sts, job, scaler, true)
	})

	t.Run("alerts", func(t *testing.T) {
		alerts := map[string]bool{}
		for _, group := range rules.Spec.Groups {
			for _, rule := range group.Rules {
				alerts[rule.Alert] = true
				checkMetricNames(t, "alert "+rule.Alert, rule.Expr.String(), known)
				if rule.Labels["severity"] == "" || rule.Annotations["summary"] == "" {
					t.Errorf("alert %s needs a severity and a summary", rule.Alert)
				}
			}
		}
		for _, want := range []string{"ArbiterConsumerLagGrowing", "ArbiterPartitionStuck", "ArbiterWaitingForRebuild", "ArbiterNoOutcomes"} {
			if !alerts[want] {
				t.Errorf("no alert %s", want)
			}
		}
	})

	t.Run("dashboard", func(t *testing.T) {
		if len(board.Panels) == 0 {
			t.Fatal("the dashboard has no panels")
		}
		used := map[string]bool{}
		for _, panel := range board.Panels {
			for _, target := range panel.Targets {
				checkMetricNames(t, "panel "+panel.Title, target.Expr, known)
				for _, name := range metricReference.FindAllString(target.Expr, -1) {
					used[name] = true
				}
			}
		}
		for _, name := range []string{metrics.CommandsTotal, metrics.ConsumerLagRecords, metrics.WaitingForRebuild, metrics.PartitionStuck, metrics.TransactionsTotal} {
			if !used[name] {
				t.Errorf("the dashboard does not show %s", name)
			}
		}
		generator := one(t, baseDir, "configMapGenerator", base.kustomization.ConfigMapGenerator)
		if generator.Options.Labels["grafana_dashboard"] != "1" {
			t.Error("the dashboard's ConfigMap needs the grafana_dashboard=1 label for Grafana's sidecar")
		}
	})
}

// checkScaling checks KEDA's cap: the workers' group members (replicas ×
// concurrency) never outnumber the partitions, and the trigger watches the
// workers' group and topic. exact asks for the cap to be exactly
// partitions ÷ concurrency.
func checkScaling(t *testing.T, sts appsv1.StatefulSet, job batchv1.Job, scaler scaledObject, exact bool) {
	t.Helper()
	worker := container(t, "StatefulSet", sts.Spec.Template.Spec, "worker")
	topics := container(t, "Job", job.Spec.Template.Spec, "topics")
	partitionsValue, _ := envValue(topics.Env, "ARBITER_PARTITIONS")
	partitions, err := strconv.Atoi(partitionsValue)
	if err != nil || partitions <= 0 {
		t.Fatalf("the Job's ARBITER_PARTITIONS %q", partitionsValue)
	}
	concurrency := 1
	if value, ok := envValue(worker.Env, "ARBITER_CONCURRENCY"); ok {
		if concurrency, err = strconv.Atoi(value); err != nil || concurrency <= 0 {
			t.Fatalf("ARBITER_CONCURRENCY %q", value)
		}
	}
	if scaler.Spec.MaxReplicaCount == nil {
		t.Fatal("the ScaledObject has no maxReplicaCount")
	}
	maxReplicas := int(*scaler.Spec.MaxReplicaCount)
	limit := partitions / concurrency
	if maxReplicas > limit || exact && maxReplicas != limit {
		t.Errorf("maxReplicaCount %d with %d partitions and concurrency %d: want %d (partitions ÷ concurrency)", maxReplicas, partitions, concurrency, limit)
	}
	if sts.Spec.Replicas != nil && int(*sts.Spec.Replicas) > maxReplicas {
		t.Errorf("%d replicas, over KEDA's maxReplicaCount %d", *sts.Spec.Replicas, maxReplicas)
	}
	trigger := one(t, "ScaledObject", "trigger", scaler.Spec.Triggers)
	if trigger.Type != "kafka" {
		t.Fatalf("trigger type %q", trigger.Type)
	}
	for metadata, name := range map[string]string{"consumerGroup": "ARBITER_GROUP", "topic": "ARBITER_COMMANDS_TOPIC", "bootstrapServers": "ARBITER_BROKERS"} {
		if value, _ := envValue(worker.Env, name); trigger.Metadata[metadata] != value {
			t.Errorf("KEDA's %s is %q, the worker's %s %q", metadata, trigger.Metadata[metadata], name, value)
		}
	}
}

// TestKubernetesOverlays decodes each overlay strictly, applies its patches
// to the base's env lists and the ScaledObject, and checks the result: env
// names, the KEDA cap, the Secrets and KEDA's credentials.
func TestKubernetesOverlays(t *testing.T) {
	base := load(t, baseDir)
	env := envNames(t)
	for _, name := range overlays {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(kubernetesDir, "overlays", name)
			overlay := load(t, dir)
			if !slices.Contains(overlay.kustomization.Resources, "../../base") {
				t.Fatalf("%s does not build on the base", dir)
			}
			if overlay.kustomization.Namespace == "" {
				t.Errorf("%s sets no namespace", dir)
			}
			sts := base.statefulSets[0]
			sts.Spec.Template.Spec.Containers = slices.Clone(sts.Spec.Template.Spec.Containers)
			job := base.jobs[0]
			job.Spec.Template.Spec.Containers = slices.Clone(job.Spec.Template.Spec.Containers)
			secrets := map[string]corev1.Secret{}
			for _, s := range overlay.secrets {
				secrets[s.Name] = s
			}
			checkSecretRefs := func(where string, spec corev1.PodSpec, c corev1.Container) {
				for _, e := range c.Env {
					if strings.HasPrefix(e.Name, "ARBITER_") && !env[e.Name] {
						t.Errorf("%s: env %s is not a variable the CLI reads", where, e.Name)
					}
					if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
						checkSecretKey(t, where, secrets, e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
					}
					if strings.HasSuffix(e.Name, "_FILE") && !mounted(spec, c, e.Value, secrets) {
						t.Errorf("%s: %s=%s is not a key of a mounted Secret", where, e.Name, e.Value)
					}
				}
			}
			for _, patch := range overlay.statefulSets {
				if patch.Name != sts.Name {
					t.Fatalf("%s patches StatefulSet %s, the base has %s", dir, patch.Name, sts.Name)
				}
				if patch.Spec.Replicas != nil {
					sts.Spec.Replicas = patch.Spec.Replicas
				}
				for _, c := range patch.Spec.Template.Spec.Containers {
					i := slices.IndexFunc(sts.Spec.Template.Spec.Containers, func(b corev1.Container) bool { return b.Name == c.Name })
					if i < 0 {
						t.Fatalf("%s patches container %s, which the base does not have", dir, c.Name)
					}
					sts.Spec.Template.Spec.Containers[i].Env = mergeEnv(sts.Spec.Template.Spec.Containers[i].Env, c.Env)
					checkSecretRefs("StatefulSet patch", patch.Spec.Template.Spec, c)
				}
			}
			for _, patch := range overlay.jobs {
				for _, c := range patch.Spec.Template.Spec.Containers {
					i := slices.IndexFunc(job.Spec.Template.Spec.Containers, func(b corev1.Container) bool { return b.Name == c.Name })
					if i < 0 {
						t.Fatalf("%s patches Job container %s, which the base does not have", dir, c.Name)
					}
					job.Spec.Template.Spec.Containers[i].Env = mergeEnv(job.Spec.Template.Spec.Containers[i].Env, c.Env)
					checkSecretRefs("Job patch", patch.Spec.Template.Spec, c)
					script := strings.Join(job.Spec.Template.Spec.Containers[i].Args, "\n")
					for _, e := range c.Env {
						if !strings.Contains(script, "$"+e.Name) && !strings.Contains(script, "${"+e.Name) {
							t.Errorf("Job patch env %s is not used by the Job's script", e.Name)
						}
					}
				}
			}
			scaler := applyScaledObjectPatches(t, dir, base.scaledObjects[0], overlay.kustomization.Patches)
			checkScaling(t, sts, job, scaler, false)
			if ref := scaler.Spec.Triggers[0].AuthenticationRef; ref != nil {
				auth := slices.IndexFunc(overlay.triggerAuths, func(a triggerAuthentication) bool { return a.Name == ref.Name })
				if auth < 0 {
					t.Fatalf("the ScaledObject authenticates with %s, which %s does not define", ref.Name, dir)
				}
				for _, target := range overlay.triggerAuths[auth].Spec.SecretTargetRef {
					checkSecretKey(t, "TriggerAuthentication "+ref.Name, secrets, target.Name, target.Key)
				}
			}
			worker := container(t, "StatefulSet", sts.Spec.Template.Spec, "worker")
			if _, sasl := envValue(worker.Env, "ARBITER_KAFKA_SASL_MECHANISM"); sasl && scaler.Spec.Triggers[0].AuthenticationRef == nil {
				t.Error("the workers log in to Kafka with SASL, but KEDA's trigger has no authenticationRef")
			}
		})
	}
}

func checkSecretKey(t *testing.T, where string, secrets map[string]corev1.Secret, name, key string) {
	t.Helper()
	secret, ok := secrets[name]
	if !ok {
		t.Errorf("%s: Secret %s is not defined", where, name)
		return
	}
	if _, ok := secret.StringData[key]; !ok {
		if _, ok := secret.Data[key]; !ok {
			t.Errorf("%s: Secret %s has no key %s", where, name, key)
		}
	}
}

// mounted reports whether path is a key of a Secret mounted in c.
func mounted(spec corev1.PodSpec, c corev1.Container, path string, secrets map[string]corev1.Secret) bool {
	for _, mount := range c.VolumeMounts {
		key, ok := strings.CutPrefix(path, strings.TrimSuffix(mount.MountPath, "/")+"/")
		if !ok {
			continue
		}
		for _, volume := range spec.Volumes {
			if volume.Name == mount.Name && volume.Secret != nil {
				secret := secrets[volume.Secret.SecretName]
				_, inString := secret.StringData[key]
				_, inData := secret.Data[key]
				return inString || inData
			}
		}
	}
	return false
}

// applyScaledObjectPatches applies an overlay's inline JSON 6902 patches
// that target the ScaledObject (add and replace are what they use) and
// decodes the result strictly again.
func applyScaledObjectPatches(t *testing.T, dir string, scaler scaledObject, patches []kustomizePatch) scaledObject {
	t.Helper()
	data, err := json.Marshal(scaler)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	for _, patch := range patches {
		if patch.Target == nil || patch.Target.Kind != "ScaledObject" {
			continue
		}
		if patch.Target.Name != scaler.Name || patch.Target.Group != "keda.sh" || patch.Target.Version != "v1alpha1" {
			t.Fatalf("%s: a patch targets %+v, the ScaledObject is keda.sh/v1alpha1 %s", dir, *patch.Target, scaler.Name)
		}
		var ops []struct {
			Op    string `json:"op"`
			Path  string `json:"path"`
			Value any    `json:"value"`
		}
		strict(t, dir+" ScaledObject patch", []byte(patch.Patch), &ops)
		for _, op := range ops {
			if op.Op != "add" && op.Op != "replace" {
				t.Fatalf("%s: patch op %q is not handled by this test", dir, op.Op)
			}
			if err := setPointer(doc, op.Path, op.Value, op.Op == "replace"); err != nil {
				t.Fatalf("%s: %s %s: %v", dir, op.Op, op.Path, err)
			}
		}
	}
	patched, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return decodeAs[scaledObject](t, dir+" patched ScaledObject", patched)
}

// setPointer sets the JSON pointer path in doc to value; replace requires
// the member to exist.
func setPointer(doc any, path string, value any, replace bool) error {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	node := doc
	for i, part := range parts {
		last := i == len(parts)-1
		switch n := node.(type) {
		case map[string]any:
			if last {
				if _, ok := n[part]; replace && !ok {
					return os.ErrNotExist
				}
				n[part] = value
				return nil
			}
			node = n[part]
		case []any:
			index, err := strconv.Atoi(part)
			if err != nil || index >= len(n) {
				return os.ErrNotExist
			}
			if last {
				n[index] = value
				return nil
			}
			node = n[index]
		default:
			return os.ErrNotExist
		}
	}
	return nil
}

// TestKubernetesOverlaysBuild builds each overlay with kustomize (kubectl
// kustomize, when kubectl is installed), decodes every object of the result
// strictly, and checks what the patches made of the worker: env names, the
// KEDA cap, the namespace.
func TestKubernetesOverlaysBuild(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		// The machine image (and so CI) ships Debian's kubectl: there a
		// missing one is a broken set-up, not a reason to pass.
		if testenv.InCI() {
			t.Fatalf("kubectl is not installed (apt-get install kubectl); CI=true needs the overlays built")
		}
		t.Skip("kubectl is not installed; TestKubernetesOverlays checks the overlays without kustomize")
	}
	env := envNames(t)
	for _, name := range overlays {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(kubernetesDir, "overlays", name)
			out, err := exec.Command(kubectl, "kustomize", dir).CombinedOutput()
			if err != nil {
				t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, out)
			}
			built := &manifests{dir: dir}
			built.decodeDocuments(t, "kubectl kustomize "+dir, out)
			overlay := load(t, dir)
			for _, object := range built.objects() {
				if object.Namespace != overlay.kustomization.Namespace {
					t.Errorf("%s %s is in namespace %q, want %q", object.Kind, object.Name, object.Namespace, overlay.kustomization.Namespace)
				}
			}
			sts := one(t, dir, "StatefulSet", built.statefulSets)
			worker := container(t, "StatefulSet", sts.Spec.Template.Spec, "worker")
			for _, e := range worker.Env {
				if !env[e.Name] {
					t.Errorf("env %s is not a variable the CLI reads", e.Name)
				}
			}
			if worker.Image == workerImage || !strings.Contains(worker.Image, "/") {
				t.Errorf("the image %q was not replaced by the kustomization's images", worker.Image)
			}
			checkScaling(t, sts, one(t, dir, "Job", built.jobs), one(t, dir, "ScaledObject", built.scaledObjects), false)
			board := one(t, dir, "ConfigMap", built.configMaps)
			for file, content := range board.Data {
				var d dashboard
				strict(t, dir+" ConfigMap "+board.Name+" "+file, []byte(content), &d)
			}
		})
	}
}

// object is what every built object has.
type object struct {
	Kind, Name, Namespace string
}

func (m *manifests) objects() []object {
	var out []object
	add := func(kind string, meta metav1.ObjectMeta) {
		out = append(out, object{Kind: kind, Name: meta.Name, Namespace: meta.Namespace})
	}
	for _, o := range m.statefulSets {
		add("StatefulSet", o.ObjectMeta)
	}
	for _, o := range m.services {
		add("Service", o.ObjectMeta)
	}
	for _, o := range m.budgets {
		add("PodDisruptionBudget", o.ObjectMeta)
	}
	for _, o := range m.jobs {
		add("Job", o.ObjectMeta)
	}
	for _, o := range m.secrets {
		add("Secret", o.ObjectMeta)
	}
	for _, o := range m.configMaps {
		add("ConfigMap", o.ObjectMeta)
	}
	for _, o := range m.serviceMonitor {
		add("ServiceMonitor", o.ObjectMeta)
	}
	for _, o := range m.rules {
		add("PrometheusRule", o.ObjectMeta)
	}
	for _, o := range m.scaledObjects {
		add("ScaledObject", o.ObjectMeta)
	}
	for _, o := range m.triggerAuths {
		add("TriggerAuthentication", o.ObjectMeta)
	}
	return out
}
