package bench

import (
	"context"
	"sync"
	"time"

	"github.com/arbiter-cqrs/arbiter/processor"
)

// The phases of a worker's batch cycle, as the processor hooks mark them.
var phaseNames = [...]string{
	"poll (waiting for records)",
	"decode, Redis load, decide",
	"Redis compare-and-set",
	"produce and flush outcomes",
	"commit transaction",
}

// phaseTimer times the phases of one session's batches through the
// processor hooks. Hooks carry no session, so it is only wired for workers
// with one session each.
type phaseTimer struct {
	mu     sync.Mutex
	marks  [len(phaseNames) + 1]time.Time // end of the previous batch, then the end of each phase
	hist   [len(phaseNames)]*Histogram
	total  [len(phaseNames)]time.Duration
	counts int64
}

func newPhaseTimer() *phaseTimer {
	p := &phaseTimer{}
	for i := range p.hist {
		p.hist[i] = NewHistogram()
	}
	return p
}

func (p *phaseTimer) mark(i int) func(context.Context, processor.BatchParams) {
	return func(context.Context, processor.BatchParams) {
		p.mu.Lock()
		defer p.mu.Unlock()
		now := time.Now()
		p.marks[i] = now
		if i < len(p.marks)-1 {
			return
		}
		// AfterBatch: every phase of the batch is marked unless a hook was
		// skipped (a batch with nothing to commit, or an abort).
		complete := true
		for j := 1; j < len(p.marks); j++ {
			if p.marks[j].IsZero() || p.marks[j].Before(p.marks[j-1]) {
				complete = false
			}
		}
		if complete && !p.marks[0].IsZero() {
			for j := range phaseNames {
				d := p.marks[j+1].Sub(p.marks[j])
				p.hist[j].Record(d)
				p.total[j] += d
			}
			p.counts++
		}
		clear(p.marks[:])
		p.marks[0] = now
	}
}

// wire sets the hooks of a worker configuration.
func (p *phaseTimer) wire(hooks *processor.Hooks) {
	hooks.AfterPoll = p.mark(1)
	hooks.BeforeRedisCommit = p.mark(2)
	hooks.AfterRedisCommit = p.mark(3)
	hooks.BeforeEnd = p.mark(4)
	hooks.AfterBatch = p.mark(5)
}

// PhaseReport is where the workers' batch cycles spent their time.
type PhaseReport struct {
	Phase string `json:"phase"`
	// Share is the phase's part of the timed cycles' time.
	Share  float64 `json:"share"`
	MeanMs float64 `json:"mean_ms"`
	P99Ms  float64 `json:"p99_ms"`
	MaxMs  float64 `json:"max_ms"`
}

// phaseReports merges the timers of several workers.
func phaseReports(timers []*phaseTimer) []PhaseReport {
	if len(timers) == 0 {
		return nil
	}
	var hist [len(phaseNames)]*Histogram
	var total [len(phaseNames)]time.Duration
	var all time.Duration
	for i := range hist {
		hist[i] = NewHistogram()
	}
	for _, t := range timers {
		t.mu.Lock()
		for i := range hist {
			hist[i].Merge(t.hist[i])
			total[i] += t.total[i]
			all += t.total[i]
		}
		t.mu.Unlock()
	}
	if all == 0 {
		return nil
	}
	out := make([]PhaseReport, len(phaseNames))
	for i, name := range phaseNames {
		out[i] = PhaseReport{
			Phase: name, Share: float64(total[i]) / float64(all),
			MeanMs: ms(hist[i].Mean()), P99Ms: ms(hist[i].Percentile(99)), MaxMs: ms(hist[i].Max()),
		}
	}
	return out
}
