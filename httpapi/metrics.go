package httpapi

import "net/http"

// observePublish reports the status of every answer next gives, when
// Options.ObservePublish is set; otherwise it is next itself, and a
// publish pays nothing for metrics.
func (h *Handler) observePublish(next http.HandlerFunc) http.HandlerFunc {
	observe := h.opts.ObservePublish
	if observe == nil {
		return next
	}
	return func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next(sw, r)
		observe(sw.status)
	}
}

// statusWriter remembers the status of the answer written through it.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection beneath: the
// publish handler sets read deadlines through it.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// OpenStreams reports how many SSE streams are open.
func (h *Handler) OpenStreams() int { return h.wire.Open() }

// baseWriter is w with every wrapper that has an Unwrap method taken off.
func baseWriter(w http.ResponseWriter) http.ResponseWriter {
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		w = u.Unwrap()
	}
}
