// Package commands holds the command envelope that services produce to the
// commands topic, its decoding and validation, and the producer that sends
// commands.
package commands

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"

	"github.com/cockroachdb/errors"
)

// Special expectedVersion values. A value N >= 0 is an exact check: the
// command is applied only when the aggregate is at version N (0 meaning the
// aggregate must not exist yet).
const (
	// AnyVersion accepts the aggregate at any version, including one that
	// does not exist yet. Only handlers that declare it allow it.
	AnyVersion int64 = -1
	// MustExist accepts the aggregate at any version >= 1. Only handlers
	// that declare it allow it.
	MustExist int64 = -2
)

// OnConflict values: what a worker does with a command that arrives stale,
// its expectedVersion N >= 0 below the aggregate's version.
const (
	// OnConflictStrict (the default, also written as an absent field)
	// answers a stale command with a version_conflict.
	OnConflictStrict = "strict"
	// OnConflictRebase decides a stale command again on the aggregate's
	// current state when none of the events written since its
	// expectedVersion is of a type its handler declared that its decision
	// depends on (or its handler's resolver accepts them); its events then
	// carry rebasedFrom. Otherwise it is a version_conflict. A handler that
	// declared nothing never rebases.
	OnConflictRebase = "rebase"
)

// Limits on identifiers. They keep Redis keys and records bounded.
const (
	// MaxIDLength is the longest command ID, aggregate ID or command type
	// accepted, in bytes.
	MaxIDLength = 256
	// DefaultMaxRecordBytes is the default size limit of a command record's
	// value.
	DefaultMaxRecordBytes = 1 << 20
)

// Command is the envelope of one command, as it travels on the commands
// topic. The record key must equal AggregateID.
type Command struct {
	// ID identifies the command; it is the idempotency key. Required.
	ID string `json:"id"`
	// AggregateID names the aggregate the command is for. Required.
	AggregateID string `json:"aggregateId"`
	// Type names the command type, which selects the handler. Required.
	Type string `json:"type"`
	// ExpectedVersion is the aggregate version the sender read. Required;
	// see AnyVersion and MustExist for the relaxed forms.
	ExpectedVersion int64 `json:"expectedVersion"`
	// Payload is the command's data, a JSON value the handler decodes.
	Payload json.RawMessage `json:"payload,omitempty"`
	// Metadata is carried over to the resulting events.
	Metadata map[string]string `json:"metadata,omitempty"`
	// OnConflict is "" or OnConflictStrict (the default), or
	// OnConflictRebase to opt in to being decided again when stale.
	OnConflict string `json:"onConflict,omitempty"`
}

// wireCommand detects a missing expectedVersion, which a plain int64 cannot.
type wireCommand struct {
	ID              string            `json:"id"`
	AggregateID     string            `json:"aggregateId"`
	Type            string            `json:"type"`
	ExpectedVersion json.RawMessage   `json:"expectedVersion"`
	Payload         json.RawMessage   `json:"payload"`
	Metadata        map[string]string `json:"metadata"`
	OnConflict      string            `json:"onConflict"`
}

// ErrInvalid marks a command record that cannot be processed: undecodable,
// missing fields, a key that is not its aggregate ID, or over the size limit.
// Use errors.As with *InvalidError for the details.
var ErrInvalid = errors.New("invalid command")

// InvalidError describes why a command record is invalid. Fields that could
// be read from the record are set.
type InvalidError struct {
	// CommandID is the command's ID, if one could be read.
	CommandID string
	// AggregateID is the aggregate ID, or else the record key.
	AggregateID string
	// Reason says what is wrong, in words meant for the sender.
	Reason string
}

// Error implements error.
func (e *InvalidError) Error() string {
	if e.CommandID != "" {
		return fmt.Sprintf("invalid command %s for aggregate %s: %s", quoteShort(e.CommandID), quoteShort(e.AggregateID), e.Reason)
	}
	return fmt.Sprintf("invalid command record (key %s): %s", quoteShort(e.AggregateID), e.Reason)
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

// Decode parses and validates one command record. key is the record key and
// maxBytes the value's size limit (0 means DefaultMaxRecordBytes). Any problem
// is returned as an *InvalidError.
func Decode(key, value []byte, maxBytes int) (Command, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxRecordBytes
	}
	invalid := func(cmd Command, format string, args ...any) (Command, error) {
		aggregateID := cmd.AggregateID
		if aggregateID == "" {
			aggregateID = string(key)
		}
		return cmd, &InvalidError{CommandID: cmd.ID, AggregateID: aggregateID, Reason: fmt.Sprintf(format, args...)}
	}
	if len(value) > maxBytes {
		// Name the command in the error when its IDs can be read, so that
		// its sender learns what became of it. Kafka's own record size
		// limit bounds this decode.
		var ids struct {
			ID          string `json:"id"`
			AggregateID string `json:"aggregateId"`
		}
		var named Command
		if json.Unmarshal(value, &ids) == nil && len(ids.ID) <= MaxIDLength && len(ids.AggregateID) <= MaxIDLength {
			named = Command{ID: ids.ID, AggregateID: ids.AggregateID}
		}
		return invalid(named, "record value is %d bytes, over the %d-byte limit", len(value), maxBytes)
	}
	if !utf8.Valid(value) {
		return invalid(Command{}, "record value is not UTF-8 JSON")
	}
	wire, ok := decodeWireFast(value)
	if !ok {
		var err error
		if wire, err = decodeWire(value); err != nil {
			return invalid(Command{}, "%s", err.Error())
		}
	}
	cmd := Command{
		ID:          wire.ID,
		AggregateID: wire.AggregateID,
		Type:        wire.Type,
		Payload:     wire.Payload,
		Metadata:    wire.Metadata,
		OnConflict:  wire.OnConflict,
	}
	if err := cmd.validateFields(); err != nil {
		return invalid(cmd, "%s", err.Error())
	}
	if len(wire.ExpectedVersion) == 0 || string(wire.ExpectedVersion) == "null" {
		return invalid(cmd, "expectedVersion is missing; send the version you read (0 for a new aggregate)")
	}
	// Only a JSON integer literal: no quoted numbers, fractions or exponents.
	expectedVersion, err := strconv.ParseInt(string(wire.ExpectedVersion), 10, 64)
	if err != nil {
		return invalid(cmd, "expectedVersion %s is not an integer", wire.ExpectedVersion)
	}
	cmd.ExpectedVersion = expectedVersion
	if expectedVersion < MustExist {
		return invalid(cmd, "expectedVersion %d is not valid: use N >= 0, -1 (any) or -2 (must exist)", expectedVersion)
	}
	if !bytes.Equal(key, []byte(cmd.AggregateID)) {
		return invalid(cmd, "record key %s does not equal aggregateId %s; produce with key = aggregateId", quoteShort(string(key)), quoteShort(cmd.AggregateID))
	}
	if len(cmd.Payload) > 0 && bytes.Equal(bytes.TrimSpace(cmd.Payload), []byte("null")) {
		cmd.Payload = nil
	}
	return cmd, nil
}

// quoteShort quotes a value taken from a record for a message, cut to
// MaxIDLength bytes with its full length noted: a message must not grow with
// an over-long key or ID.
func quoteShort(value string) string {
	if len(value) <= MaxIDLength {
		return strconv.Quote(value)
	}
	return fmt.Sprintf("%s… (%d bytes)", strconv.Quote(value[:MaxIDLength]), len(value))
}

// decodeWire decodes a command record with encoding/json; the error says
// what is wrong in words meant for the sender.
func decodeWire(value []byte) (wireCommand, error) {
	var wire wireCommand
	dec := json.NewDecoder(bytes.NewReader(value))
	if err := dec.Decode(&wire); err != nil {
		return wire, errors.Newf("record value is not a JSON command object: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return wire, errors.New("record value has trailing data after the JSON object")
	}
	return wire, nil
}

// Validate checks a command before it is sent: required fields, limits,
// UTF-8, and the expectedVersion range. Problems are returned as an
// *InvalidError.
func (c Command) Validate() error {
	invalid := func(reason string) error {
		return &InvalidError{CommandID: c.ID, AggregateID: c.AggregateID, Reason: reason}
	}
	if err := c.validateFields(); err != nil {
		return invalid(err.Error())
	}
	if c.ExpectedVersion < MustExist {
		return invalid(fmt.Sprintf("expectedVersion %d is not valid: use N >= 0, -1 (any) or -2 (must exist)", c.ExpectedVersion))
	}
	if len(c.Payload) > 0 && !json.Valid(c.Payload) {
		return invalid("payload is not valid JSON")
	}
	for key, value := range c.Metadata {
		if !utf8.ValidString(key) || !utf8.ValidString(value) {
			return invalid(fmt.Sprintf("metadata %q is not UTF-8", key))
		}
	}
	return nil
}

func (c Command) validateFields() error {
	var problems []string
	check := func(name, value string) {
		switch {
		case value == "":
			problems = append(problems, name+" is missing")
		case !utf8.ValidString(value):
			problems = append(problems, name+" is not UTF-8")
		case len(value) > MaxIDLength:
			problems = append(problems, fmt.Sprintf("%s is %d bytes, over the %d-byte limit", name, len(value), MaxIDLength))
		}
	}
	check("id", c.ID)
	check("aggregateId", c.AggregateID)
	check("type", c.Type)
	switch c.OnConflict {
	case "", OnConflictStrict, OnConflictRebase:
	default:
		problems = append(problems, fmt.Sprintf("onConflict %q is not valid: use %q or %q", c.OnConflict, OnConflictStrict, OnConflictRebase))
	}
	if len(problems) == 0 {
		return nil
	}
	return errors.Newf("%s", joinWords(problems))
}

func joinWords(words []string) string {
	var b bytes.Buffer
	for i, w := range words {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(w)
	}
	return b.String()
}

// Rebase reports whether the command opted in to being decided again when
// it arrives stale (OnConflictRebase).
func (c Command) Rebase() bool { return c.OnConflict == OnConflictRebase }

// Encode returns the command's JSON record value.
func (c Command) Encode() ([]byte, error) {
	value, err := json.Marshal(c)
	if err != nil {
		return nil, errors.Wrapf(err, "encode command %s for aggregate %s", c.ID, c.AggregateID)
	}
	return value, nil
}
