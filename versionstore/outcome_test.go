package versionstore

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/cockroachdb/errors"
	"pgregory.net/rapid"
)

// sameOutcome reports how got differs from want, "" when they are the same
// outcome. Record values are compared byte for byte; a nil and an empty slice
// are the same (the encoding cannot tell them apart).
func sameOutcome(got, want Outcome) string {
	switch {
	case got.CommandID != want.CommandID:
		return fmt.Sprintf("CommandID = %q, want %q", got.CommandID, want.CommandID)
	case got.Partition != want.Partition:
		return fmt.Sprintf("Partition = %d, want %d", got.Partition, want.Partition)
	case got.Offset != want.Offset:
		return fmt.Sprintf("Offset = %d, want %d", got.Offset, want.Offset)
	case got.Applied != want.Applied:
		return fmt.Sprintf("Applied = %t, want %t", got.Applied, want.Applied)
	case got.Reason != want.Reason:
		return fmt.Sprintf("Reason = %q, want %q", got.Reason, want.Reason)
	case got.Version != want.Version:
		return fmt.Sprintf("Version = %d, want %d", got.Version, want.Version)
	case len(got.Records) != len(want.Records):
		return fmt.Sprintf("%d records, want %d", len(got.Records), len(want.Records))
	}
	for i := range want.Records {
		if got.Records[i].Kind != want.Records[i].Kind {
			return fmt.Sprintf("record %d: Kind = %q, want %q", i, got.Records[i].Kind, want.Records[i].Kind)
		}
		if !bytes.Equal(got.Records[i].Value, want.Records[i].Value) {
			return fmt.Sprintf("record %d: Value = %q, want %q", i, got.Records[i].Value, want.Records[i].Value)
		}
	}
	return ""
}

// outcomeExamples are outcomes the processor records, and the edges of each
// field.
var outcomeExamples = []struct {
	name    string
	outcome Outcome
}{
	{name: "zero", outcome: Outcome{}},
	{name: "applied with events", outcome: Outcome{
		CommandID: "c-1", Partition: 3, Offset: 1234, Applied: true, Version: 7,
		Records: []OutcomeRecord{
			{Kind: KindEvent, Value: []byte(`{"id":"prod-123@6","type":"StockIncreased"}`)},
			{Kind: KindEvent, Value: []byte(`{"id":"prod-123@7","type":"PriceReduced"}`)},
		},
	}},
	{name: "version conflict", outcome: Outcome{
		CommandID: "c-2", Partition: 0, Offset: 0, Reason: "version_conflict", Version: 6,
		Records: []OutcomeRecord{{Kind: KindConflict, Value: []byte(`{"reason":"version_conflict"}`)}},
	}},
	{name: "no records", outcome: Outcome{CommandID: "c-3", Reason: "rejected", Records: []OutcomeRecord{}}},
	{name: "empty record values", outcome: Outcome{Records: []OutcomeRecord{{Kind: KindEvent}, {Kind: KindConflict, Value: []byte{}}}}},
	{name: "extreme numbers", outcome: Outcome{Partition: math.MaxInt32, Offset: math.MaxInt64, Version: math.MaxInt64}},
	{name: "negative numbers", outcome: Outcome{Partition: math.MinInt32, Offset: math.MinInt64, Version: math.MinInt64}},
	{name: "binary values and unicode reason", outcome: Outcome{
		Reason:  "rejected: prix ≤ 0 \x00\xff",
		Records: []OutcomeRecord{{Kind: 0, Value: []byte{0, 1, 0xff, 0x80}}, {Kind: 0xff, Value: bytes.Repeat([]byte{0x80}, 300)}},
	}},
	{name: "long reason", outcome: Outcome{Reason: events.Reason(bytes.Repeat([]byte("r"), 1<<16))}},
	{name: "many records", outcome: Outcome{Applied: true, Records: func() []OutcomeRecord {
		records := make([]OutcomeRecord, 200)
		for i := range records {
			records[i] = OutcomeRecord{Kind: KindEvent, Value: []byte(fmt.Sprintf(`{"version":%d}`, i))}
		}
		return records
	}()}},
}

func TestOutcomeRoundTrip(t *testing.T) {
	for _, tt := range outcomeExamples {
		t.Run(tt.name, func(t *testing.T) {
			encoded := encodeOutcome(tt.outcome)
			decoded, err := decodeOutcome(tt.outcome.CommandID, encoded)
			if err != nil {
				t.Fatalf("decodeOutcome(encodeOutcome(%+v)) failed: %v; every encoded outcome must decode", tt.outcome, err)
			}
			if diff := sameOutcome(decoded, tt.outcome); diff != "" {
				t.Errorf("outcome did not survive encode/decode: %s", diff)
			}
			if again := encodeOutcome(decoded); !bytes.Equal(again, encoded) {
				t.Errorf("re-encoding a decoded outcome gave %x, want the original %x", again, encoded)
			}
		})
	}
}

// TestDecodeOutcomeRecordsDoNotOverlap guards the capacity limit of decoded
// values: they share the input buffer, so appending to one must not write
// over the next.
func TestDecodeOutcomeRecordsDoNotOverlap(t *testing.T) {
	want := Outcome{Reason: "r", Records: []OutcomeRecord{{Kind: KindEvent, Value: []byte("first")}, {Kind: KindEvent, Value: []byte("second")}}}
	decoded, err := decodeOutcome("", encodeOutcome(want))
	if err != nil {
		t.Fatal(err)
	}
	_ = append(decoded.Records[0].Value, "XXXXXXXX"...)
	_ = append([]byte(decoded.Reason), "XX"...)
	if diff := sameOutcome(decoded, want); diff != "" {
		t.Errorf("appending to a decoded record value changed another field: %s", diff)
	}
}

func outcomeGenerator() *rapid.Generator[Outcome] {
	record := rapid.Custom(func(t *rapid.T) OutcomeRecord {
		return OutcomeRecord{
			Kind:  RecordKind(rapid.OneOf(rapid.SampledFrom([]byte{byte(KindEvent), byte(KindConflict)}), rapid.Byte()).Draw(t, "kind")),
			Value: rapid.SliceOfN(rapid.Byte(), 0, 300).Draw(t, "value"),
		}
	})
	return rapid.Custom(func(t *rapid.T) Outcome {
		return Outcome{
			CommandID: rapid.String().Draw(t, "commandID"),
			Partition: rapid.Int32().Draw(t, "partition"),
			Offset:    rapid.Int64().Draw(t, "offset"),
			Applied:   rapid.Bool().Draw(t, "applied"),
			Reason:    events.Reason(rapid.SliceOfN(rapid.Byte(), 0, 200).Draw(t, "reason")),
			Version:   rapid.Int64().Draw(t, "version"),
			Records:   rapid.SliceOfN(record, 0, 20).Draw(t, "records"),
		}
	})
}

func TestOutcomeRoundTripProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		outcome := outcomeGenerator().Draw(t, "outcome")
		encoded := encodeOutcome(outcome)
		decoded, err := decodeOutcome(outcome.CommandID, encoded)
		if err != nil {
			t.Fatalf("an encoded outcome does not decode: %v", err)
		}
		if diff := sameOutcome(decoded, outcome); diff != "" {
			t.Fatalf("outcome did not survive encode/decode: %s", diff)
		}
		if again := encodeOutcome(decoded); !bytes.Equal(again, encoded) {
			t.Fatalf("re-encoding a decoded outcome gave %x, want the original %x", again, encoded)
		}
	})
}

// TestDecodeOutcomeTruncated cuts encoded outcomes at every byte: no strict
// prefix of an outcome is an outcome.
func TestDecodeOutcomeTruncated(t *testing.T) {
	for _, tt := range outcomeExamples {
		t.Run(tt.name, func(t *testing.T) {
			encoded := encodeOutcome(tt.outcome)
			for n := range len(encoded) {
				if _, err := decodeOutcome("c", encoded[:n]); !errors.Is(err, errCorruptOutcome) {
					t.Fatalf("decodeOutcome of the first %d of %d bytes returned %v, want an error wrapping errCorruptOutcome", n, len(encoded), err)
				}
			}
		})
	}
}

func TestDecodeOutcomeTruncatedProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		encoded := encodeOutcome(outcomeGenerator().Draw(t, "outcome"))
		n := rapid.IntRange(0, len(encoded)-1).Draw(t, "cut")
		if _, err := decodeOutcome("c", encoded[:n]); !errors.Is(err, errCorruptOutcome) {
			t.Fatalf("decodeOutcome of the first %d of %d bytes returned %v, want an error wrapping errCorruptOutcome", n, len(encoded), err)
		}
	})
}

// outcomeBytes builds an encoded outcome by hand: a header (format 1,
// partition 0, offset 0, version 0, not applied) then the given parts.
func outcomeBytes(parts ...[]byte) []byte {
	buf := []byte{outcomeFormat, 0, 0, 0, 0}
	for _, part := range parts {
		buf = append(buf, part...)
	}
	return buf
}

func uvarint(v uint64) []byte { return binary.AppendUvarint(nil, v) }

func TestDecodeOutcomeCorrupt(t *testing.T) {
	valid := encodeOutcome(outcomeExamples[1].outcome)
	tests := []struct {
		name  string
		input []byte
	}{
		{name: "nil", input: nil},
		{name: "empty", input: []byte{}},
		{name: "format 0", input: []byte{0, 0, 0, 0, 0, 0, 0}},
		{name: "format 2", input: append([]byte{2}, valid[1:]...)},
		{name: "format 0xff", input: append([]byte{0xff}, valid[1:]...)},
		{name: "varint overflow in partition", input: append([]byte{outcomeFormat}, bytes.Repeat([]byte{0xff}, 11)...)},
		{name: "header without applied byte", input: []byte{outcomeFormat, 0, 0, 0}},
		{name: "reason length 2^63", input: outcomeBytes(uvarint(1<<63), []byte("abc"), uvarint(0))},
		{name: "reason length max uint64", input: outcomeBytes(uvarint(math.MaxUint64))},
		{name: "reason length one too many", input: outcomeBytes(uvarint(4), []byte("abc"))},
		{name: "reason length overflows uvarint", input: outcomeBytes(bytes.Repeat([]byte{0xff}, 10), []byte{1})},
		{name: "record count max uint64", input: outcomeBytes(uvarint(0), uvarint(math.MaxUint64))},
		{name: "record count 2^40", input: outcomeBytes(uvarint(0), uvarint(1<<40), []byte{'e', 0})},
		{name: "record count one too many", input: outcomeBytes(uvarint(0), uvarint(2), []byte{'e', 1, 'x'})},
		{name: "record count equal to the bytes left", input: outcomeBytes(uvarint(0), uvarint(2), []byte{'e', 0})},
		{name: "record value length max uint64", input: outcomeBytes(uvarint(0), uvarint(1), []byte{'e'}, uvarint(math.MaxUint64))},
		{name: "record value length 2^62", input: outcomeBytes(uvarint(0), uvarint(1), []byte{'e'}, uvarint(1<<62), []byte("abc"))},
		{name: "record value length one too many", input: outcomeBytes(uvarint(0), uvarint(1), []byte{'e'}, uvarint(4), []byte("abc"))},
		{name: "record without its length", input: outcomeBytes(uvarint(0), uvarint(1), []byte{'e'})},
		{name: "one trailing byte", input: append(bytes.Clone(valid), 0)},
		{name: "many trailing bytes", input: append(bytes.Clone(valid), bytes.Repeat([]byte{0xff}, 1000)...)},
		{name: "a second outcome after the first", input: append(bytes.Clone(valid), valid...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			outcome, err := decodeOutcome("c-9", tt.input)
			if !errors.Is(err, errCorruptOutcome) {
				t.Fatalf("decodeOutcome(%x) = %+v, %v; want an error wrapping errCorruptOutcome", tt.input, outcome, err)
			}
			if outcome.CommandID != "c-9" {
				t.Errorf("decodeOutcome error result has CommandID %q, want the key's command ID %q", outcome.CommandID, "c-9")
			}
		})
	}
}

// TestDecodeOutcomeRejectsNonCanonical lists inputs the fuzzer found that
// decode although encodeOutcome never writes them: decoding then re-encoding
// changes the bytes, so a corrupt record is read as some other outcome.
func TestDecodeOutcomeRejectsNonCanonical(t *testing.T) {
	tests := []struct {
		name  string
		input []byte
	}{
		{
			name:  "applied byte 2",
			input: []byte{outcomeFormat, 0, 0, 0, 2, 0, 0},
		},
		{
			name:  "overlong varint for partition 0",
			input: []byte{outcomeFormat, 0x80, 0x00, 0, 0, 0, 0, 0},
		},
		{
			name:  "overlong uvarint for the reason length",
			input: []byte{outcomeFormat, 0, 0, 0, 0, 0x80, 0x00, 0},
		},
		{
			name:  "partition 2^31 out of int32 range",
			input: append(append([]byte{outcomeFormat}, binary.AppendVarint(nil, 1<<31)...), 0, 0, 0, 0, 0),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			outcome, err := decodeOutcome("c", tt.input)
			var broken string
			switch {
			case err == nil && !bytes.Equal(encodeOutcome(outcome), tt.input):
				broken = fmt.Sprintf("decodeOutcome accepted %x as %+v, which encodes as %x: a decoded outcome must re-encode to the bytes it came from", tt.input, outcome, encodeOutcome(outcome))
			case err != nil && !errors.Is(err, errCorruptOutcome):
				broken = fmt.Sprintf("decodeOutcome(%x) returned %v, want an error wrapping errCorruptOutcome", tt.input, err)
			}
			checkBroken(t, broken)
		})
	}
}

// checkBroken fails the test when broken names a broken invariant.
func checkBroken(t *testing.T, broken string) {
	t.Helper()
	if broken != "" {
		t.Error(broken)
	}
}

// FuzzDecodeOutcome checks that decodeOutcome never panics, fails only with
// errCorruptOutcome, and accepts only what encodeOutcome writes: a decoded
// outcome re-encodes to the same bytes. The seed corpus is in
// testdata/fuzz/FuzzDecodeOutcome.
func FuzzDecodeOutcome(f *testing.F) {
	for _, tt := range outcomeExamples[:4] {
		f.Add(encodeOutcome(tt.outcome))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		outcome, err := decodeOutcome("c", data)
		if err != nil {
			if !errors.Is(err, errCorruptOutcome) {
				t.Fatalf("decodeOutcome(%x) returned %v, want an error wrapping errCorruptOutcome", data, err)
			}
			return
		}
		if again := encodeOutcome(outcome); !bytes.Equal(again, data) {
			t.Fatalf("decodeOutcome accepted %x as %+v, which encodes as %x: a decoded outcome must re-encode to the bytes it came from", data, outcome, again)
		}
	})
}

// TestEncodingIsStable pins the bytes of recorded outcomes and decisions:
// deployed Redis instances hold them, and a replay re-publishes what they
// decode to, so the reason and kind codes must never change with the events
// vocabulary they stand for.
func TestEncodingIsStable(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{name: "applied decision", got: encodeDecision(Decision{Applied: true, Partition: 1, Offset: 2, Version: 3}), want: "61020406"},
		{name: "version conflict decision", got: encodeDecision(Decision{Reason: events.ReasonVersionConflict, Partition: 1, Offset: 2, Version: 3}), want: "76020406"},
		{name: "rejected decision", got: encodeDecision(Decision{Reason: events.ReasonRejected, Partition: 1, Offset: 2, Version: 3}), want: "72020406"},
		{name: "duplicate decision", got: encodeDecision(Decision{Reason: events.ReasonDuplicate, Partition: 1, Offset: 2, Version: 3}), want: "6f0204066475706c6963617465"},
		{name: "applied outcome", got: encodeOutcome(Outcome{Applied: true, Partition: 1, Offset: 2, Version: 3, Records: []OutcomeRecord{{Kind: KindEvent, Value: []byte("e1")}}}), want: "0102040601000165026531"},
		{name: "conflict outcome", got: encodeOutcome(Outcome{Reason: events.ReasonRejected, Partition: 1, Offset: 2, Version: 3, Records: []OutcomeRecord{{Kind: KindConflict, Value: []byte("c")}}}), want: "01020406000872656a6563746564016301 63"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fmt.Sprintf("%x", tt.got); got != strings.ReplaceAll(tt.want, " ", "") {
				t.Errorf("encoded %s, want %s: the encoding in Redis changed", got, tt.want)
			}
		})
	}
}

func TestRecordKindNamesTheEventsKind(t *testing.T) {
	for kind, want := range map[RecordKind]string{KindEvent: events.KindEvent, KindConflict: events.KindConflict} {
		if got := kind.String(); got != want {
			t.Errorf("RecordKind %q names itself %q, want %q", byte(kind), got, want)
		}
	}
}
