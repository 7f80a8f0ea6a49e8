package httpapi

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"sync/atomic"

	"github.com/gorilla/mux"

	"github.com/sselog/sselog/httpapi/internal/eventjson"
	"github.com/sselog/sselog/httpapi/internal/watchdog"
	"github.com/sselog/sselog/store"
)

func (h *Handler) publish(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["stream"]
	if err := store.ValidateStream(name); err != nil {
		h.writeError(w, r, err)
		return
	}
	// A bad key is refused before the body is read.
	keyName, keyed, err := idempotencyKey(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	body, release, err := h.readJSONBody(w, r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	// The decoded events take about as many bytes as the body: the
	// budget's share is kept until they are stored.
	defer release()
	events, batch, err := eventjson.Decode(body)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	var ids []store.ID
	if keyed {
		var replayed bool
		key := store.Key{Name: keyName, Digest: digest(events, batch)}
		ids, replayed, err = h.log.AppendOnce(r.Context(), name, key, events)
		if err != nil {
			h.writeError(w, r, err)
			return
		}
		if replayed {
			w.Header().Set("Idempotent-Replayed", "true")
		}
	} else if ids, err = h.log.Append(r.Context(), name, events); err != nil {
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

// idempotencyKeyHeader is the canonical form of Idempotency-Key
// (draft-ietf-httpapi-idempotency-key-header).
const idempotencyKeyHeader = "Idempotency-Key"

// idempotencyKey returns the request's Idempotency-Key, if it has one.
//
// A request repeats another when its decoded events are the same and it
// has the same shape (one event or a batch), since the shape decides the
// answer's: digest covers exactly that, so whitespace and key order in
// the body do not count, and a batch of one is not the same request as
// one event.
func idempotencyKey(r *http.Request) (name string, keyed bool, err error) {
	values, keyed := r.Header[idempotencyKeyHeader]
	if !keyed {
		return "", false, nil
	}
	if len(values) != 1 {
		return "", false, errorf(http.StatusBadRequest, "Idempotency-Key: give exactly one")
	}
	if err := store.ValidateKey(values[0]); err != nil {
		return "", false, fmt.Errorf("Idempotency-Key: %w", err)
	}
	return values[0], true, nil
}

// digest hashes what a publish request asks to store. Every field is
// length-prefixed, so no two requests hash the same input.
func digest(events []store.Event, batch bool) [32]byte {
	d := sha256.New()
	var buf [2 * binary.MaxVarintLen64]byte
	head := buf[:0]
	if batch {
		head = append(head, 1)
	} else {
		head = append(head, 0)
	}
	d.Write(binary.AppendUvarint(head, uint64(len(events))))
	for i := range events {
		d.Write(binary.AppendUvarint(buf[:0], uint64(len(events[i].Type))))
		io.WriteString(d, events[i].Type)
		d.Write(binary.AppendUvarint(buf[:0], uint64(len(events[i].Data))))
		d.Write(events[i].Data)
	}
	return [32]byte(d.Sum(nil))
}

// readJSONBody reads a request's JSON body within the read timeout, the
// body size limit and the server's body memory budget. release gives the
// body's bytes back to the budget; call it once the body, and what was
// decoded from it, are no longer needed.
func (h *Handler) readJSONBody(w http.ResponseWriter, r *http.Request) (body []byte, release func(), err error) {
	// Requiring JSON also keeps cross-site HTML forms out: a browser sends
	// application/json to another origin only after a CORS preflight.
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return nil, nil, errorf(http.StatusUnsupportedMediaType, "Content-Type must be application/json")
	}
	// A body announced as too large is refused before a byte is read.
	if r.ContentLength > h.opts.MaxBody {
		return nil, nil, &http.MaxBytesError{Limit: h.opts.MaxBody}
	}
	// The server sets no ReadTimeout (it would end SSE streams), so the
	// body gets its own: a stalled client cannot hold a handler. Over
	// HTTP/1 ServeHTTP has set a read deadline; over HTTP/2 it is a
	// watchdog, never a deadline set ahead (see package watchdog).
	var dog *watchdog.Watchdog
	if r.ProtoMajor != 1 {
		rc := http.NewResponseController(w)
		dog = watchdog.New(h.opts.ReadTimeout, func() { _ = rc.SetReadDeadline(watchdog.Past) })
		dog.Start()
	}
	// MaxBytesReader closes the connection after a body over the limit
	// only when it is given net/http's own writer: not a wrapper (such as
	// the one that counts publish answers for the metrics).
	body, held, err := readBody(http.MaxBytesReader(baseWriter(w), r.Body, h.opts.MaxBody), r.ContentLength, h.opts.MaxBody, h.bodies)
	if dog != nil && dog.Close() && err == nil {
		// The whole body arrived as the time ran out, and the past
		// deadline may still be set: answer as if it had not.
		err = os.ErrDeadlineExceeded
	}
	if err != nil {
		h.bodies.give(held)
		if errors.Is(err, errBodyBudget) && r.ProtoMajor == 1 {
			// The rest of the body is still on the wire: net/http would
			// wait for it before reading the next request.
			w.Header().Set("Connection", "close")
		}
		return nil, nil, bodyError(err)
	}
	return body, func() { h.bodies.give(held) }, nil
}

// firstBodyBuffer is the buffer a body is first read into when its length
// is unknown or larger. Memory follows the bytes that arrive, not the
// length announced: a client that announces a megabyte and sends ten
// bytes holds this much, not a megabyte. It is large enough that a
// typical batch is read in one buffer (4 KiB cost a batch of 100 events
// about 5% of its throughput in BenchmarkPublishHTTP, in copies and
// garbage), and small enough that a thousand stalled bodies hold 16 MiB.
const firstBodyBuffer = 16 << 10

// errBodyBudget is returned by readBody when the bodies in flight already
// hold the server's body memory budget.
var errBodyBudget = errors.New("publish bodies in flight hold the server's body memory budget")

// readBody reads a whole body of at most limit bytes into one buffer that
// grows as bytes arrive (by doubling, or to the announced length once a
// quarter of it is in), its capacity taken from budget as it grows. held is the capacity taken, which the caller gives back, also on
// error. A body whose Content-Length is small is read into a buffer of
// exactly that size.
func readBody(r io.Reader, contentLength, limit int64, budget *byteBudget) (body []byte, held int64, err error) {
	size := int64(firstBodyBuffer)
	if contentLength >= 0 && contentLength < size {
		// One byte more than announced, to see the end without growing.
		size = contentLength + 1
	}
	if !budget.take(size) {
		return nil, 0, errBodyBudget
	}
	held = size
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			// The reader stops a body at limit bytes, with an error; one
			// byte more makes the error reachable without another growth.
			grown := min(2*int64(cap(buf)), limit+1)
			if contentLength >= 0 {
				// Once a quarter of the announced length has arrived,
				// the rest is taken at once: fewer copies, and memory
				// still within four times what was received.
				if contentLength < 4*int64(len(buf)) {
					grown = contentLength + 1
				}
				grown = min(grown, contentLength+1)
			}
			if grown <= int64(cap(buf)) {
				grown = int64(cap(buf)) + firstBodyBuffer
			}
			if !budget.take(grown - held) {
				return nil, held, errBodyBudget
			}
			held = grown
			buf = append(make([]byte, 0, grown), buf...)
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, held, nil
		}
		if err != nil {
			return nil, held, err
		}
	}
}

// byteBudget caps the bytes held by several holders together.
type byteBudget struct {
	max  int64
	used atomic.Int64
}

// take reserves n bytes, and reports false, reserving nothing, when that
// would exceed the cap.
func (b *byteBudget) take(n int64) bool {
	if b.used.Add(n) > b.max {
		b.used.Add(-n)
		return false
	}
	return true
}

// give returns n bytes reserved by take.
func (b *byteBudget) give(n int64) {
	if n != 0 {
		b.used.Add(-n)
	}
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
	case errors.Is(err, errBodyBudget):
		return errorf(http.StatusServiceUnavailable, "the server holds as many request bodies as it may; retry later")
	default:
		return errorf(http.StatusBadRequest, "reading request body: %v", err)
	}
}
