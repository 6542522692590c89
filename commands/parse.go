package commands

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
)

// Parse reads one command from its JSON form, as a line of a JSONL file or
// a command record's value, with the worker's own rules (Decode): a missing
// expectedVersion, a fraction or a missing field is an *InvalidError. The
// record key is taken to be the command's aggregateId.
func Parse(value []byte) (Command, error) {
	var ids struct {
		AggregateID string `json:"aggregateId"`
	}
	// Any error is Decode's to report, with its full reason.
	_ = json.Unmarshal(value, &ids)
	return Decode([]byte(ids.AggregateID), value, 0)
}

// NewID returns a random command ID, a UUID version 4 in its usual text
// form. Give each command a new ID, and a resend of the same command the same
// ID: the ID is the idempotency key.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:], b[10:])
	return string(out[:])
}
