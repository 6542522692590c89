package topicadmin_test

import (
	"context"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/internal/testenv"
	"github.com/arbiter-cqrs/arbiter/internal/topicadmin"
	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestCreate: new topics are created with a leader on each partition; an
// existing one is reported, or refused without ExistingOK.
func TestCreate(t *testing.T) {
	brokers := testenv.Brokers(t)
	name := testenv.Name(t, "")
	existing := name + "-existing"
	testenv.CreateTopics(t, brokers, 2, existing)
	client, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	admin := kadm.NewClient(client)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	fresh := name + "-fresh"
	t.Cleanup(func() { _, _ = admin.DeleteTopics(context.Background(), fresh) })
	result, err := topicadmin.Create(ctx, admin, topicadmin.Spec{Names: []string{fresh, existing}, Partitions: 3, ReplicationFactor: 1, ExistingOK: true})
	if err != nil || len(result.Created) != 1 || result.Created[0] != fresh || len(result.Existing) != 1 || result.Existing[0] != existing {
		t.Fatalf("Create = %+v, %v; want %s created and %s existing", result, err, fresh, existing)
	}
	metadata, err := admin.Metadata(ctx, fresh)
	if err != nil || len(metadata.Topics[fresh].Partitions) != 3 {
		t.Fatalf("metadata of %s: %v, %v; want 3 partitions", fresh, metadata.Topics[fresh], err)
	}
	_, err = topicadmin.Create(ctx, admin, topicadmin.Spec{Names: []string{existing}, Partitions: 3, ReplicationFactor: 1})
	if !errors.Is(err, kerr.TopicAlreadyExists) || errors.Is(err, topicadmin.ErrNoAnswer) {
		t.Fatalf("Create of an existing topic without ExistingOK: %v; want TopicAlreadyExists", err)
	}
}
