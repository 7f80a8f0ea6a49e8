package httpapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
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

// history answers a page of a stream's events after an id, from a time,
// or from the newest n, for clients that backfill without SSE. A stream with no events
// has an empty history.
func (h *Handler) history(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["stream"]
	if err := store.ValidateStream(name); err != nil {
		h.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	var given []string
	for _, p := range []string{"after", "since", "last"} {
		if q.Get(p) != "" {
			given = append(given, p)
		}
	}
	if len(given) > 1 {
		h.writeError(w, r, errorf(http.StatusBadRequest, "give at most one of after, since and last (got %s)", strings.Join(given, " and ")))
		return
	}
	// A start by time or by count claims no continuity: no gap is
	// reported for what was removed before it.
	var after store.ID
	continues := true
	if len(given) == 1 {
		switch v := q.Get(given[0]); given[0] {
		case "after":
			id, err := store.ParseID(v)
			if err != nil {
				h.writeError(w, r, errorf(http.StatusBadRequest, "after: %v", err))
				return
			}
			after = id
		case "since":
			id, err := parseSince(v)
			if err != nil {
				h.writeError(w, r, err)
				return
			}
			after, continues = id, false
		default:
			n, err := parseLast(v)
			if err != nil {
				h.writeError(w, r, err)
				return
			}
			id, err := h.log.StartOfLast(name, n)
			if err != nil {
				h.writeError(w, r, err)
				return
			}
			after, continues = id, false
		}
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
	gap := continues && bounds.Gap(after)
	writeJSON(w, http.StatusOK, map[string]any{"events": out, "gap": gap})
}
