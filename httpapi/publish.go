package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gorilla/mux"

	"github.com/sselog/sselog/store"
)

// wireEvent is one event as a publisher sends it.
type wireEvent struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

func (h *Handler) publish(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["stream"]
	if err := store.ValidateStream(name); err != nil {
		h.writeError(w, r, err)
		return
	}
	body, err := h.readJSONBody(w, r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	events, batch, err := decodeEvents(body)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	ids, err := h.log.Append(r.Context(), name, events)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	// Ids are 26 safe characters: the answer is built without reflection.
	out := make([]byte, 0, 16+29*len(ids))
	if batch {
		out = append(out, `{"ids":[`...)
		for i, id := range ids {
			if i > 0 {
				out = append(out, ',')
			}
			out = append(id.AppendText(append(out, '"')), '"')
		}
		out = append(out, "]}\n"...)
	} else {
		out = append(ids[0].AppendText(append(out, `{"id":"`...)), "\"}\n"...)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write(out)
}

// readJSONBody reads a request's JSON body within the read timeout and the
// body size limit.
func (h *Handler) readJSONBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	// Requiring JSON also keeps cross-site HTML forms out: a browser sends
	// application/json to another origin only after a CORS preflight.
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return nil, errorf(http.StatusUnsupportedMediaType, "Content-Type must be application/json")
	}
	// The server sets no ReadTimeout (it would end SSE streams), so the
	// body gets its own deadline: a stalled client cannot hold a handler.
	err := http.NewResponseController(w).SetReadDeadline(time.Now().Add(h.opts.ReadTimeout))
	if err != nil && !errors.Is(err, http.ErrNotSupported) {
		return nil, err
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxBody))
	if err != nil {
		return nil, bodyError(err)
	}
	return body, nil
}

// bodyError classifies a failure to read a publish body: it was the
// client's doing, whether too large, too slow or malformed on the wire.
func bodyError(err error) error {
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return err
	case errors.Is(err, os.ErrDeadlineExceeded):
		return errorf(http.StatusRequestTimeout, "request body not received in time")
	default:
		return errorf(http.StatusBadRequest, "reading request body: %v", err)
	}
}

// decodeEvents parses a publish body: one event object, or a non-empty
// array of them. It reports whether the body was an array. Each event's data
// is compacted, so that it is one line of JSON however it was sent.
func decodeEvents(body []byte) ([]store.Event, bool, error) {
	if !utf8.Valid(body) {
		return nil, false, errorf(http.StatusBadRequest, "body is not valid UTF-8")
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, false, errorf(http.StatusBadRequest, "body is empty: send an event object or an array of them")
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	var wire []wireEvent
	batch := trimmed[0] == '['
	switch trimmed[0] {
	case '[':
		if err := dec.Decode(&wire); err != nil {
			return nil, true, badJSON(err)
		}
		if len(wire) == 0 {
			return nil, true, errorf(http.StatusBadRequest, "empty batch: send at least one event")
		}
	case '{':
		wire = make([]wireEvent, 1)
		if err := dec.Decode(&wire[0]); err != nil {
			return nil, false, badJSON(err)
		}
	default:
		return nil, false, errorf(http.StatusBadRequest, "body must be a JSON event object or an array of them")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, batch, errorf(http.StatusBadRequest, "unexpected data after the JSON value")
	}
	events := make([]store.Event, len(wire))
	// One buffer holds every event's compacted data: a batch costs one
	// allocation here, not one per event.
	var buf bytes.Buffer
	buf.Grow(len(trimmed))
	for i, we := range wire {
		if we.Data == nil {
			return nil, batch, eventError(batch, i, "\"data\" is required")
		}
		if err := store.ValidateType(we.Type); err != nil {
			return nil, batch, eventError(batch, i, err.Error())
		}
		start := buf.Len()
		if err := json.Compact(&buf, we.Data); err != nil {
			return nil, batch, badJSON(err)
		}
		events[i] = store.Event{Type: we.Type, Data: buf.Bytes()[start:buf.Len():buf.Len()]}
	}
	return events, batch, nil
}

func eventError(batch bool, i int, msg string) error {
	if batch {
		return errorf(http.StatusBadRequest, "event %d: %s", i, msg)
	}
	return errorf(http.StatusBadRequest, "%s", msg)
}

// badJSON describes a decoding error in the client's terms, not Go's.
func badJSON(err error) error {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		if typeErr.Field == "" || typeErr.Field == typeErr.Struct {
			return errorf(http.StatusBadRequest, "each event must be a JSON object, not a JSON %s", typeErr.Value)
		}
		return errorf(http.StatusBadRequest, "field %q must not be a JSON %s", typeErr.Field, typeErr.Value)
	}
	if field, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return errorf(http.StatusBadRequest, "unknown field %s: an event has only \"type\" and \"data\"", field)
	}
	return errorf(http.StatusBadRequest, "malformed JSON: %v", err)
}
