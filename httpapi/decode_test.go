package httpapi

import (
	"net/http"
	"testing"

	"github.com/sselog/sselog/httpapi/internal/eventjson"
)

// TestDecodeErrorStatus pins what a client is told about a body the
// decoder refuses: 400, and the decoder's own text, word for word as it
// was when the decoder lived in this package. The decoder's agreement with
// encoding/json is eventjson's FuzzDecodeEvents.
func TestDecodeErrorStatus(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"not_utf8", "{\"data\":\"\xff\"}", "body is not valid UTF-8"},
		{"empty", " ", "body is empty: send an event object or an array of them"},
		{"empty_batch", `[]`, "empty batch: send at least one event"},
		{"not_an_object", `null`, "body must be a JSON event object or an array of them"},
		{"batch_member", `[{"data":1},2]`, "event 1: each event must be a JSON object"},
		{"trailing", `{"data":1} x`, "unexpected data after the JSON value"},
		{"no_data", `{"type":"x"}`, `"data" is required`},
		{"twice", `[{"data":1,"data":2}]`, `event 0: "data" given twice`},
		{"unknown_key", `{"Data":1}`, `unknown field "Data": an event has only "type" and "data"`},
		{"type_not_string", `{"type":1,"data":1}`, `field "type" must be a JSON string`},
		{"syntax", `{"data":01}`, "malformed JSON at byte 9: want , or } in an event"},
		{"unterminated", `{"data":"x`, "malformed JSON at byte 10: unterminated string"},
		{"deep", `{"data":` + nest(70) + `}`, "data nested deeper than 64 levels"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := eventjson.Decode([]byte(tc.body))
			if err == nil {
				t.Fatalf("Decode(%q) accepted", tc.body)
			}
			status, msg := errorStatus(err)
			if status != http.StatusBadRequest || msg != tc.want {
				t.Fatalf("Decode(%q): %d %q, want 400 %q", tc.body, status, msg, tc.want)
			}
		})
	}
}

func nest(n int) string {
	b := make([]byte, 0, 2*n)
	for range n {
		b = append(b, '[')
	}
	for range n {
		b = append(b, ']')
	}
	return string(b)
}
