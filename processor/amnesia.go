package processor

import (
	"context"
	"time"

	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// ensureInitialized checks Redis holds Arbiter's data before the first
// batch. A Redis without the marker is initialised when the events topic is
// empty (a fresh deployment); otherwise it has lost data, and the worker
// waits for a rebuild. It returns nil when ctx ends while waiting.
func (w *Worker) ensureInitialized(ctx context.Context) error {
	if err := w.initialize(ctx); err != nil {
		return err
	}
	if err := w.cfg.Store.CheckWindows(ctx); err != nil {
		return err
	}
	generation, err := w.cfg.Store.Generation(ctx)
	if err != nil {
		return err
	}
	w.generation.Store(&generation)
	return nil
}

func (w *Worker) initialize(ctx context.Context) error {
	ok, err := w.cfg.Store.Initialized(ctx)
	if err != nil {
		return errors.Wrap(err, "check redis")
	}
	if ok {
		return nil
	}
	// A topic just created may not have its partition leaders known yet:
	// retry what is transient for a while.
	var empty bool
	for attempt := 0; ; attempt++ {
		if empty, err = w.eventsTopicEmpty(ctx); err == nil || attempt == 60 {
			break
		}
		select {
		case <-ctx.Done():
			return nil // shutting down
		case <-time.After(500 * time.Millisecond):
		}
	}
	if err != nil {
		return err
	}
	if empty {
		w.log.Info("initialising redis for arbiter: no marker yet and no events ever published")
		return w.cfg.Store.Init(ctx)
	}
	// Another worker may have initialised a fresh deployment and published
	// events since the first look: it writes the marker before its first
	// compare-and-set, so a marker written before those events is seen now.
	if ok, err := w.cfg.Store.Initialized(ctx); err != nil || ok {
		return errors.Wrap(err, "check redis")
	}
	w.waitForRebuild(ctx, "", nil)
	return nil
}

func (w *Worker) eventsTopicEmpty(ctx context.Context) (bool, error) {
	client, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(w.cfg.Brokers...), kgo.ClientID(defaultClientID)}, w.cfg.KafkaOptions...)...)
	if err != nil {
		return false, errors.Wrap(err, "create a Kafka client")
	}
	defer client.Close()
	admin := kadm.NewClient(client)
	starts, err := admin.ListStartOffsets(ctx, w.cfg.EventsTopic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return false, errors.Wrapf(err, "list the offsets of topic %s", w.cfg.EventsTopic)
	}
	ends, err := admin.ListEndOffsets(ctx, w.cfg.EventsTopic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return false, errors.Wrapf(err, "list the offsets of topic %s", w.cfg.EventsTopic)
	}
	// An events topic whose records were all deleted (retention) is empty
	// but not fresh: only one that never held a record is.
	empty := true
	ends.Each(func(end kadm.ListedOffset) {
		if start, ok := starts.Lookup(end.Topic, end.Partition); !ok || start.Offset != 0 || end.Offset != 0 {
			empty = false
		}
	})
	return empty, nil
}

// waitForRebuild blocks until 'arbiter rebuild-versions' wrote the amnesia
// marker anew (a value other than the one the worker decided under) or ctx
// ends, saying why every 30 seconds. transactionalID names the waiting
// session (empty before they start); cause is what was found.
func (w *Worker) waitForRebuild(ctx context.Context, transactionalID string, cause error) {
	w.stats.AmnesiaWaits.Add(1)
	w.cfg.Observer.ObserveSession(SessionObservation{TransactionalID: transactionalID, State: SessionWaitingForRebuild})
	defer w.cfg.Observer.ObserveSession(SessionObservation{TransactionalID: transactionalID, State: SessionResumed})
	said := time.Time{}
	for {
		if time.Since(said) >= 30*time.Second {
			w.log.Error("processing stopped: "+versionstore.ErrAmnesia.Error()+"; the worker resumes by itself once the rebuild is done",
				zap.String("events_topic", w.cfg.EventsTopic), zap.String("found", errorText(cause)))
			said = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
		ok, err := w.cfg.Store.Initialized(ctx)
		var generation string
		if err == nil && ok {
			generation, err = w.cfg.Store.Generation(ctx)
		}
		if err != nil {
			w.log.Warn("cannot check redis for the initialization marker", zap.String("error", err.Error()))
			continue
		}
		if ok && generation != w.currentGeneration() {
			w.generation.Store(&generation)
			w.log.Info("redis holds arbiter's data again; processing resumes")
			return
		}
	}
}

func errorText(err error) string {
	if err == nil {
		return "no initialization marker"
	}
	return err.Error()
}
