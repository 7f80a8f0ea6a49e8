package httpapi

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// MaxMergedStreams is how many stream parameters one merged request may
// give.
const MaxMergedStreams = 64

// selection is the streams of a merged request: names and patterns, as
// given, and with a token, the patterns it may subscribe to. A stream is
// selected when it is named or matches a pattern, and the token grants
// it: a pattern wider than the grants is narrowed to them, never widened.
type selection struct {
	names    []string
	patterns []string
	grants   []string // nil: no token key configured, everything granted
	limited  bool
}

// parseSelection reads the stream parameters of a merged request and the
// grants of its token, if any. It refuses no parameter, more than
// MaxMergedStreams, an invalid name or pattern (400), and a request that
// no stream its token grants could ever match (403).
func (h *Handler) parseSelection(r *http.Request) (*selection, error) {
	values := r.URL.Query()["stream"]
	switch {
	case len(values) == 0:
		return nil, errorf(http.StatusBadRequest, "give at least one stream parameter (a name, or a pattern with *)")
	case len(values) > MaxMergedStreams:
		return nil, errorf(http.StatusBadRequest, "at most %d stream parameters, not %d", MaxMergedStreams, len(values))
	}
	sel := &selection{}
	for _, v := range values {
		if strings.Contains(v, "*") {
			if err := validatePattern(v); err != nil {
				return nil, errorf(http.StatusBadRequest, "stream: %v", err)
			}
			if !mayMatch(v) {
				return nil, errorf(http.StatusBadRequest, "stream pattern %.130q matches no stream name (none starts with '.' or is longer than %d characters)", v, store.MaxStreamLen)
			}
			sel.patterns = append(sel.patterns, v)
			continue
		}
		if err := store.ValidateStream(v); err != nil {
			return nil, errorf(http.StatusBadRequest, "stream %.130q: %v", v, err)
		}
		sel.names = append(sel.names, v)
	}
	if g, ok := r.Context().Value(grantsKey{}).(*grants); ok && h.opts.Auth != nil {
		sel.grants, sel.limited = g.Subscribe, true
		if !sel.grantable() {
			return nil, fmt.Errorf("%w: the token may subscribe to no stream these stream parameters select", ErrForbidden)
		}
	}
	return sel, nil
}

// grantable reports whether some stream could be both selected and
// granted.
func (s *selection) grantable() bool {
	for _, g := range s.grants {
		for _, n := range s.names {
			if matchPattern(g, n) {
				return true
			}
		}
		for _, p := range s.patterns {
			if patternsMeet(p, g) {
				return true
			}
		}
	}
	return false
}

// match reports whether stream is selected and granted.
func (s *selection) match(stream string) bool {
	if s.limited && !matchAny(s.grants, stream) {
		return false
	}
	return slices.Contains(s.names, stream) || matchAny(s.patterns, stream)
}

// store is the selection as the log reads it: the granted names, and the
// patterns through match. Names alone read no list of streams.
func (s *selection) store() store.Selection {
	var sel store.Selection
	for _, n := range s.names {
		if !s.limited || matchAny(s.grants, n) {
			sel.Names = append(sel.Names, n)
		}
	}
	if len(s.patterns) > 0 {
		sel.Match = s.match
	}
	return sel
}

// patternsMeet reports whether some string matches both patterns, where
// '*' matches any run of characters. It walks pairs of positions (i in p,
// j in q) in order, keeping one row of reachable pairs: a star may match
// nothing (step past it), or take one character of the other pattern (a
// literal, or some character of the other's star), and two equal
// literals step together. O(len(p)·len(q)) time, O(len(q)) memory.
func patternsMeet(p, q string) bool {
	// row[j]: the pair (i, j) is reachable, for the current i.
	row := make([]bool, len(q)+1)
	next := make([]bool, len(q)+1)
	row[0] = true
	for i := 0; ; i++ {
		// Moves within row i: q's star matching nothing, or taking a
		// character of p's star (i, j) → (i, j+1).
		for j := 0; j < len(q); j++ {
			if row[j] && (q[j] == '*' || i < len(p) && p[i] == '*') {
				row[j+1] = true
			}
		}
		if i == len(p) {
			return row[len(q)]
		}
		// Moves to row i+1: p's star matching nothing or taking a
		// character of q, q's star taking p's literal, equal literals.
		clear(next)
		for j := 0; j <= len(q); j++ {
			if !row[j] {
				continue
			}
			switch {
			case p[i] == '*':
				next[j] = true
			case j < len(q) && q[j] == '*':
				next[j] = true
			}
			if j < len(q) && p[i] != '*' && q[j] != '*' && p[i] == q[j] {
				next[j+1] = true
			}
		}
		row, next = next, row
	}
}

// mayMatch reports whether pattern can match some valid stream name: none
// starts with '.', and none is longer than store.MaxStreamLen.
func mayMatch(pattern string) bool {
	return pattern[0] != '.' && len(pattern)-strings.Count(pattern, "*") <= store.MaxStreamLen
}

// mergedSubscribe is GET /v1/events: the SSE stream of several streams,
// merged in id order, each event's data in an envelope that names its
// stream. It starts as the single-stream endpoint does (sseStart).
func (h *Handler) mergedSubscribe(w http.ResponseWriter, r *http.Request) {
	sel, err := h.parseSelection(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	st, err := sseStart(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	h.serveFeed(w, r, st, "(merged)", func() (feed, error) {
		opts := stream.MergedOptions{Selection: sel.store(), Match: sel.match, After: st.after}
		switch st.kind {
		case startResume:
			opts.Start = stream.MergedResume
		case startSince:
			opts.Start = stream.MergedFrom
		case startLast:
			opts.Start = stream.MergedFrom
			var err error
			if opts.After, err = h.log.StartOfLastMerged(opts.Selection, st.last); err != nil {
				return nil, err
			}
		default:
			opts.Start = stream.MergedLive
		}
		m, err := h.hub.SubscribeMerged(opts)
		if err != nil {
			return nil, err
		}
		return m, nil
	})
}

// mergedEvent is an event of a merged history page.
type mergedEvent struct {
	ID     store.ID `json:"id"`
	Stream string   `json:"stream"`
	historyEventBody
}

// mergedHistory is GET /v1/history: a page of the merged events of
// several streams, as JSON, each with its stream. "gap" is true when any
// selected stream lost events after the page's start.
func (h *Handler) mergedHistory(w http.ResponseWriter, r *http.Request) {
	sel, err := h.parseSelection(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	ssel := sel.store()
	after, continues, err := historyStart(q, func(n int) (store.ID, error) { return h.log.StartOfLastMerged(ssel, n) })
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	limit, err := historyLimit(q)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	out := make([]mergedEvent, 0, min(limit, 64))
	mb, err := h.log.ScanMerged(ssel, after, limit, func(e *store.Event) error {
		out = append(out, mergedEvent{ID: e.ID, Stream: e.Stream, historyEventBody: bodyOf(e)})
		return nil
	})
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": out, "gap": continues && len(mb.Gaps) > 0})
}
