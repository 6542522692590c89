package bench

import (
	"math/rand/v2"
	"strconv"

	"github.com/arbiter-cqrs/arbiter/examples/product"
)

// expectedKind is the outcome the workload generator knows a command must
// get: it tracks every aggregate's version as the worker will.
type expectedKind uint8

const (
	expectApplied expectedKind = iota + 1
	expectVersionConflict
)

// workload is the generated load: command record values in the order they
// are produced, each with its aggregate and the outcome it must get.
type workload struct {
	// runTag starts every command ID: "<runTag>-<seq>".
	runTag     string
	values     [][]byte
	keys       [][]byte
	aggregate  []int32
	expected   []expectedKind
	stale      int
	aggregates int
}

// generateWorkload makes n Product commands over the given number of
// aggregates, each picked uniformly at random. A share of them is stale:
// they carry an expectedVersion the aggregate has already left (or, for an
// aggregate not created yet, one it has not reached), and must become
// version_conflict records. The others carry the exact version a well-behaved
// sender would have read, and must be applied: the first command of an
// aggregate creates it, later ones change its price or raise its stock to a
// value derived from the version, which always differs from the current one.
func generateWorkload(seed uint64, runTag string, n, aggregates int, staleShare float64) *workload {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	w := &workload{
		runTag:     runTag,
		values:     make([][]byte, n),
		keys:       make([][]byte, aggregates),
		aggregate:  make([]int32, n),
		expected:   make([]expectedKind, n),
		aggregates: aggregates,
	}
	for a := range w.keys {
		w.keys[a] = []byte("prod-" + strconv.Itoa(a))
	}
	// The generator's copy of each aggregate's version: a fresh command's
	// new price or stock derives from it, so it differs from the current
	// one and the command is applied.
	versions := make([]int64, aggregates)
	buf := make([]byte, 0, 256)
	for seq := range n {
		a := rng.IntN(aggregates)
		version := &versions[a]
		stale := rng.Float64() < staleShare
		var expectedVersion int64
		switch {
		case stale && *version == 0:
			expectedVersion = 1 + rng.Int64N(3)
		case stale:
			expectedVersion = rng.Int64N(*version)
		default:
			expectedVersion = *version
		}
		buf = buf[:0]
		buf = append(buf, `{"id":"`...)
		buf = append(buf, runTag...)
		buf = append(buf, '-')
		buf = strconv.AppendInt(buf, int64(seq), 10)
		buf = append(buf, `","aggregateId":"`...)
		buf = append(buf, w.keys[a]...)
		buf = append(buf, `","type":"`...)
		switch {
		case expectedVersion == 0:
			buf = append(buf, product.CreateProductType...)
			buf = append(buf, `","expectedVersion":0,"payload":{"name":"Product `...)
			buf = strconv.AppendInt(buf, int64(a), 10)
			buf = append(buf, `","price":10,"stock":100}`...)
		case rng.IntN(2) == 0:
			buf = append(buf, product.ChangePriceType...)
			buf = append(buf, `","expectedVersion":`...)
			buf = strconv.AppendInt(buf, expectedVersion, 10)
			buf = append(buf, `,"payload":{"newPrice":`...)
			buf = strconv.AppendInt(buf, 11+expectedVersion, 10)
			buf = append(buf, `.5}`...)
		default:
			buf = append(buf, product.IncreaseStockType...)
			buf = append(buf, `","expectedVersion":`...)
			buf = strconv.AppendInt(buf, expectedVersion, 10)
			buf = append(buf, `,"payload":{"newStock":`...)
			buf = strconv.AppendInt(buf, 101+expectedVersion, 10)
			buf = append(buf, '}')
		}
		buf = append(buf, `,"metadata":{"user":"bench","source":"arbiter-bench"}}`...)
		w.values[seq] = append([]byte(nil), buf...)
		w.aggregate[seq] = int32(a)
		if stale {
			w.expected[seq] = expectVersionConflict
			w.stale++
		} else {
			w.expected[seq] = expectApplied
			*version++
		}
	}
	return w
}

// commandID is the ID of command seq.
func (w *workload) commandID(seq int) string {
	return w.runTag + "-" + strconv.Itoa(seq)
}

// seqOf parses a command ID of this workload back into its sequence number;
// -1 when it is not one.
func (w *workload) seqOf(commandID []byte) int {
	if len(commandID) <= len(w.runTag)+1 || string(commandID[:len(w.runTag)]) != w.runTag || commandID[len(w.runTag)] != '-' {
		return -1
	}
	seq := 0
	for _, c := range commandID[len(w.runTag)+1:] {
		if c < '0' || c > '9' {
			return -1
		}
		seq = seq*10 + int(c-'0')
		if seq >= len(w.values) {
			return -1
		}
	}
	return seq
}
