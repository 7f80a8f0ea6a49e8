package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/sselog/sselog/store"
)

// A token's format, its claims and its stream patterns are described at
// the top of token.go. What each endpoint needs:
//   - POST /v1/streams/{stream}/events: publish on the stream.
//   - GET /v1/streams/{stream}/events (SSE) and .../history: subscribe on
//     the stream. The token is checked when a stream opens, and the stream
//     ends, with a retry hint, when the token expires.
//   - GET /v1/streams/{stream} and GET .../retention: subscribe on the
//     stream, or admin.
//   - GET /v1/streams: any valid token; it lists the streams the token may
//     subscribe to, or every stream for admin.
//   - PUT and DELETE .../retention, DELETE /v1/streams/{stream}, GET
//     /v1/backup: admin. Admin does not imply publish or subscribe.
//   - GET /healthz: nothing.

const (
	// TokenCookie is the cookie a token is read from when the request has
	// no Authorization header.
	TokenCookie = "sselog_token"
	// TokenParam is the query parameter a token is read from when the
	// request has neither an Authorization header nor the cookie (for
	// EventSource, which cannot set headers).
	TokenParam = "access_token"
)

var (
	// ErrNoToken is returned for a request that needs a token and carries
	// none.
	ErrNoToken = errors.New("a bearer token is required")
	// ErrForbidden is returned when a valid token does not grant what the
	// request needs.
	ErrForbidden = errors.New("forbidden")
)

// matchPattern reports whether the stream name matches pattern: '*'
// matches any run of characters (none included), every other character
// itself. Stream names have no '/' and no '*', so a single star covers
// what path.Match's would, across dots too.
func matchPattern(pattern, name string) bool {
	p, n := 0, 0
	star, mark := -1, 0 // the last star seen, and where its run started in name
	for n < len(name) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case p < len(pattern) && pattern[p] == name[n]:
			p++
			n++
		case star >= 0:
			// Let the last star swallow one more character and retry.
			mark++
			p, n = star+1, mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if matchPattern(p, name) {
			return true
		}
	}
	return false
}

// tokenLifetime is how much longer the request's token is accepted, or
// zero for a request without one (no authentication).
func (h *Handler) tokenLifetime(r *http.Request) (time.Duration, bool) {
	g, ok := r.Context().Value(grantsKey{}).(*grants)
	if !ok || h.opts.Auth == nil || g.until.IsZero() {
		return 0, false
	}
	return g.until.Sub(h.opts.Auth.now()), true
}

// access is what an endpoint needs from a token.
type access int

const (
	needToken     access = iota // any valid token
	needPublish                 // publish on the route's stream
	needSubscribe               // subscribe on the route's stream
	needRead                    // subscribe on the route's stream, or admin
	needAdmin                   // admin
)

type grantsKey struct{}

// tokenFrom reads the request's token from the Authorization header, else
// the cookie, else the query parameter. The first source present is the
// one used: a bad header is not rescued by a good cookie.
func tokenFrom(r *http.Request) (string, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, _ := strings.Cut(h, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			return "", fmt.Errorf("%w: the Authorization header's scheme is not Bearer", ErrNoToken)
		}
		if tok = strings.TrimSpace(tok); tok == "" {
			return "", fmt.Errorf("%w: empty bearer token", ErrInvalidToken)
		}
		return tok, nil
	}
	if c, err := r.Cookie(TokenCookie); err == nil && c.Value != "" {
		return c.Value, nil
	}
	if tok := r.URL.Query().Get(TokenParam); tok != "" {
		return tok, nil
	}
	return "", ErrNoToken
}

// withoutQueryToken returns r with every access_token query pair removed
// from its URL and RequestURI, so that nothing downstream can log or echo
// the token. A pair is removed when its key decodes to access_token the
// way url.ParseQuery (and so tokenFrom) decodes it, however it is
// percent-encoded ("access%5Ftoken", "%61ccess_token"): a cheaper test on
// the raw query would miss a token that was used.
func withoutQueryToken(r *http.Request) *http.Request {
	raw := r.URL.RawQuery
	if !hasQueryToken(raw) {
		return r
	}
	parts := strings.Split(raw, "&")
	kept := parts[:0]
	for _, pair := range parts {
		if !isTokenPair(pair) {
			kept = append(kept, pair)
		}
	}
	r2 := r.WithContext(r.Context()) // a shallow copy
	u := *r.URL
	u.RawQuery = strings.Join(kept, "&")
	r2.URL = &u
	r2.RequestURI = u.RequestURI()
	return r2
}

func hasQueryToken(raw string) bool {
	for rest := raw; rest != ""; {
		var pair string
		pair, rest, _ = strings.Cut(rest, "&")
		if isTokenPair(pair) {
			return true
		}
	}
	return false
}

// isTokenPair reports whether a raw "key=value" query pair has the key
// access_token. url.ParseQuery skips a pair holding ';' (it is not a
// separator since Go 1.17), so such a pair is never used as the token; it
// is still removed when any ';'-separated piece of it has the key, because
// other software splits there and would read a token in it.
func isTokenPair(pair string) bool {
	for piece := range strings.SplitSeq(pair, ";") {
		k, _, _ := strings.Cut(piece, "=")
		if k, err := url.QueryUnescape(k); err == nil && k == TokenParam {
			return true
		}
	}
	return false
}

// authorize runs next only when the request's token grants need on the
// route's stream. Without a Verifier every request may do everything.
func (h *Handler) authorize(need access, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if h.opts.Auth == nil {
			next(w, withoutQueryToken(r))
			return
		}
		tok, err := tokenFrom(r)
		r = withoutQueryToken(r)
		var g *grants
		if err == nil {
			g, err = h.opts.Auth.verify(tok)
		}
		if err != nil {
			h.deny(w, r, err)
			return
		}
		name := mux.Vars(r)["stream"]
		if need != needToken && need != needAdmin {
			// An invalid name is a bad request whatever the token says.
			if err := store.ValidateStream(name); err != nil {
				h.writeError(w, r, err)
				return
			}
		}
		if err := g.allow(need, name); err != nil {
			h.deny(w, r, err)
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), grantsKey{}, g)))
	}
}

// deny logs a refused request (never its token) and answers it.
func (h *Handler) deny(w http.ResponseWriter, r *http.Request, err error) {
	h.logger.Debug("request refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
	h.writeError(w, r, err)
}

// allow reports, as nil or ErrForbidden, whether g grants need on stream.
func (g *grants) allow(need access, stream string) error {
	var ok bool
	var what string
	switch need {
	case needToken:
		return nil
	case needPublish:
		ok, what = matchAny(g.Publish, stream), "publish on stream "+stream
	case needSubscribe:
		ok, what = matchAny(g.Subscribe, stream), "subscribe to stream "+stream
	case needRead:
		ok, what = g.Admin || matchAny(g.Subscribe, stream), "read stream "+stream
	case needAdmin:
		ok, what = g.Admin, "administer streams"
	}
	if !ok {
		return fmt.Errorf("%w: the token does not grant %s", ErrForbidden, what)
	}
	return nil
}

// visibleStreams keeps the streams the request's token may read: every
// stream without authentication or for admin, else those it may
// subscribe to.
func (h *Handler) visibleStreams(r *http.Request, streams []store.StreamInfo) []store.StreamInfo {
	if h.opts.Auth == nil {
		return streams
	}
	g, _ := r.Context().Value(grantsKey{}).(*grants)
	if g == nil {
		return nil
	}
	if g.Admin {
		return streams
	}
	kept := streams[:0]
	for _, s := range streams {
		if matchAny(g.Subscribe, s.Name) {
			kept = append(kept, s)
		}
	}
	return kept
}
