package eventjson

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/sselog/sselog/store"
)

// maxDepth bounds the nesting of a publish body's JSON, so that a hostile
// body cannot make the parser recurse without end.
const maxDepth = 64

// ErrMalformed is matched by every error Decode returns: the body is not a
// publish body. The error's own text says why, for the client.
var ErrMalformed = errors.New("malformed publish body")

// malformedError carries the client's message as its whole text (callers
// show it as it is) and matches ErrMalformed.
type malformedError struct{ msg string }

func (e *malformedError) Error() string { return e.msg }

func (e *malformedError) Unwrap() error { return ErrMalformed }

func errorf(format string, args ...any) error {
	return &malformedError{msg: fmt.Sprintf(format, args...)}
}

// Decode parses a publish body: one event object, or a non-empty array of
// them. batch reports whether the body was an array, so that the answer can
// take the same shape. The events hold no reference to body: their Data
// share one new buffer no larger than it, each capped at its own length so
// that appending to one cannot overwrite the next.
func Decode(body []byte) (events []store.Event, batch bool, err error) {
	if !utf8.Valid(body) {
		return nil, false, errorf("body is not valid UTF-8")
	}
	p := eventParser{b: body}
	return p.parse()
}

// eventParser reads a publish body: one event object, or a non-empty array
// of them, each {"type": string or null, "data": any JSON value}, with
// nothing else. It validates the JSON and compacts each event's data in the
// same pass, into one buffer for the whole body: publishing is the server's
// hottest path, and reflection-based decoding of the envelope was most of
// its CPU. Keys are matched exactly (encoding/json would also take "Data"),
// a key may appear once, and the body must be valid UTF-8 (checked before).
type eventParser struct {
	b   []byte
	i   int
	buf []byte // compacted data of every event
}

func (p *eventParser) fail(format string, args ...any) error {
	return errorf("malformed JSON at byte %d: %s", p.i, fmt.Sprintf(format, args...))
}

func (p *eventParser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// end is what next returns at the end of the body.
const end = -1

// next skips whitespace and returns the next byte, or end.
func (p *eventParser) next() int {
	p.ws()
	if p.i == len(p.b) {
		return end
	}
	return int(p.b[p.i])
}

func (p *eventParser) parse() ([]store.Event, bool, error) {
	p.buf = make([]byte, 0, len(p.b))
	// An event takes at least 10 bytes ({"data":0}): a guess that rarely
	// grows the slice and never wastes much.
	events := make([]store.Event, 0, min(len(p.b)/32+1, 1024))
	batch := false
	switch p.next() {
	case end:
		return nil, false, errorf("body is empty: send an event object or an array of them")
	case '{':
		e, err := p.event(-1)
		if err != nil {
			return nil, false, err
		}
		events = []store.Event{e}
	case '[':
		batch = true
		p.i++
		if p.next() == ']' {
			return nil, true, errorf("empty batch: send at least one event")
		}
		for n := 0; ; n++ {
			if p.next() != '{' {
				if p.i == len(p.b) {
					return nil, true, p.fail("unexpected end of body")
				}
				return nil, true, errorf("event %d: each event must be a JSON object", n)
			}
			e, err := p.event(n)
			if err != nil {
				return nil, true, err
			}
			events = append(events, e)
			c := p.next()
			p.i++
			if c == ']' {
				break
			}
			if c != ',' {
				p.i--
				return nil, true, p.fail("want , or ] after an event")
			}
		}
	default:
		return nil, false, errorf("body must be a JSON event object or an array of them")
	}
	if p.next() != end {
		return nil, batch, errorf("unexpected data after the JSON value")
	}
	return events, batch, nil
}

// event reads one event object; n is its index in a batch, or -1.
func (p *eventParser) event(n int) (store.Event, error) {
	where := func(msg string) error {
		if n >= 0 {
			return errorf("event %d: %s", n, msg)
		}
		return errorf("%s", msg)
	}
	p.i++ // '{'
	var e store.Event
	var haveType, haveData bool
	if p.next() == '}' {
		p.i++
		return e, where(`"data" is required`)
	}
	for {
		if p.next() != '"' {
			return e, p.fail("want a field name")
		}
		key, err := p.stringValue()
		if err != nil {
			return e, err
		}
		if p.next() != ':' {
			return e, p.fail("want : after a field name")
		}
		p.i++
		switch key {
		case "type":
			if haveType {
				return e, where(`"type" given twice`)
			}
			haveType = true
			switch p.next() {
			case '"':
				if e.Type, err = p.stringValue(); err != nil {
					return e, err
				}
			case 'n':
				if err := p.literal("null"); err != nil {
					return e, err
				}
			default:
				return e, where(`field "type" must be a JSON string`)
			}
			if err := store.ValidateType(e.Type); err != nil {
				return e, where(err.Error())
			}
		case "data":
			if haveData {
				return e, where(`"data" given twice`)
			}
			haveData = true
			p.ws()
			start := len(p.buf)
			if err := p.value(0); err != nil {
				return e, err
			}
			e.Data = p.buf[start:len(p.buf):len(p.buf)]
		default:
			return e, where(fmt.Sprintf("unknown field %s: an event has only \"type\" and \"data\"", strconv.Quote(key)))
		}
		c := p.next()
		p.i++
		if c == '}' {
			break
		}
		if c != ',' {
			p.i--
			return e, p.fail("want , or } in an event")
		}
	}
	if !haveData {
		return e, where(`"data" is required`)
	}
	return e, nil
}

// value copies one JSON value at p.i to p.buf without insignificant space,
// checking it as it goes.
func (p *eventParser) value(depth int) error {
	if depth > maxDepth {
		return errorf("data nested deeper than %d levels", maxDepth)
	}
	switch c := p.next(); {
	case c == '{':
		p.i++
		p.buf = append(p.buf, '{')
		if p.next() == '}' {
			p.i++
			p.buf = append(p.buf, '}')
			return nil
		}
		for {
			if p.next() != '"' {
				return p.fail("want a field name")
			}
			if err := p.rawString(); err != nil {
				return err
			}
			if p.next() != ':' {
				return p.fail("want : after a field name")
			}
			p.i++
			p.buf = append(p.buf, ':')
			if err := p.value(depth + 1); err != nil {
				return err
			}
			c := p.next()
			p.i++
			p.buf = append(p.buf, byte(c))
			if c == '}' {
				return nil
			}
			if c != ',' {
				p.i--
				p.buf = p.buf[:len(p.buf)-1]
				return p.fail("want , or } in an object")
			}
		}
	case c == '[':
		p.i++
		p.buf = append(p.buf, '[')
		if p.next() == ']' {
			p.i++
			p.buf = append(p.buf, ']')
			return nil
		}
		for {
			if err := p.value(depth + 1); err != nil {
				return err
			}
			c := p.next()
			p.i++
			p.buf = append(p.buf, byte(c))
			if c == ']' {
				return nil
			}
			if c != ',' {
				p.i--
				p.buf = p.buf[:len(p.buf)-1]
				return p.fail("want , or ] in an array")
			}
		}
	case c == '"':
		return p.rawString()
	case c == 't':
		return p.copyLiteral("true")
	case c == 'f':
		return p.copyLiteral("false")
	case c == 'n':
		return p.copyLiteral("null")
	case c == '-' || '0' <= c && c <= '9':
		return p.number()
	case c == end:
		return p.fail("unexpected end of body")
	default:
		return p.fail("unexpected %q", rune(c))
	}
}

func (p *eventParser) literal(lit string) error {
	if len(p.b)-p.i < len(lit) || string(p.b[p.i:p.i+len(lit)]) != lit {
		return p.fail("invalid literal")
	}
	p.i += len(lit)
	return nil
}

func (p *eventParser) copyLiteral(lit string) error {
	if err := p.literal(lit); err != nil {
		return err
	}
	p.buf = append(p.buf, lit...)
	return nil
}

// number copies a number in JSON's grammar: -?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?
func (p *eventParser) number() error {
	start := p.i
	digits := func() int {
		n := 0
		for p.i < len(p.b) && '0' <= p.b[p.i] && p.b[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.b[p.i] == '-' {
		p.i++
	}
	switch {
	case p.i < len(p.b) && p.b[p.i] == '0':
		p.i++
	case digits() == 0:
		return p.fail("invalid number")
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if digits() == 0 {
			return p.fail("invalid number")
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return p.fail("invalid number")
		}
	}
	p.buf = append(p.buf, p.b[start:p.i]...)
	return nil
}

// stringEnd checks the string starting at p.i (on its quote) and returns
// the index after its closing quote, and whether it has escapes.
func (p *eventParser) stringEnd() (int, bool, error) {
	escaped := false
	for j := p.i + 1; j < len(p.b); j++ {
		switch c := p.b[j]; {
		case c == '"':
			return j + 1, escaped, nil
		case c == '\\':
			escaped = true
			j++
			if j == len(p.b) {
				break
			}
			switch p.b[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if j+4 >= len(p.b) {
					p.i = j
					return 0, false, p.fail("invalid \\u escape")
				}
				for _, h := range p.b[j+1 : j+5] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						p.i = j
						return 0, false, p.fail("invalid \\u escape")
					}
				}
				j += 4
			default:
				p.i = j
				return 0, false, p.fail("invalid escape")
			}
		case c < 0x20:
			p.i = j
			return 0, false, p.fail("control character in a string")
		}
	}
	p.i = len(p.b)
	return 0, false, p.fail("unterminated string")
}

// rawString copies a string as it is, escapes and all.
func (p *eventParser) rawString() error {
	end, _, err := p.stringEnd()
	if err != nil {
		return err
	}
	p.buf = append(p.buf, p.b[p.i:end]...)
	p.i = end
	return nil
}

// stringValue reads a string and returns it unescaped.
func (p *eventParser) stringValue() (string, error) {
	end, escaped, err := p.stringEnd()
	if err != nil {
		return "", err
	}
	raw := p.b[p.i+1 : end-1]
	p.i = end
	if !escaped {
		return string(raw), nil
	}
	out := make([]byte, 0, len(raw))
	for k := 0; k < len(raw); k++ {
		if raw[k] != '\\' {
			out = append(out, raw[k])
			continue
		}
		k++
		switch raw[k] {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r := hex4(raw[k+1 : k+5])
			k += 4
			if utf16.IsSurrogate(r) {
				// A pair is two escapes in a row; anything else is an
				// unpaired surrogate, which becomes U+FFFD (as encoding/json
				// decodes it).
				if k+6 < len(raw) && raw[k+1] == '\\' && raw[k+2] == 'u' {
					if d := utf16.DecodeRune(r, hex4(raw[k+3:k+7])); d != utf8.RuneError {
						out = utf8.AppendRune(out, d)
						k += 6
						continue
					}
				}
				r = utf8.RuneError
			}
			out = utf8.AppendRune(out, r)
		default: // " \ /
			out = append(out, raw[k])
		}
	}
	return string(out), nil
}

func hex4(b []byte) rune {
	var r rune
	for _, h := range b {
		r <<= 4
		switch {
		case '0' <= h && h <= '9':
			r |= rune(h - '0')
		case 'a' <= h && h <= 'f':
			r |= rune(h - 'a' + 10)
		default:
			r |= rune(h - 'A' + 10)
		}
	}
	return r
}
