package verify

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"

	"github.com/cockroachdb/errors"
)

// KindClientDisagreement: two Kafka clients reading the same topic with
// read_committed returned different records. Client-side filtering of
// aborted records has had bugs; reading with a second client catches one.
const KindClientDisagreement Kind = "client_disagreement"

// CrossCheck reads the events and conflicts topics again with kcat
// (librdkafka), with isolation.level=read_committed, and reports every
// position one client returned and the other did not. It only compares
// positions up to the end the history was read to. It returns an error when
// kcat is not installed (apt-get install kcat).
func CrossCheck(ctx context.Context, cfg Config, h *History) ([]Anomaly, error) {
	cfg.setDefaults()
	if _, err := exec.LookPath("kcat"); err != nil {
		return nil, errors.Wrap(err, "the cross-check reads with kcat: install it (apt-get install kcat)")
	}
	var anomalies []Anomaly
	for _, topic := range []struct {
		name      string
		positions []Position
		asEvents  bool
	}{
		{cfg.EventsTopic, eventPositions(h), true},
		{cfg.ConflictsTopic, conflictPositions(h), false},
	} {
		ours := make(map[Position]bool, len(topic.positions))
		for _, p := range topic.positions {
			ours[p] = true
		}
		theirs, err := kcatPositions(ctx, cfg.Brokers, cfg.KcatProperties, topic.name)
		if err != nil {
			return nil, err
		}
		seen := make(map[Position]bool, len(theirs))
		for _, p := range theirs {
			seen[p] = true
			if !ours[p] {
				anomalies = append(anomalies, disagreement(topic.asEvents, p, fmt.Sprintf("kcat returned %s/%s but franz-go did not", topic.name, p)))
			}
		}
		for _, p := range topic.positions {
			if !seen[p] {
				anomalies = append(anomalies, disagreement(topic.asEvents, p, fmt.Sprintf("franz-go returned %s/%s but kcat did not", topic.name, p)))
			}
		}
	}
	return anomalies, nil
}

func disagreement(asEvent bool, p Position, detail string) Anomaly {
	a := Anomaly{Kind: KindClientDisagreement, Detail: detail}
	if asEvent {
		a.Events = []Position{p}
	} else {
		a.Conflicts = []Position{p}
	}
	return a
}

func eventPositions(h *History) []Position {
	positions := make([]Position, len(h.Events))
	for i, e := range h.Events {
		positions[i] = e.Position
	}
	return positions
}

func conflictPositions(h *History) []Position {
	positions := make([]Position, len(h.Conflicts))
	for i, c := range h.Conflicts {
		positions[i] = c.Position
	}
	return positions
}

// kcatPositions lists the positions kcat reads from a topic with
// read_committed, from the start to the end.
func kcatPositions(ctx context.Context, brokers []string, properties map[string]string, topic string) ([]Position, error) {
	args := []string{"-C", "-q", "-e",
		"-b", strings.Join(brokers, ","), "-t", topic, "-o", "beginning",
		"-X", "isolation.level=read_committed", "-f", "%p %o\n"}
	if len(properties) > 0 {
		// A file of its own (mode 0600), not -X: a password on the command
		// line would show in every process listing.
		configFile, err := writeKcatConfig(properties)
		if err != nil {
			return nil, err
		}
		defer os.Remove(configFile)
		args = append(args, "-F", configFile)
	}
	cmd := exec.CommandContext(ctx, "kcat", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, errors.Wrapf(err, "kcat read of topic %s: %s", topic, strings.TrimSpace(stderr.String()))
	}
	var positions []Position
	scanner := bufio.NewScanner(bytes.NewReader(out))
	for scanner.Scan() {
		var p Position
		if _, err := fmt.Sscanf(scanner.Text(), "%d %d", &p.Partition, &p.Offset); err != nil {
			return nil, errors.Wrapf(err, "kcat output line %q", scanner.Text())
		}
		positions = append(positions, p)
	}
	sort.Slice(positions, func(i, j int) bool {
		if positions[i].Partition != positions[j].Partition {
			return positions[i].Partition < positions[j].Partition
		}
		return positions[i].Offset < positions[j].Offset
	})
	return positions, nil
}

// writeKcatConfig writes librdkafka properties to a new private file for
// kcat's -F and returns its path.
func writeKcatConfig(properties map[string]string) (string, error) {
	file, err := os.CreateTemp("", "arbiter-kcat-*.conf")
	if err != nil {
		return "", errors.Wrap(err, "create the kcat configuration file")
	}
	keys := make([]string, 0, len(properties))
	for key := range properties {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, key := range keys {
		b.WriteString(key + "=" + properties[key] + "\n")
	}
	_, err = file.WriteString(b.String())
	if closeErr := file.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		_ = os.Remove(file.Name())
		return "", errors.Wrap(err, "write the kcat configuration file")
	}
	return file.Name(), nil
}
