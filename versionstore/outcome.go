package versionstore

import (
	"encoding/binary"
	"strconv"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/cockroachdb/errors"
)

// RecordKind says which topic a recorded record goes to: it is the one-byte
// code under which an outcome record of events.KindEvent or
// events.KindConflict is stored.
type RecordKind byte

// The kinds of recorded records; the codes are stored in Redis and must not
// change.
const (
	// KindEvent (events.KindEvent) goes to the events topic.
	KindEvent RecordKind = 'e'
	// KindConflict (events.KindConflict) goes to the conflicts topic.
	KindConflict RecordKind = 'c'
)

// String returns the kind's name in the events vocabulary, the value of
// its records' events.HeaderKind header.
func (k RecordKind) String() string {
	switch k {
	case KindEvent:
		return events.KindEvent
	case KindConflict:
		return events.KindConflict
	}
	return "kind " + strconv.Quote(string(rune(k)))
}

// OutcomeRecord is one encoded record of a decided outcome, kept byte for
// byte so that a replay publishes exactly what was decided.
type OutcomeRecord struct {
	Kind  RecordKind
	Value []byte
}

// Outcome is what was decided for one command, recorded under its command ID
// atomically with the version advance it caused.
type Outcome struct {
	// CommandID is the command's ID.
	CommandID string
	// Partition and Offset locate the command record that was decided. A
	// replay of the same record re-publishes the outcome; another record
	// with the same command ID is a duplicate.
	Partition int32
	Offset    int64
	// Applied is true when the command's events were appended.
	Applied bool
	// Reason is the conflict reason when the command was not applied.
	Reason events.Reason
	// Version is the aggregate's version after the outcome: the last
	// event's version when applied, the actual version otherwise.
	Version int64
	// Records are the encoded records to publish, in order.
	Records []OutcomeRecord
}

const outcomeFormat = 1

// encodeOutcome encodes an outcome compactly. The command ID is not stored:
// it is in the key.
func encodeOutcome(o Outcome) []byte {
	size := 1 + 3*binary.MaxVarintLen64 + 1 + len(o.Reason) + binary.MaxVarintLen64
	for _, r := range o.Records {
		size += 1 + binary.MaxVarintLen64 + len(r.Value)
	}
	buf := make([]byte, 0, size)
	buf = append(buf, outcomeFormat)
	buf = binary.AppendVarint(buf, int64(o.Partition))
	buf = binary.AppendVarint(buf, o.Offset)
	buf = binary.AppendVarint(buf, o.Version)
	if o.Applied {
		buf = append(buf, 1)
	} else {
		buf = append(buf, 0)
	}
	buf = binary.AppendUvarint(buf, uint64(len(o.Reason)))
	buf = append(buf, o.Reason...)
	buf = binary.AppendUvarint(buf, uint64(len(o.Records)))
	for _, r := range o.Records {
		buf = append(buf, byte(r.Kind))
		buf = binary.AppendUvarint(buf, uint64(len(r.Value)))
		buf = append(buf, r.Value...)
	}
	return buf
}

var errCorruptOutcome = errors.New("corrupt recorded outcome")

// decodeOutcome is the inverse of encodeOutcome.
func decodeOutcome(commandID string, buf []byte) (Outcome, error) {
	o := Outcome{CommandID: commandID}
	if len(buf) == 0 || buf[0] != outcomeFormat {
		return o, errors.Wrapf(errCorruptOutcome, "command %s: unknown format", commandID)
	}
	buf = buf[1:]
	varint := func() (int64, bool) {
		v, n := binary.Varint(buf)
		if n <= 0 || (n > 1 && buf[n-1] == 0) { // only the minimal encoding encodeOutcome writes
			return 0, false
		}
		buf = buf[n:]
		return v, true
	}
	uvarint := func() (uint64, bool) {
		v, n := binary.Uvarint(buf)
		if n <= 0 || (n > 1 && buf[n-1] == 0) {
			return 0, false
		}
		buf = buf[n:]
		return v, true
	}
	take := func(n uint64) ([]byte, bool) {
		if n > uint64(len(buf)) {
			return nil, false
		}
		b := buf[:n:n]
		buf = buf[n:]
		return b, true
	}
	partition, ok1 := varint()
	offset, ok2 := varint()
	version, ok3 := varint()
	if !ok1 || !ok2 || !ok3 || len(buf) == 0 || buf[0] > 1 || partition != int64(int32(partition)) {
		return o, errors.Wrapf(errCorruptOutcome, "command %s: truncated header", commandID)
	}
	o.Partition, o.Offset, o.Version = int32(partition), offset, version
	o.Applied = buf[0] == 1
	buf = buf[1:]
	reasonLen, ok := uvarint()
	if !ok {
		return o, errors.Wrapf(errCorruptOutcome, "command %s: truncated reason", commandID)
	}
	reason, ok := take(reasonLen)
	if !ok {
		return o, errors.Wrapf(errCorruptOutcome, "command %s: truncated reason", commandID)
	}
	o.Reason = events.Reason(reason)
	count, ok := uvarint()
	if !ok || count > uint64(len(buf)) {
		return o, errors.Wrapf(errCorruptOutcome, "command %s: truncated record count", commandID)
	}
	o.Records = make([]OutcomeRecord, 0, count)
	for i := uint64(0); i < count; i++ {
		if len(buf) == 0 {
			return o, errors.Wrapf(errCorruptOutcome, "command %s: truncated record %d", commandID, i)
		}
		kind := RecordKind(buf[0])
		buf = buf[1:]
		n, ok := uvarint()
		if !ok {
			return o, errors.Wrapf(errCorruptOutcome, "command %s: truncated record %d", commandID, i)
		}
		value, ok := take(n)
		if !ok {
			return o, errors.Wrapf(errCorruptOutcome, "command %s: truncated record %d", commandID, i)
		}
		o.Records = append(o.Records, OutcomeRecord{Kind: kind, Value: value})
	}
	if len(buf) != 0 {
		return o, errors.Wrapf(errCorruptOutcome, "command %s: %d trailing bytes", commandID, len(buf))
	}
	return o, nil
}

// Decision is the short, long-lived record of what was decided for one
// command: enough to recognise a replay of the same command record and to
// answer a duplicate, without the published records.
type Decision struct {
	CommandID string
	Partition int32
	Offset    int64
	Applied   bool
	Reason    events.Reason
	Version   int64
}

// Decision returns the outcome's short record.
func (o Outcome) Decision() Decision {
	return Decision{CommandID: o.CommandID, Partition: o.Partition, Offset: o.Offset, Applied: o.Applied, Reason: o.Reason, Version: o.Version}
}

// Reason codes keep the decision record small: the common reasons
// (events.ReasonVersionConflict, events.ReasonRejected) are one byte, any
// other is stored as its text after reasonOther. The codes are stored in
// Redis and must not change.
const (
	reasonApplied         = 'a'
	reasonVersionConflict = 'v'
	reasonRejected        = 'r'
	reasonOther           = 'o'
)

// encodeDecision encodes a decision in a few bytes: reason code, then
// partition, offset and version as varints.
func encodeDecision(d Decision) []byte {
	buf := make([]byte, 0, 1+3*binary.MaxVarintLen64+len(d.Reason))
	switch {
	case d.Applied:
		buf = append(buf, reasonApplied)
	case d.Reason == events.ReasonVersionConflict:
		buf = append(buf, reasonVersionConflict)
	case d.Reason == events.ReasonRejected:
		buf = append(buf, reasonRejected)
	default:
		buf = append(buf, reasonOther)
	}
	buf = binary.AppendVarint(buf, int64(d.Partition))
	buf = binary.AppendVarint(buf, d.Offset)
	buf = binary.AppendVarint(buf, d.Version)
	if buf[0] == reasonOther {
		buf = append(buf, d.Reason...)
	}
	return buf
}

// decodeDecision is the inverse of encodeDecision.
func decodeDecision(commandID string, buf []byte) (Decision, error) {
	d := Decision{CommandID: commandID}
	if len(buf) < 4 {
		return d, errors.Wrapf(errCorruptOutcome, "decision of command %s: %d bytes", commandID, len(buf))
	}
	code := buf[0]
	buf = buf[1:]
	var values [3]int64
	for i := range values {
		v, n := binary.Varint(buf)
		if n <= 0 || (n > 1 && buf[n-1] == 0) {
			return d, errors.Wrapf(errCorruptOutcome, "decision of command %s: bad varint", commandID)
		}
		values[i] = v
		buf = buf[n:]
	}
	if values[0] != int64(int32(values[0])) {
		return d, errors.Wrapf(errCorruptOutcome, "decision of command %s: partition out of range", commandID)
	}
	d.Partition, d.Offset, d.Version = int32(values[0]), values[1], values[2]
	switch code {
	case reasonApplied:
		d.Applied = true
	case reasonVersionConflict:
		d.Reason = events.ReasonVersionConflict
	case reasonRejected:
		d.Reason = events.ReasonRejected
	case reasonOther:
		d.Reason = events.Reason(buf)
		buf = nil
	default:
		return d, errors.Wrapf(errCorruptOutcome, "decision of command %s: unknown reason code %q", commandID, code)
	}
	if len(buf) != 0 {
		return d, errors.Wrapf(errCorruptOutcome, "decision of command %s: %d trailing bytes", commandID, len(buf))
	}
	return d, nil
}
