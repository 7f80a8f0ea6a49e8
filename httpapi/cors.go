package httpapi

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// CORS for browsers on other origins. Only the configured origins get CORS
// headers; they may send credentials (the token cookie, or an
// Authorization header), so each is named exactly: there is no wildcard.
const (
	corsMethods = "GET, POST, PUT, DELETE"
	corsHeaders = "Authorization, Content-Type, Idempotency-Key, Last-Event-ID"
	corsExpose  = "Idempotent-Replayed, Retry-After, WWW-Authenticate"
	// corsMaxAge is how long a browser may cache a preflight's answer.
	corsMaxAge = 10 * time.Minute
)

// withCORS answers preflights from allowed origins itself (the router
// would answer OPTIONS with 405) and marks every other answer to them as
// readable. Requests from other origins pass through with no CORS headers,
// which is how a browser learns it may not read the answer.
func withCORS(origins []string, next http.Handler) http.Handler {
	if len(origins) == 0 {
		return next
	}
	allowed := make(map[string]bool, len(origins))
	for _, o := range origins {
		allowed[normalizeOrigin(o)] = true
	}
	maxAge := strconv.Itoa(int(corsMaxAge.Seconds()))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hdr := w.Header()
		// The answer depends on Origin, so caches must key on it, whether
		// or not this one is allowed.
		hdr.Add("Vary", "Origin")
		origin := r.Header.Get("Origin")
		if origin == "" || !allowed[normalizeOrigin(origin)] {
			next.ServeHTTP(w, r)
			return
		}
		hdr.Set("Access-Control-Allow-Origin", origin)
		hdr.Set("Access-Control-Allow-Credentials", "true")
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			hdr.Add("Vary", "Access-Control-Request-Method")
			hdr.Add("Vary", "Access-Control-Request-Headers")
			hdr.Set("Access-Control-Allow-Methods", corsMethods)
			hdr.Set("Access-Control-Allow-Headers", corsHeaders)
			hdr.Set("Access-Control-Max-Age", maxAge)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		hdr.Set("Access-Control-Expose-Headers", corsExpose)
		next.ServeHTTP(w, r)
	})
}

// normalizeOrigin lowercases an origin and drops a trailing slash, so that
// "https://App.example.com/" in the configuration matches what a browser
// sends.
func normalizeOrigin(o string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(o), "/"))
}
