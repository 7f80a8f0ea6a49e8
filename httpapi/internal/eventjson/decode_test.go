package eventjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sselog/sselog/store"
)

// referenceDecode is the publish body's meaning as encoding/json gives it:
// the events, or ok false when encoding/json refuses the body.
func referenceDecode(body []byte) (events []store.Event, ok bool) {
	type wire struct {
		Type *string         `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	if !utf8.Valid(body) || !json.Valid(body) {
		return nil, false
	}
	var ws []wire
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	switch {
	case len(trimmed) > 0 && trimmed[0] == '[':
		if dec.Decode(&ws) != nil || len(ws) == 0 {
			return nil, false
		}
	case len(trimmed) > 0 && trimmed[0] == '{':
		ws = make([]wire, 1)
		if dec.Decode(&ws[0]) != nil {
			return nil, false
		}
	default:
		return nil, false
	}
	for _, w := range ws {
		if w.Data == nil {
			return nil, false
		}
		var typ string
		if w.Type != nil {
			typ = *w.Type
		}
		if store.ValidateType(typ) != nil {
			return nil, false
		}
		var buf bytes.Buffer
		if json.Compact(&buf, w.Data) != nil {
			return nil, false
		}
		events = append(events, store.Event{Type: typ, Data: buf.Bytes()})
	}
	return events, true
}

// stricter reports the bodies this decoder refuses on purpose although
// encoding/json takes them: keys in another case, a key given twice, data
// nested deeper than maxDepth.
func stricter(body []byte) bool {
	var v any
	if json.Unmarshal(body, &v) != nil {
		return false
	}
	for _, keys := range eventKeys(body) {
		seen := map[string]bool{}
		for _, k := range keys {
			if k != "type" && k != "data" || seen[k] {
				return true // another spelling, or given twice
			}
			seen[k] = true
		}
	}
	return depth(v) > maxDepth
}

// eventKeys lists the keys of each event object of a body, in order and
// with repeats, which decoding into a map would hide.
func eventKeys(body []byte) [][]string {
	var events []json.RawMessage
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) > 0 && trimmed[0] == '[' {
		if json.Unmarshal(body, &events) != nil {
			return nil
		}
	} else {
		events = []json.RawMessage{body}
	}
	var out [][]string
	for _, e := range events {
		dec := json.NewDecoder(bytes.NewReader(e))
		if t, err := dec.Token(); err != nil || t != json.Delim('{') {
			continue
		}
		var keys []string
		for dec.More() {
			t, err := dec.Token()
			if err != nil {
				break
			}
			k, _ := t.(string)
			keys = append(keys, k)
			var skip json.RawMessage
			if dec.Decode(&skip) != nil {
				break
			}
		}
		out = append(out, keys)
	}
	return out
}

func depth(v any) int {
	d := 0
	switch x := v.(type) {
	case map[string]any:
		for _, e := range x {
			d = max(d, depth(e))
		}
		return d + 1
	case []any:
		for _, e := range x {
			d = max(d, depth(e))
		}
		return d + 1
	}
	return 0
}

func checkDecode(t *testing.T, body []byte) {
	got, _, err := Decode(body)
	want, ok := referenceDecode(body)
	switch {
	case err == nil && !ok:
		t.Fatalf("accepted %q, which encoding/json refuses", body)
	case err != nil && ok:
		if !stricter(body) {
			t.Fatalf("refused %q (%v), which encoding/json takes as %q", body, err, want)
		}
	case err == nil:
		if len(got) != len(want) {
			t.Fatalf("%q: %d events, want %d", body, len(got), len(want))
		}
		for i := range got {
			if got[i].Type != want[i].Type || !bytes.Equal(got[i].Data, want[i].Data) {
				t.Fatalf("%q: event %d = {%q %s}, want {%q %s}", body, i, got[i].Type, got[i].Data, want[i].Type, want[i].Data)
			}
		}
	}
	// httpapi answers 400 for ErrMalformed, so every refusal must match it.
	if err != nil && !errors.Is(err, ErrMalformed) {
		t.Fatalf("%q: error %v does not match ErrMalformed", body, err)
	}
}

// publishSeeds are bodies of every shape the decoder must tell apart; the
// fuzz corpus in testdata/fuzz/FuzzDecodeEvents adds the ones it found.
var publishSeeds = []string{
	`{"data":1}`, `{"type":"t","data":{"a":[1,2,{"b":null}]}}`, ` [ {"data" : "x" } , {"type":null,"data":true} ] `,
	`{"data":"line\nbreak \u2028 \ud83d\ude00 \ud800 \"q\""}`, `{"type":"\u00e9t\u00e9","data":-0.5e+10}`,
	`{"type":"a\u000ab","data":1}`, `{"type":"\ud800x","data":1}`, `{"Type":"x","data":1}`, `{"data":1,"data":2}`,
	`{"data":01}`, `{"data":1.}`, `{"data":-}`, `{"data":.5}`, `{"data":1e}`, `{"data":"\x"}`, `{"data":"\u12"}`,
	`{"data":[1,]}`, `{"data":{"a":1,}}`, `{"data":{1:2}}`, `{"data":tru}`, `{"data":nul}`, `{"data":"unterminated}`,
	`[]`, `[{"data":1}`, `[{"data":1},]`, `{"data":1} x`, `null`, `{}`, `{"type":"x"}`, `{"data":1,"id":2}`,
	`{"type":"reset","data":1}`, strings.Repeat("[", 70) + strings.Repeat("]", 70), `{"data":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `}`,
	"{\"data\":\"\t\"}", "{\"data\":\"\xff\"}", `{"data":[]}`, `{"data":{}}`, `{"data":""}`,
}

func TestDecodeEventsMatchesEncodingJSON(t *testing.T) {
	for _, s := range publishSeeds {
		checkDecode(t, []byte(s))
	}
}

// FuzzDecodeEvents holds the hand-written publish decoder to encoding/json:
// the same bodies accepted (bar the documented stricter cases), the same
// types, and data compacted byte for byte as json.Compact does.
func FuzzDecodeEvents(f *testing.F) {
	for _, s := range publishSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(checkDecode)
}
