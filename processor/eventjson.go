package processor

import (
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/arbiter-cqrs/arbiter/events"
)

// appendEventJSON appends the JSON encoding of an event, byte for byte what
// json.Marshal writes, without reflection: the worker encodes one event per
// applied command, and encoding/json was a tenth of its CPU time. It reports
// false, having appended nothing, for events whose strings or payload need
// the escaping or compacting json.Marshal does (quotes, backslashes, control
// characters, <, >, &, U+2028, U+2029, invalid UTF-8, whitespace in the
// payload) or whose timestamp it refuses; the caller then uses json.Marshal.
// The payload must be valid JSON, as Draft.EncodePayload guarantees.
// TestAppendEventJSONMatchesMarshal and FuzzAppendEventJSON check it against
// json.Marshal.
func appendEventJSON(dst []byte, e *events.Event) ([]byte, bool) {
	if !plainJSONString(e.ID) || !plainJSONString(e.AggregateID) || !plainJSONString(e.AggregateType) ||
		!plainJSONString(e.Type) || !plainJSONString(e.CommandID) || !compactJSON(e.Payload) {
		return dst, false
	}
	for key, value := range e.Metadata {
		if !plainJSONString(key) || !plainJSONString(value) {
			return dst, false
		}
	}
	if !plainTimestamp(e.Timestamp) {
		return dst, false
	}
	dst = append(dst, `{"id":"`...)
	dst = append(dst, e.ID...)
	dst = append(dst, `","aggregateId":"`...)
	dst = append(dst, e.AggregateID...)
	if e.AggregateType != "" {
		dst = append(dst, `","aggregateType":"`...)
		dst = append(dst, e.AggregateType...)
	}
	dst = append(dst, `","type":"`...)
	dst = append(dst, e.Type...)
	dst = append(dst, `","version":`...)
	dst = strconv.AppendInt(dst, e.Version, 10)
	dst = append(dst, `,"commandId":"`...)
	dst = append(dst, e.CommandID...)
	dst = append(dst, '"')
	if e.RebasedFrom != nil {
		dst = append(dst, `,"rebasedFrom":`...)
		dst = strconv.AppendInt(dst, *e.RebasedFrom, 10)
	}
	if len(e.Payload) > 0 {
		dst = append(dst, `,"payload":`...)
		dst = append(dst, e.Payload...)
	}
	if len(e.Metadata) > 0 {
		dst = append(dst, `,"metadata":{`...)
		keys := make([]string, 0, len(e.Metadata))
		for key := range e.Metadata {
			keys = append(keys, key)
		}
		slices.Sort(keys)
		for i, key := range keys {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, '"')
			dst = append(dst, key...)
			dst = append(dst, `":"`...)
			dst = append(dst, e.Metadata[key]...)
			dst = append(dst, '"')
		}
		dst = append(dst, '}')
	}
	dst = append(dst, `,"timestamp":"`...)
	dst = e.Timestamp.AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `"}`...)
	return dst, true
}

// plainJSONString reports whether json.Marshal writes s between quotes as
// it is.
func plainJSONString(s string) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || r == '\u2028' || r == '\u2029' {
			return false
		}
		i += size
	}
	return true
}

// compactJSON reports whether json.Marshal writes the valid JSON raw as it
// is: no whitespace between tokens and nothing it escapes inside strings.
func compactJSON(raw []byte) bool {
	inString := false
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if !inString {
				return false
			}
		case c == '<' || c == '>' || c == '&':
			return false
		case c == 0xE2 && i+2 < len(raw) && raw[i+1] == 0x80 && (raw[i+2] == 0xA8 || raw[i+2] == 0xA9):
			return false
		case c == '\\':
			i++
		case c == '"':
			inString = !inString
		}
	}
	return true
}

// appendConflictJSON appends the JSON encoding of a conflict record, byte
// for byte what json.Marshal writes, without reflection: a version
// conflict carries up to RecentEvents event summaries, and encoding them
// with encoding/json made the conflicts a worker's most expensive records.
// Like appendEventJSON it reports false, having appended nothing, when a
// string, the command or a payload needs json.Marshal's escaping or
// compacting, or when the record has a raw (base64) value or cut fields;
// the caller then uses json.Marshal. Command and the payloads must be
// valid JSON. TestAppendConflictJSONMatchesMarshal and
// FuzzAppendConflictJSON check it against json.Marshal.
func appendConflictJSON(dst []byte, c *events.Conflict) ([]byte, bool) {
	if len(c.RawValue) > 0 || len(c.Cut) > 0 ||
		!plainJSONString(c.CommandID) || !plainJSONString(c.AggregateID) || !plainJSONString(string(c.Reason)) ||
		!plainJSONString(c.Message) || !plainJSONString(c.OriginalReason) || !plainJSONString(c.Source.Topic) ||
		!compactJSON(c.Command) || !plainTimestamp(c.Timestamp) {
		return dst, false
	}
	for i := range c.EventsSince {
		e := &c.EventsSince[i]
		if !plainJSONString(e.Type) || !plainJSONString(e.ID) || !compactJSON(e.Payload) {
			return dst, false
		}
	}
	dst = append(dst, '{')
	if c.CommandID != "" {
		dst = append(dst, `"commandId":"`...)
		dst = append(dst, c.CommandID...)
		dst = append(dst, `",`...)
	}
	dst = append(dst, `"aggregateId":"`...)
	dst = append(dst, c.AggregateID...)
	dst = append(dst, `","reason":"`...)
	dst = append(dst, c.Reason...)
	dst = append(dst, '"')
	dst = appendOptionalInt(dst, `,"expectedVersion":`, c.ExpectedVersion)
	dst = appendOptionalInt(dst, `,"actualVersion":`, c.ActualVersion)
	dst = append(dst, `,"message":"`...)
	dst = append(dst, c.Message...)
	dst = append(dst, '"')
	if len(c.EventsSince) > 0 {
		dst = append(dst, `,"eventsSince":[`...)
		for i := range c.EventsSince {
			e := &c.EventsSince[i]
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"version":`...)
			dst = strconv.AppendInt(dst, e.Version, 10)
			dst = append(dst, `,"type":"`...)
			dst = append(dst, e.Type...)
			dst = append(dst, `","id":"`...)
			dst = append(dst, e.ID...)
			dst = append(dst, '"')
			if len(e.Payload) > 0 {
				dst = append(dst, `,"payload":`...)
				dst = append(dst, e.Payload...)
			}
			if e.PayloadOmitted {
				dst = append(dst, `,"payloadOmitted":true`...)
			}
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	if c.EventsSinceCount != 0 {
		dst = append(dst, `,"eventsSinceCount":`...)
		dst = strconv.AppendInt(dst, c.EventsSinceCount, 10)
	}
	if c.OriginalReason != "" {
		dst = append(dst, `,"originalReason":"`...)
		dst = append(dst, c.OriginalReason...)
		dst = append(dst, '"')
	}
	dst = appendOptionalInt(dst, `,"originalVersion":`, c.OriginalVersion)
	if len(c.Command) > 0 {
		dst = append(dst, `,"command":`...)
		dst = append(dst, c.Command...)
	}
	dst = append(dst, `,"source":{"topic":"`...)
	dst = append(dst, c.Source.Topic...)
	dst = append(dst, `","partition":`...)
	dst = strconv.AppendInt(dst, int64(c.Source.Partition), 10)
	dst = append(dst, `,"offset":`...)
	dst = strconv.AppendInt(dst, c.Source.Offset, 10)
	dst = append(dst, `},"timestamp":"`...)
	dst = c.Timestamp.AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `"}`...)
	return dst, true
}

// appendOptionalInt appends name and *v when v is set, as json.Marshal
// writes an omitempty *int64.
func appendOptionalInt(dst []byte, name string, v *int64) []byte {
	if v == nil {
		return dst
	}
	dst = append(dst, name...)
	return strconv.AppendInt(dst, *v, 10)
}

// plainTimestamp reports whether json.Marshal encodes t as RFC 3339 with
// nanoseconds, as time.Time.AppendFormat does: it refuses years outside
// 0-9999 and zone offsets that are not whole minutes under a day.
func plainTimestamp(t time.Time) bool {
	if year := t.Year(); year < 0 || year > 9999 {
		return false
	}
	_, offset := t.Zone()
	return offset%60 == 0 && offset > -24*3600 && offset < 24*3600
}
