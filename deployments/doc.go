// Package deployments holds no code: the folder keeps how Arbiter's servers
// are run, and its tests check that those files agree with each other.
//
//   - kafka/pom.xml resolves the jars of the Apache Kafka broker that
//     scripts/stack.sh runs for tests; kafka/server.properties (single-node
//     KRaft) and kafka/log4j2.properties configure it.
//   - ../docker-compose.yml runs the same broker settings with the official
//     apache/kafka image, plus Redis, the topics and a scalable worker.
//
// compose_test.go loads docker-compose.yml with the Compose Specification's
// own loader (schema validation on) and compares its Kafka settings, topic
// partitions and worker setup with server.properties and scripts/stack.sh.
package deployments
