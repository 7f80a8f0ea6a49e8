package httpapi

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"net/http"
	"os"
	"time"
	"unicode/utf8"

	"github.com/gorilla/mux"

	"github.com/sselog/sselog/store"
)

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
	// A body announced as too large is refused before a byte is read.
	if r.ContentLength > h.opts.MaxBody {
		return nil, &http.MaxBytesError{Limit: h.opts.MaxBody}
	}
	// The server sets no ReadTimeout (it would end SSE streams), so the
	// body gets its own deadline: a stalled client cannot hold a handler.
	err := http.NewResponseController(w).SetReadDeadline(time.Now().Add(h.opts.ReadTimeout))
	if err != nil && !errors.Is(err, http.ErrNotSupported) {
		return nil, err
	}
	body, err := readBody(http.MaxBytesReader(w, r.Body, h.opts.MaxBody), r.ContentLength)
	if err != nil {
		return nil, bodyError(err)
	}
	return body, nil
}

// readBody reads a whole body into one buffer sized from Content-Length
// (which the caller has held to the body limit) when the client sent one,
// instead of growing one by doubling from 512 bytes.
func readBody(r io.Reader, contentLength int64) ([]byte, error) {
	buf := bytes.NewBuffer(make([]byte, 0, max(contentLength, 0)+bytes.MinRead))
	_, err := buf.ReadFrom(r)
	return buf.Bytes(), err
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
	p := eventParser{b: body}
	return p.parse()
}
