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

// history answers a page of a stream's events after an id, or from a
// time, for clients that backfill without SSE. A stream with no events
// has an empty history.
func (h *Handler) history(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["stream"]
	if err := store.ValidateStream(name); err != nil {
		h.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	if q.Get("last") != "" {
		// A page of the newest n would page backwards, which history does
		// not; the SSE stream takes last.
		h.writeError(w, r, errorf(http.StatusBadRequest, "last is not supported on history; use since or after"))
		return
	}
	afterText, sinceText := q.Get("after"), q.Get("since")
	if afterText != "" && sinceText != "" {
		h.writeError(w, r, errorf(http.StatusBadRequest, "give after or since, not both"))
		return
	}
	var after store.ID
	if afterText != "" {
		id, err := store.ParseID(afterText)
		if err != nil {
			h.writeError(w, r, errorf(http.StatusBadRequest, "after: %v", err))
			return
		}
		after = id
	}
	if sinceText != "" {
		id, err := parseSince(sinceText)
		if err != nil {
			h.writeError(w, r, err)
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
	// this page does not continue exactly from it. A page from a time
	// continues nothing: it starts at the oldest retained event at or
	// after it, whatever was removed before.
	gap := sinceText == "" && bounds.Gap(after)
	writeJSON(w, http.StatusOK, map[string]any{"events": out, "gap": gap})
}
