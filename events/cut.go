package events

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"unicode/utf8"
)

// Limits on what a conflict record echoes from the command record it answers,
// so that every conflict record stays small whatever the input.
const (
	// MaxEchoedIDBytes is the longest aggregate ID, command ID or record key
	// a conflict record (its value, key and headers) carries, in bytes of
	// UTF-8. Valid commands never exceed it.
	MaxEchoedIDBytes = 256
	// MaxMessageBytes is the longest Message of a conflict record, in bytes.
	MaxMessageBytes = 1024
)

// Cut says that a field of a conflict record holds a shortened copy of what
// the command record carried, and identifies the original so that its sender
// can still match the record to the command: the original's length and the
// SHA-256 of its bytes.
type Cut struct {
	// Field names the conflict field that was cut: "aggregateId" (which is
	// also the record key; for an invalid record without an aggregate ID,
	// the original is the command record's key), "commandId" or "message".
	Field string `json:"field"`
	// Length is the original's length in bytes.
	Length int `json:"length"`
	// SHA256 is the hex SHA-256 of the original's bytes.
	SHA256 string `json:"sha256"`
}

// CutString returns value unchanged when it is valid UTF-8 of at most max
// bytes. Otherwise it returns a prefix of at most max bytes of valid UTF-8
// (invalid bytes replaced by U+FFFD, cut at a character boundary) and a Cut
// describing the original.
func CutString(field, value string, max int) (string, *Cut) {
	if len(value) <= max && utf8.ValidString(value) {
		return value, nil
	}
	sum := sha256.Sum256([]byte(value))
	cut := &Cut{Field: field, Length: len(value), SHA256: hex.EncodeToString(sum[:])}
	// Only the prefix that can survive is converted: a 200,000-byte key of
	// invalid bytes costs no more than a short one.
	end := min(len(value), max)
	for back := 0; end < len(value) && end > 0 && back < utf8.UTFMax && !utf8.RuneStart(value[end]); back++ {
		end-- // not in the middle of a character
	}
	prefix := value[:end]
	short := strings.ToValidUTF8(prefix, "\uFFFD")
	for len(short) > max {
		_, size := utf8.DecodeLastRuneInString(short)
		short = short[:len(short)-size]
	}
	return short, cut
}
