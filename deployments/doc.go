// Package deployments holds no code: the folder keeps how Arbiter's servers
// are run, and its tests check that those files agree with each other.
//
//   - kafka/pom.xml resolves the jars of the Apache Kafka broker that
//     scripts/stack.sh runs for tests; kafka/server.properties (single-node
//     KRaft) and kafka/log4j2.properties configure it.
//   - ../docker-compose.yml runs the same broker settings with the official
//     apache/kafka image, plus Redis, the topics and a scalable worker.
//   - kubernetes/ runs the worker on Kubernetes: a kustomize base (a
//     StatefulSet whose pod names are the instance IDs, its Service,
//     PodDisruptionBudget, ServiceMonitor, PrometheusRule, KEDA
//     ScaledObject, the topic-creating Job and a Grafana dashboard) and two
//     overlays, dev and production (SASL_SSL, a Redis ACL user, Secrets).
//
// compose_test.go loads docker-compose.yml with the Compose Specification's
// own loader (schema validation on) and compares its Kafka settings, topic
// partitions and worker setup with server.properties and scripts/stack.sh.
// kubernetes_test.go decodes every Kubernetes manifest strictly into the
// Kubernetes API types (and the CRDs' types) and checks the references
// between them and to the worker's flags and metrics.
package deployments
