package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/sselog/sselog/store"
)

type historyEvent struct {
	ID store.ID `json:"id"`
	historyEventBody
}

// historyEventBody is what a history page shows of an event beside its id
// (and, merged, its stream).
type historyEventBody struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
	Time string          `json:"time"`
}

// bodyOf copies what a history page shows of e out of the read
// transaction: "message" for an untyped event, as SSE gives it, and the
// id's time in RFC 3339 (UTC, milliseconds).
func bodyOf(e *store.Event) historyEventBody {
	typ := e.Type
	if typ == "" {
		typ = "message"
	}
	return historyEventBody{Type: typ, Data: bytes.Clone(e.Data), Time: e.ID.Time().UTC().Format(time.RFC3339Nano)}
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
	after, continues, err := historyStart(q, func(n int) (store.ID, error) { return h.log.StartOfLast(name, n) })
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	limit, err := historyLimit(q)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	out := make([]historyEvent, 0, min(limit, 64))
	bounds, err := h.log.Scan(name, after, limit, func(e *store.Event) error {
		out = append(out, historyEvent{ID: e.ID, historyEventBody: bodyOf(e)})
		return nil
	})
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	// gap: events after `after` were removed by retention or deletion, so
	// this page does not continue exactly from it. A page from a time
	// continues nothing: it starts at the oldest retained event at or
	// after it, whatever was removed before.
	gap := continues && bounds.Gap(after)
	writeJSON(w, http.StatusOK, map[string]any{"events": out, "gap": gap})
}

// historyStart reads where a history page starts: after an id (a page
// that continues another, which reports a gap), or by time or by count
// (no continuity claimed). At most one of after, since and last; none is
// the beginning. lastStart finds the id before the newest n.
func historyStart(q url.Values, lastStart func(n int) (store.ID, error)) (after store.ID, continues bool, err error) {
	var given []string
	for _, p := range []string{"after", "since", "last"} {
		if q.Get(p) != "" {
			given = append(given, p)
		}
	}
	switch {
	case len(given) > 1:
		return after, false, errorf(http.StatusBadRequest, "give at most one of after, since and last (got %s)", strings.Join(given, " and "))
	case len(given) == 0:
		return after, true, nil
	}
	switch v := q.Get(given[0]); given[0] {
	case "after":
		id, err := store.ParseID(v)
		if err != nil {
			return after, false, errorf(http.StatusBadRequest, "after: %v", err)
		}
		return id, true, nil
	case "since":
		id, err := parseSince(v)
		return id, false, err
	default:
		n, err := parseLast(v)
		if err != nil {
			return after, false, err
		}
		id, err := lastStart(n)
		return id, false, err
	}
}

// historyLimit reads a history page's limit.
func historyLimit(q url.Values) (int, error) {
	s := q.Get("limit")
	if s == "" {
		return DefaultHistoryLimit, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, errorf(http.StatusBadRequest, "limit must be a positive integer (at most %d events are returned)", MaxHistoryLimit)
	}
	return min(n, MaxHistoryLimit), nil
}
