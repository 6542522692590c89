package bench

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
)

// SweepReport is throughput and latency against offered load, for the
// batched configuration and the baseline.
type SweepReport struct {
	Points []SweepPoint `json:"points"`
	// Peaks are the saturation throughputs the offered loads are
	// fractions of, by label.
	Peaks map[string]float64 `json:"peaks"`
}

// SweepPoint is one fixed-rate run of a sweep.
type SweepPoint struct {
	Label       string  `json:"label"`
	Fraction    float64 `json:"fraction"`
	OfferedRate float64 `json:"offered_rate"`
	Commands    int     `json:"commands"`
	Throughput  float64 `json:"throughput"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	MaxMs       float64 `json:"max_ms"`
	// MeanBatch is the mean number of records per transaction: at low
	// load a batch is whatever arrived during the previous cycle.
	MeanBatch float64 `json:"mean_batch"`
}

func (b *bencher) sweep(ctx context.Context, report *Report) (*SweepReport, error) {
	sweep := &SweepReport{Peaks: map[string]float64{}}
	configs := []struct {
		label string
		batch int
		peak  float64
	}{{"batched", b.cfg.Batch, report.Batched.Throughput}}
	if report.Baseline != nil {
		configs = append(configs, struct {
			label string
			batch int
			peak  float64
		}{"baseline", 1, report.Baseline.Throughput})
	}
	for _, c := range configs {
		sweep.Peaks[c.label] = c.peak
		for _, fraction := range b.cfg.Sweep {
			rate := fraction * c.peak
			n := max(int(rate*b.cfg.SweepDuration.Seconds()), 100)
			run, err := b.run(ctx, runParams{label: fmt.Sprintf("%s sweep %.0f%%", c.label, fraction*100), n: n, batch: c.batch, rate: rate})
			if err != nil {
				return nil, err
			}
			sweep.Points = append(sweep.Points, SweepPoint{
				Label: c.label, Fraction: fraction, OfferedRate: rate, Commands: n,
				Throughput: run.Throughput, P50Ms: run.Latency.P50Ms, P99Ms: run.Latency.P99Ms, MaxMs: run.Latency.MaxMs,
				MeanBatch: run.MeanBatch,
			})
		}
	}
	return sweep, nil
}

// WriteTable prints the sweep's points.
func (s *SweepReport) WriteTable(w io.Writer) {
	fmt.Fprintln(w, "throughput and latency against offered load:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "config\tof peak\toffered/s\tcommands\tthroughput/s\tp50\tp99\tmax\trecords/transaction\t")
	for _, p := range s.Points {
		fmt.Fprintf(tw, "%s\t%.0f%%\t%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t\n", p.Label, p.Fraction*100, fmtCount(p.OfferedRate),
			fmtCount(float64(p.Commands)), fmtCount(p.Throughput), fmtMillis(p.P50Ms), fmtMillis(p.P99Ms), fmtMillis(p.MaxMs), p.MeanBatch)
	}
	_ = tw.Flush()
}
