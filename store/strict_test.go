package store_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sselog/sselog/store"
)

// TestStrictObject checks what StrictObject refuses that encoding/json
// takes, and that it returns every member of what it accepts, keyed
// exactly.
func TestStrictObject(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want map[string]string // nil: refused with ErrNotStrictJSON
	}{
		{"empty object", `{}`, map[string]string{}},
		{"spaces around", " \t\r\n{ \"a\" : 1 }\n", map[string]string{"a": "1"}},
		{"keys differing in case are different keys", `{"a":1,"A":2,"ſ":3,"s":4}`, map[string]string{"a": "1", "A": "2", "ſ": "3", "s": "4"}},
		{"escaped key decoded", `{"\u0061b":1}`, map[string]string{"ab": "1"}},
		{"same key in sibling objects", `{"x":{"k":1},"y":[{"k":1},{"k":2}]}`, map[string]string{"x": `{"k":1}`, "y": `[{"k":1},{"k":2}]`}},
		{"same key at two depths", `{"k":{"k":{"k":1}}}`, map[string]string{"k": `{"k":{"k":1}}`}},
		{"huge number", `{"n":1e999}`, map[string]string{"n": "1e999"}},
		{"key twice", `{"a":1,"a":2}`, nil},
		{"key twice, same value", `{"a":1,"a":1}`, nil},
		{"key twice, one escaped", `{"a":1,"\u0061":2}`, nil},
		{"key twice, nested in an object", `{"x":{"k":1,"k":2}}`, nil},
		{"key twice, nested in an array", `{"x":[1,{"y":[{"k":1,"k":2}]}]}`, nil},
		{"key twice, after a nested object", `{"a":{"b":1},"a":2}`, nil},
		{"invalid UTF-8 in a key", "{\"\xff\":1}", nil},
		{"invalid UTF-8 in a value", "{\"a\":\"\xff\"}", nil},
		{"array", `[]`, nil},
		{"null", `null`, nil},
		{"string", `"{}"`, nil},
		{"empty", ``, nil},
		{"two objects", `{}{}`, nil},
		{"data after", `{} x`, nil},
		{"unterminated", `{"a":1`, nil},
		{"trailing comma", `{"a":1,}`, nil},
		{"byte order mark", "\ufeff{}", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := store.StrictObject([]byte(tc.in))
			if tc.want == nil {
				if !errors.Is(err, store.ErrNotStrictJSON) {
					t.Fatalf("StrictObject(%q) = %v, %v; want ErrNotStrictJSON", tc.in, got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("StrictObject(%q): %v", tc.in, err)
			}
			gotText := map[string]string{}
			for k, v := range got {
				gotText[k] = string(v)
			}
			if !reflect.DeepEqual(gotText, tc.want) {
				t.Fatalf("StrictObject(%q) = %q, want %q", tc.in, gotText, tc.want)
			}
		})
	}
}

// TestPolicyExactKeys checks that a policy's keys are matched byte for
// byte and given once: encoding/json's struct decoding took each refused
// body below.
func TestPolicyExactKeys(t *testing.T) {
	for _, bad := range []string{
		`{"MAX_EVENTS":1}`, `{"Max_Age":"1h"}`, `{"max_byteS":1}`,
		`{"max_events":1,"max_events":2}`, `{"max_events":1,"MAX_EVENTS":2}`, `{"max_age":"1h","max_\u0061ge":"2h"}`,
	} {
		var p store.Policy
		if err := json.Unmarshal([]byte(bad), &p); !errors.Is(err, store.ErrInvalidPolicy) {
			t.Errorf("%s: %v, want ErrInvalidPolicy", bad, err)
		}
	}
	var p store.Policy
	if err := json.Unmarshal([]byte(`{"max_\u0061ge":"1h","max_events":null,"max_bytes":5}`), &p); err != nil {
		t.Fatal(err)
	}
	if p.MaxAge == nil || *p.MaxAge != time.Hour || p.MaxEvents != nil || p.MaxBytes == nil || *p.MaxBytes != 5 {
		t.Fatalf("decoded %+v", p)
	}
}

// FuzzStrictObject holds StrictObject to encoding/json: it accepts
// exactly the valid UTF-8 objects that encoding/json reads with every key
// kept (no key repeated, at any depth), and returns the object's members
// as encoding/json reads them.
func FuzzStrictObject(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1,"b":[{"a":2}]}`, `{"a":1,"a":2}`, `{"x":{"k":1,"\u006b":2}}`, `[{}]`, `{"a":{}} {}`, "{\"\xff\":1}", `{"n":1e999}`, `{"s":"\"{\",\"a\":1,\"a\":2}"}`} {
		f.Add([]byte(s))
	}
	// UseNumber: StrictObject takes numbers beyond float64's range, as
	// encoding/json does into a json.Number.
	decode := func(b []byte, v any) error {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		if err := dec.Decode(v); err != nil {
			return err
		}
		if _, err := dec.Token(); err != io.EOF {
			return errors.New("data after the value")
		}
		return nil
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := store.StrictObject(b)
		var want map[string]any
		isObject := utf8.Valid(b) && decode(b, &want) == nil && want != nil
		exact := isObject && keyTokens(b) == keysKept(want)
		if !exact {
			if err == nil {
				t.Fatalf("StrictObject accepted %q, which is not valid UTF-8, not an object or repeats a key", b)
			}
			return
		}
		if err != nil {
			t.Fatalf("StrictObject refused %q: %v", b, err)
		}
		if len(got) != len(want) {
			t.Fatalf("%q: %d members, encoding/json reads %d", b, len(got), len(want))
		}
		for k, raw := range got {
			var v any
			if err := decode(raw, &v); err != nil || !reflect.DeepEqual(v, want[k]) {
				t.Fatalf("%q: member %q is %s, encoding/json reads %v", b, k, raw, want[k])
			}
		}
	})
}

// keyTokens counts the object keys in valid JSON, repeats included.
func keyTokens(b []byte) int {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var inObject []bool // per open container: is it an object
	wantKey := false
	n := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return n
		}
		if _, ok := tok.(string); ok && wantKey {
			n++
			wantKey = false
			continue
		}
		switch tok {
		case json.Delim('{'):
			inObject = append(inObject, true)
			wantKey = true
			continue
		case json.Delim('['):
			inObject = append(inObject, false)
			wantKey = false
			continue
		case json.Delim('}'), json.Delim(']'):
			inObject = inObject[:len(inObject)-1]
		}
		// A value ended: in an object, a key or the end comes next.
		wantKey = len(inObject) > 0 && inObject[len(inObject)-1]
	}
}

// keysKept counts the keys of every object in a decoded value.
func keysKept(v any) int {
	n := 0
	switch x := v.(type) {
	case map[string]any:
		n += len(x)
		for _, e := range x {
			n += keysKept(e)
		}
	case []any:
		for _, e := range x {
			n += keysKept(e)
		}
	}
	return n
}
