package httpapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"

	"github.com/sselog/sselog/store"
)

type historyEvent struct {
	ID   store.ID        `json:"id"`
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
	Time string          `json:"time"`
}

// history answers a page of a stream's events after an id, for clients
// that backfill without SSE. A stream with no events has an empty history.
func (h *Handler) history(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["stream"]
	if err := store.ValidateStream(name); err != nil {
		h.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	var after store.ID
	if s := q.Get("after"); s != "" {
		id, err := store.ParseID(s)
		if err != nil {
			h.writeError(w, r, errorf(http.StatusBadRequest, "after: %v", err))
			return
		}
		after = id
	}
	limit := DefaultHistoryLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			h.writeError(w, r, errorf(http.StatusBadRequest, "limit must be a positive integer (at most %d events are returned)", MaxHistoryLimit))
			return
		}
		limit = min(n, MaxHistoryLimit)
	}
	events, bounds, err := h.log.ReadPage(name, after, limit)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	out := make([]historyEvent, len(events))
	for i, e := range events {
		typ := e.Type
		if typ == "" {
			typ = "message"
		}
		out[i] = historyEvent{
			ID:   e.ID,
			Type: typ,
			Data: e.Data,
			Time: e.ID.Time().UTC().Format(time.RFC3339Nano),
		}
	}
	// gap: events after `after` were removed by retention or deletion, so
	// this page does not continue exactly from it.
	writeJSON(w, http.StatusOK, map[string]any{"events": out, "gap": bounds.Gap(after)})
}
