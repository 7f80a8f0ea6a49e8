package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// ErrNotStrictJSON is returned by StrictObject for input that is not one
// JSON object under its exact rules. Callers wrap it in their own error
// (ErrInvalidPolicy, the HTTP layer's invalid token).
var ErrNotStrictJSON = errors.New("not strict JSON")

// StrictObject parses b as exactly one JSON object and returns its members
// by key, for a caller that then matches the keys it knows byte for byte
// and decodes each value on its own.
//
// It exists because encoding/json, decoding into a struct, matches keys
// case-insensitively (with Unicode folding: "ſ" is "s"), lets a later
// duplicate key win, and DisallowUnknownFields does not catch a key that
// differs from a field only in case. For input that carries authority (a
// token's claims, a retention policy), any of these lets one body mean
// two things to two readers. So StrictObject refuses, with
// ErrNotStrictJSON:
//   - input that is not valid UTF-8 (encoding/json would quietly replace
//     the bad bytes, so two different keys could decode alike);
//   - anything but one object, with only whitespace around it;
//   - any object, at any depth, holding a key twice, comparing keys after
//     their escapes are decoded ("a" and "\u0061" are the same key).
//
// Values are returned as they are written; a value that holds objects
// has been checked for duplicate keys, so a caller may decode it with
// encoding/json as long as it does not rely on key matching inside it.
func StrictObject(b []byte) (map[string]json.RawMessage, error) {
	if !utf8.Valid(b) {
		return nil, fmt.Errorf("%w: not valid UTF-8", ErrNotStrictJSON)
	}
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return nil, fmt.Errorf("%w: not a JSON object", ErrNotStrictJSON)
	}
	var m map[string]json.RawMessage
	// This checks the syntax, and that the object is all of b but
	// whitespace.
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotStrictJSON, err)
	}
	// With no key repeated, the map holds every member, and a map's keys
	// are matched exactly.
	if err := noRepeatedKey(b); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotStrictJSON, err)
	}
	return m, nil
}

// noRepeatedKey reports a key given twice in one object of b, which must
// be valid JSON. It runs for every request that carries a token, so it
// walks the bytes once instead of building values: one map entry per key.
func noRepeatedKey(b []byte) error {
	type open struct {
		obj     int  // this object's number, or -1 for an array
		wantKey bool // in an object, the next string is a key
	}
	type member struct {
		obj int
		key string
	}
	var stack []open
	seen := map[member]bool{}
	objects := 0
	for i := 0; i < len(b); {
		switch b[i] {
		case '{':
			stack = append(stack, open{obj: objects, wantKey: true})
			objects++
		case '[':
			stack = append(stack, open{obj: -1})
		case '}', ']':
			stack = stack[:len(stack)-1]
		case ',':
			if top := &stack[len(stack)-1]; top.obj >= 0 {
				top.wantKey = true
			}
		case '"':
			end := i + 1
			escaped := false
			for b[end] != '"' {
				if b[end] == '\\' {
					escaped = true
					end++
				}
				end++
			}
			end++ // past the closing quote
			if top := &stack[len(stack)-1]; top.wantKey {
				top.wantKey = false
				key := string(b[i+1 : end-1])
				if escaped {
					// Compared as decoded: "a" and "\u0061" are one key.
					if err := json.Unmarshal(b[i:end], &key); err != nil {
						return err
					}
				}
				m := member{top.obj, key}
				if seen[m] {
					return fmt.Errorf("key %q appears twice in one object", key)
				}
				seen[m] = true
			}
			i = end
			continue
		}
		i++
	}
	return nil
}
