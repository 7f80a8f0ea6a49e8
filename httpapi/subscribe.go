package httpapi

import (
	"errors"
	"net/http"
	"time"

	"github.com/gorilla/mux"

	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

var heartbeat = []byte(":\n\n")

// deadlineEvery is how many bytes a subscriber is sent under one write
// deadline before the deadline is moved on.
const deadlineEvery = 64 << 10

func (h *Handler) subscribe(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["stream"]
	if err := store.ValidateStream(name); err != nil {
		h.writeError(w, r, err)
		return
	}
	source, resume := "Last-Event-ID", r.Header.Get("Last-Event-ID")
	if resume == "" {
		source, resume = "last_event_id", r.URL.Query().Get("last_event_id")
	}
	var after store.ID
	if resume != "" {
		id, err := store.ParseID(resume)
		if err != nil {
			h.writeError(w, r, errorf(http.StatusBadRequest, "%s: %v", source, err))
			return
		}
		after = id
	}
	sub, err := h.hub.Subscribe(name, after, resume != "")
	if errors.Is(err, stream.ErrClosed) {
		// Shutting down. Any answer but 200 makes EventSource give up for
		// good; an empty stream with the retry hint makes it come back.
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(h.retry)
		return
	}
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	defer sub.Close()

	rc := http.NewResponseController(w)
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	timer := time.NewTimer(h.opts.Heartbeat)
	defer timer.Stop()
	// extend moves the write deadline: a subscriber is cut off when a
	// write makes no progress for the write timeout, not when a long
	// replay takes longer than that in total.
	extend := func() bool {
		err := rc.SetWriteDeadline(time.Now().Add(h.opts.WriteTimeout))
		return err == nil || errors.Is(err, http.ErrNotSupported)
	}
	// send writes chunks with one flush at the end, and reports whether the
	// subscriber is still there.
	send := func(chunks ...[]byte) bool {
		if !extend() {
			return false
		}
		pending := 0
		for _, c := range chunks {
			if pending += len(c); pending > deadlineEvery {
				if !extend() {
					return false
				}
				pending = len(c)
			}
			if _, err := w.Write(c); err != nil {
				h.logger.Debug("subscriber gone", "stream", name, "cursor", sub.Cursor(), "err", err)
				return false
			}
		}
		if err := rc.Flush(); err != nil {
			h.logger.Debug("subscriber gone", "stream", name, "cursor", sub.Cursor(), "err", err)
			return false
		}
		timer.Reset(h.opts.Heartbeat)
		return true
	}
	if !send(h.retry) {
		return
	}
	for {
		frames, wake, err := sub.Next()
		if err != nil {
			// Closed means shutting down; the client resumes elsewhere or
			// later. Deleted means the reset that says so has been sent.
			if !errors.Is(err, stream.ErrClosed) && !errors.Is(err, store.ErrClosed) && !errors.Is(err, stream.ErrDeleted) {
				h.logger.Error("subscription failed", "stream", name, "cursor", sub.Cursor(), "err", err)
			}
			return
		}
		if len(frames) > 0 {
			if !send(frames...) {
				return
			}
			continue
		}
		select {
		case <-wake:
		case <-timer.C:
			if !send(heartbeat) {
				return
			}
		case <-r.Context().Done():
			return
		}
	}
}
