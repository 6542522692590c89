package commands

import "encoding/json"

// decodeWireFast parses the common shape of a command record without
// reflection: a JSON object whose keys are the envelope's own, spelled
// exactly, each at most once; strings without escapes; a number for
// expectedVersion; string-to-string metadata. It reports ok false for
// anything else (escapes, other or differently cased keys, nulls, syntax
// errors), and the caller then decodes with encoding/json, which gives the
// same result for every input this accepts (FuzzDecodeFast checks that) and
// the error messages for those it does not.
//
// value must be valid UTF-8. Payload is copied, as encoding/json copies a
// json.RawMessage.
func decodeWireFast(value []byte) (wire wireCommand, ok bool) {
	p := fastParser{buf: value}
	p.space()
	if !p.take('{') {
		return wire, false
	}
	var seen uint8
	p.space()
	if p.take('}') {
		return wire, p.end()
	}
	for {
		p.space()
		key, ok := p.plainString()
		if !ok {
			return wire, false
		}
		p.space()
		if !p.take(':') {
			return wire, false
		}
		p.space()
		var bit uint8
		switch string(key) {
		case "id":
			bit = 1
			wire.ID, ok = p.stringValue()
		case "aggregateId":
			bit = 2
			wire.AggregateID, ok = p.stringValue()
		case "type":
			bit = 4
			wire.Type, ok = p.stringValue()
		case "expectedVersion":
			bit = 8
			wire.ExpectedVersion, ok = p.number()
		case "payload":
			bit = 16
			var raw []byte
			raw, ok = p.value()
			if ok {
				wire.Payload = append(json.RawMessage(nil), raw...)
			}
		case "metadata":
			bit = 32
			wire.Metadata, ok = p.metadata()
		case "onConflict":
			bit = 64
			wire.OnConflict, ok = p.stringValue()
		default:
			return wire, false
		}
		if !ok || seen&bit != 0 {
			return wire, false
		}
		seen |= bit
		p.space()
		if p.take(',') {
			continue
		}
		if p.take('}') {
			return wire, p.end()
		}
		return wire, false
	}
}

type fastParser struct {
	buf []byte
	pos int
}

func (p *fastParser) space() {
	for p.pos < len(p.buf) {
		switch p.buf[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *fastParser) take(c byte) bool {
	if p.pos < len(p.buf) && p.buf[p.pos] == c {
		p.pos++
		return true
	}
	return false
}

// end reports whether only whitespace is left.
func (p *fastParser) end() bool {
	p.space()
	return p.pos == len(p.buf)
}

// plainString reads a string without escapes or control characters and
// returns its content.
func (p *fastParser) plainString() ([]byte, bool) {
	if !p.take('"') {
		return nil, false
	}
	start := p.pos
	for p.pos < len(p.buf) {
		c := p.buf[p.pos]
		switch {
		case c == '"':
			s := p.buf[start:p.pos]
			p.pos++
			return s, true
		case c == '\\' || c < 0x20:
			return nil, false
		}
		p.pos++
	}
	return nil, false
}

func (p *fastParser) stringValue() (string, bool) {
	s, ok := p.plainString()
	return string(s), ok
}

// number reads an integer literal, the only form Decode accepts for
// expectedVersion; anything else goes the slow way, for its message.
func (p *fastParser) number() (json.RawMessage, bool) {
	start := p.pos
	p.take('-')
	digits := p.pos
	for p.pos < len(p.buf) && p.buf[p.pos] >= '0' && p.buf[p.pos] <= '9' {
		p.pos++
	}
	n := p.pos - digits
	if n == 0 || (n > 1 && p.buf[digits] == '0') {
		return nil, false
	}
	if p.pos < len(p.buf) && (p.buf[p.pos] == '.' || p.buf[p.pos] == 'e' || p.buf[p.pos] == 'E') {
		return nil, false
	}
	return append(json.RawMessage(nil), p.buf[start:p.pos]...), true
}

// value finds the extent of any JSON value and checks it is valid JSON.
func (p *fastParser) value() ([]byte, bool) {
	start := p.pos
	depth := 0
	for p.pos < len(p.buf) {
		c := p.buf[p.pos]
		switch c {
		case '"':
			p.pos++
			for p.pos < len(p.buf) && p.buf[p.pos] != '"' {
				if p.buf[p.pos] == '\\' {
					p.pos++
				}
				p.pos++
			}
			if p.pos >= len(p.buf) {
				return nil, false
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return p.checked(start)
			}
			depth--
		case ',':
			if depth == 0 {
				return p.checked(start)
			}
		}
		p.pos++
		if depth == 0 && (c == '"' || c == '}' || c == ']') {
			return p.checked(start)
		}
	}
	return p.checked(start)
}

func (p *fastParser) checked(start int) ([]byte, bool) {
	raw := p.buf[start:p.pos]
	// Trailing whitespace belongs to the separator, not the value.
	for len(raw) > 0 {
		switch raw[len(raw)-1] {
		case ' ', '\t', '\n', '\r':
			raw = raw[:len(raw)-1]
			continue
		}
		break
	}
	if len(raw) == 0 || !json.Valid(raw) {
		return nil, false
	}
	return raw, true
}

// metadata reads an object of plain strings.
func (p *fastParser) metadata() (map[string]string, bool) {
	if !p.take('{') {
		return nil, false
	}
	m := make(map[string]string, 4)
	p.space()
	if p.take('}') {
		return m, true
	}
	for {
		p.space()
		key, ok := p.plainString()
		if !ok {
			return nil, false
		}
		p.space()
		if !p.take(':') {
			return nil, false
		}
		p.space()
		value, ok := p.plainString()
		if !ok {
			return nil, false
		}
		if _, dup := m[string(key)]; dup {
			// encoding/json keeps the last; not worth the fast path.
			return nil, false
		}
		m[string(key)] = string(value)
		p.space()
		if p.take(',') {
			continue
		}
		return m, p.take('}')
	}
}
