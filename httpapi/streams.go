package httpapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"

	"github.com/sselog/sselog/httpapi/internal/watchdog"
	"github.com/sselog/sselog/store"
)

// streamView is a stream as GET /v1/streams/{stream} shows it.
type streamView struct {
	store.StreamInfo
	Retention   retentionView   `json:"retention"`
	Idempotency idempotencyView `json:"idempotency"`
}

// idempotencyView states how long the stream remembers an
// Idempotency-Key: the server's window, the same for every stream.
type idempotencyView struct {
	Window string `json:"window"`
}

type retentionView struct {
	// Override is what was set for the stream; fields not set inherit the
	// server's defaults.
	Override store.Policy `json:"override"`
	// Effective is what the retention worker applies.
	Effective store.Limits `json:"effective"`
}

func (h *Handler) retentionOf(name string) (retentionView, error) {
	p, err := h.log.Policy(name)
	if err != nil {
		return retentionView{}, err
	}
	return retentionView{Override: p, Effective: h.opts.Retention.Apply(p)}, nil
}

func (h *Handler) getStream(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["stream"]
	info, err := h.log.Stream(name)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	ret, err := h.retentionOf(name)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, streamView{
		StreamInfo:  info,
		Retention:   ret,
		Idempotency: idempotencyView{Window: h.log.IdempotencyWindow().String()},
	})
}

// deleteStream removes a stream with its events and policy. Its subscribers
// are sent a reset and closed by the hub, which the log tells in order.
func (h *Handler) deleteStream(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["stream"]
	lowWater, err := h.log.DeleteStream(r.Context(), name)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	h.logger.Info("stream deleted", "stream", name, "low_water", lowWater)
	writeJSON(w, http.StatusOK, map[string]any{"deleted": name, "low_water": lowWater})
}

func (h *Handler) getRetention(w http.ResponseWriter, r *http.Request) {
	ret, err := h.retentionOf(mux.Vars(r)["stream"])
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ret)
}

// putRetention replaces a stream's override with the policy in the body.
func (h *Handler) putRetention(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["stream"]
	if err := store.ValidateStream(name); err != nil {
		h.writeError(w, r, err)
		return
	}
	body, release, err := h.readJSONBody(w, r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	defer release()
	// The policy's own decoder reads the whole body, so that every byte
	// of it goes through its exact rules (keys matched byte for byte, none
	// twice); every refusal is ErrInvalidPolicy, a 400.
	var p store.Policy
	if err := p.UnmarshalJSON(body); err != nil {
		h.writeError(w, r, err)
		return
	}
	if err := h.log.SetPolicy(name, p); err != nil {
		h.writeError(w, r, err)
		return
	}
	h.getRetention(w, r)
}

func (h *Handler) deleteRetention(w http.ResponseWriter, r *http.Request) {
	if err := h.log.DeletePolicy(mux.Vars(r)["stream"]); err != nil {
		h.writeError(w, r, err)
		return
	}
	h.getRetention(w, r)
}

// backup streams a consistent copy of the database. Publishing goes on
// meanwhile; the copy holds what was committed when it began.
func (h *Handler) backup(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	started := false
	dw := &deadlineWriter{w: w, dog: watchdog.New(h.opts.WriteTimeout, func() { _ = rc.SetWriteDeadline(watchdog.Past) })}
	defer dw.dog.Close()
	n, err := h.log.Backup(dw, func(size int64) {
		started = true
		hdr := w.Header()
		hdr.Set("Content-Type", "application/octet-stream")
		hdr.Set("Content-Length", strconv.FormatInt(size, 10))
		hdr.Set("Content-Disposition", `attachment; filename="sselog-`+time.Now().UTC().Format("20060102T150405Z")+`.db"`)
		w.WriteHeader(http.StatusOK)
	})
	if err != nil {
		if !started {
			h.writeError(w, r, err)
			return
		}
		// The status is sent: a short body (Content-Length is set) is how
		// the client learns the copy failed.
		h.logger.Warn("backup ended early", "bytes", n, "err", err)
		return
	}
	h.logger.Info("backup sent", "bytes", n)
}

// deadlineWriter cuts each write that makes no progress for the write
// timeout, so that a client that stops reading a backup frees its read
// transaction, while a long copy to a live client is not cut. It uses a
// watchdog, not a deadline set ahead (see package watchdog).
type deadlineWriter struct {
	w   http.ResponseWriter
	dog *watchdog.Watchdog
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	d.dog.Start()
	defer d.dog.Stop()
	return d.w.Write(p)
}
