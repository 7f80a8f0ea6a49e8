package httpapi

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/mux"

	"github.com/sselog/sselog/store"
)

// Authentication is by JWT bearer token; authorization is by the token's
// "sselog" claim, which grants stream patterns per action:
//
//	{"exp": 1767225600, "sselog": {"publish": ["orders", "audit.*"], "subscribe": ["orders"], "admin": false}}
//
// A pattern is 1 to MaxPatternLen characters of the stream-name alphabet
// (A-Z a-z 0-9 . _ -) and '*'. Every character but '*' matches itself (case
// sensitive); '*' matches any run of characters, the empty run included.
// So "orders" matches only "orders", "audit.*" matches "audit.x",
// "audit.x.y" and "audit." but not "audit", and "*" matches every stream.
//
// Claims are read exactly, because encoding/json alone would read
// {"sselog": {"aDmIn": true}} as an admin grant and let a second "exp"
// revive an expired token. A token is invalid when:
//   - its claims are not valid UTF-8, or any object in them, at any depth,
//     holds a key twice (compared after escapes are decoded);
//   - the "sselog" claim is not an object, or holds a key other than
//     "publish", "subscribe" and "admin" (byte for byte: "Admin" is
//     unknown);
//   - exp, nbf or iat is present but not a JSON number ("exp": "1767225600"
//     is refused);
//   - a top-level claim is not one of exp, nbf, iat, iss, sub, aud, jti
//     and sselog byte for byte, yet equals one of them under Unicode case
//     folding ("Exp", "SSELOG", "sſelog" with U+017F): a claim the issuer
//     meant as ours and that we would not read is an attack or a bug, and
//     refusing it is safer than ignoring it.
// Other top-level claims are allowed and ignored.
//
// What each endpoint needs:
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

// Defaults and limits for authentication.
const (
	// DefaultLeeway is how long after its exp (and before its nbf) a token
	// is still accepted, for clock skew between its issuer and the server.
	DefaultLeeway = 30 * time.Second
	// MinSecretLen is the shortest HMAC secret accepted (RFC 7518 3.2: at
	// least the hash's size).
	MinSecretLen = 32
	// MinRSABits is the smallest RSA key accepted.
	MinRSABits = 2048
	// MaxPatternLen is the longest stream pattern a token may grant.
	MaxPatternLen = 256
	// maxTokenLen bounds what is parsed at all.
	maxTokenLen = 8 << 10

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
	// ErrInvalidToken is returned for a token that is malformed, not signed
	// by the server's key with an algorithm of that key, expired, not yet
	// valid, without an expiry, whose grants are malformed, or whose
	// claims are not exact (see the comment at the top of this file).
	ErrInvalidToken = errors.New("invalid token")
	// ErrForbidden is returned when a valid token does not grant what the
	// request needs.
	ErrForbidden = errors.New("forbidden")
	// ErrInvalidKey is returned by NewVerifier and ParsePublicKey for a key
	// that cannot verify tokens.
	ErrInvalidKey = errors.New("invalid key")
)

// VerifierOptions configures NewVerifier.
type VerifierOptions struct {
	// Key checks token signatures, and its type pins the algorithms a
	// token may be signed with:
	//   - []byte, an HMAC secret of at least MinSecretLen bytes: HS256,
	//     HS384, HS512;
	//   - *rsa.PublicKey of at least MinRSABits: RS256, RS384, RS512,
	//     PS256, PS384, PS512;
	//   - *ecdsa.PublicKey: ES256 on P-256, ES384 on P-384, ES512 on P-521;
	//   - ed25519.PublicKey: EdDSA.
	// Required.
	Key any
	// Leeway is how long after its exp (and before its nbf) a token is
	// still accepted. Zero means DefaultLeeway; negative means none.
	Leeway time.Duration
	// Now is the clock tokens are checked against. Nil means time.Now.
	Now func() time.Time
}

// Verifier checks bearer tokens and reads their grants.
type Verifier struct {
	key       any
	methods   []string
	parser    *jwt.Parser
	validator *jwt.Validator
	leeway    time.Duration
	now       func() time.Time
}

// NewVerifier returns a Verifier for opts.Key, or ErrInvalidKey.
func NewVerifier(opts VerifierOptions) (*Verifier, error) {
	methods, err := methodsFor(opts.Key)
	if err != nil {
		return nil, err
	}
	switch {
	case opts.Leeway == 0:
		opts.Leeway = DefaultLeeway
	case opts.Leeway < 0:
		opts.Leeway = 0
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	v := &Verifier{key: opts.Key, methods: methods, leeway: opts.Leeway, now: opts.Now}
	v.parser = jwt.NewParser(jwt.WithValidMethods(methods))
	v.validator = jwt.NewValidator(
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(opts.Leeway),
		jwt.WithTimeFunc(opts.Now),
	)
	return v, nil
}

// methodsFor gives the algorithms a key verifies.
func methodsFor(key any) ([]string, error) {
	switch k := key.(type) {
	case []byte:
		if len(k) < MinSecretLen {
			return nil, fmt.Errorf("%w: an HMAC secret must be at least %d bytes, this one is %d", ErrInvalidKey, MinSecretLen, len(k))
		}
		return []string{"HS256", "HS384", "HS512"}, nil
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			return nil, fmt.Errorf("%w: nil RSA key", ErrInvalidKey)
		}
		if k.N.BitLen() < MinRSABits {
			return nil, fmt.Errorf("%w: an RSA key must have at least %d bits, this one has %d", ErrInvalidKey, MinRSABits, k.N.BitLen())
		}
		return []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}, nil
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil {
			return nil, fmt.Errorf("%w: nil ECDSA key", ErrInvalidKey)
		}
		switch k.Curve {
		case elliptic.P256():
			return []string{"ES256"}, nil
		case elliptic.P384():
			return []string{"ES384"}, nil
		case elliptic.P521():
			return []string{"ES512"}, nil
		}
		return nil, fmt.Errorf("%w: ECDSA curve %s is not P-256, P-384 or P-521", ErrInvalidKey, k.Curve.Params().Name)
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%w: an Ed25519 public key is %d bytes, not %d", ErrInvalidKey, ed25519.PublicKeySize, len(k))
		}
		return []string{"EdDSA"}, nil
	case nil:
		return nil, fmt.Errorf("%w: no key", ErrInvalidKey)
	default:
		return nil, fmt.Errorf("%w: unsupported key type %T", ErrInvalidKey, key)
	}
}

// Algorithms lists the JWT algorithms the Verifier accepts.
func (v *Verifier) Algorithms() []string { return append([]string(nil), v.methods...) }

// ParsePublicKey reads the first PEM block of data as a public key for
// VerifierOptions.Key: a PKIX "PUBLIC KEY" (RSA, ECDSA or Ed25519), a
// PKCS #1 "RSA PUBLIC KEY", or a "CERTIFICATE" whose key is used. A private
// key is refused: the server needs only the public half.
func ParsePublicKey(data []byte) (any, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block found", ErrInvalidKey)
	}
	var key any
	var err error
	switch {
	case block.Type == "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case block.Type == "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case block.Type == "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			key = cert.PublicKey
		}
	case strings.Contains(block.Type, "PRIVATE KEY"):
		return nil, fmt.Errorf("%w: the PEM block is a %s; give the server the public key only", ErrInvalidKey, block.Type)
	default:
		return nil, fmt.Errorf("%w: PEM block type %q is not PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE", ErrInvalidKey, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidKey, err)
	}
	if _, err := methodsFor(key); err != nil {
		return nil, err
	}
	return key, nil
}

// grants is what a token allows; see the comment at the top of this file.
type grants struct {
	Publish   []string `json:"publish"`
	Subscribe []string `json:"subscribe"`
	Admin     bool     `json:"admin"`
	// until is when the token stops being accepted (its exp plus the
	// leeway): an SSE stream opened with it ends then.
	until time.Time
}

// UnmarshalJSON decodes grants strictly: keys are matched byte for byte
// and may appear once (store.StrictObject), and an unknown key (a misspelt
// action, or "Admin") or an invalid pattern makes the token invalid
// instead of quietly granting other than its issuer meant. encoding/json's
// own struct decoding would take "aDmIn" for "admin".
func (g *grants) UnmarshalJSON(b []byte) error {
	members, err := store.StrictObject(b)
	if err != nil {
		return fmt.Errorf("sselog claim: %w", err)
	}
	var p grants
	for _, k := range slices.Sorted(maps.Keys(members)) {
		var err error
		switch v := members[k]; k {
		case "publish":
			err = json.Unmarshal(v, &p.Publish)
		case "subscribe":
			err = json.Unmarshal(v, &p.Subscribe)
		case "admin":
			err = json.Unmarshal(v, &p.Admin)
		default:
			err = errors.New("unknown key (keys are publish, subscribe and admin, in lower case)")
		}
		if err != nil {
			return fmt.Errorf("sselog claim: %q: %w", k, err)
		}
	}
	for _, list := range [][]string{p.Publish, p.Subscribe} {
		for _, pat := range list {
			if err := validatePattern(pat); err != nil {
				return fmt.Errorf("sselog claim: %w", err)
			}
		}
	}
	*g = p
	return nil
}

// tokenClaims is what a token's payload is decoded into. jwt's parser
// decodes the payload with encoding/json, which calls UnmarshalJSON below
// with all of it, and then validates exp and nbf through the embedded
// RegisteredClaims' getters: so every claim jwt checks, and every grant,
// went through the exact parse.
type tokenClaims struct {
	jwt.RegisteredClaims
	Sselog grants `json:"sselog"`
}

// ourClaims are the claim names tokenClaims reads.
var ourClaims = []string{"exp", "nbf", "iat", "iss", "sub", "aud", "jti", "sselog"}

// UnmarshalJSON reads a token's claims by the exact rules in the comment
// at the top of this file. It reads each claim on its own, so that no key
// reaches encoding/json's case-folding field matching.
func (c *tokenClaims) UnmarshalJSON(b []byte) error {
	members, err := store.StrictObject(b)
	if err != nil {
		return fmt.Errorf("claims: %w", err)
	}
	var out tokenClaims
	for _, k := range slices.Sorted(maps.Keys(members)) {
		var err error
		switch v := members[k]; k {
		case "exp":
			out.ExpiresAt, err = numericDate(v)
		case "nbf":
			out.NotBefore, err = numericDate(v)
		case "iat":
			out.IssuedAt, err = numericDate(v)
		case "iss":
			err = json.Unmarshal(v, &out.Issuer)
		case "sub":
			err = json.Unmarshal(v, &out.Subject)
		case "aud":
			err = json.Unmarshal(v, &out.Audience)
		case "jti":
			err = json.Unmarshal(v, &out.ID)
		case "sselog":
			err = out.Sselog.UnmarshalJSON(v)
		default:
			for _, ours := range ourClaims {
				if strings.EqualFold(k, ours) {
					err = fmt.Errorf("claim names are case-sensitive: this is not %q", ours)
					break
				}
			}
		}
		if err != nil {
			return fmt.Errorf("claim %q: %w", k, err)
		}
	}
	*c = out
	return nil
}

// numericDate decodes a NumericDate claim, which must be a JSON number:
// jwt's own decoder also takes a string holding one ("exp": "1767225600").
func numericDate(v json.RawMessage) (*jwt.NumericDate, error) {
	if len(v) == 0 || v[0] != '-' && (v[0] < '0' || v[0] > '9') {
		return nil, errors.New("not a JSON number")
	}
	d := new(jwt.NumericDate)
	if err := d.UnmarshalJSON(v); err != nil {
		return nil, err
	}
	return d, nil
}

// validatePattern checks a stream pattern's syntax.
func validatePattern(p string) error {
	if len(p) == 0 || len(p) > MaxPatternLen {
		return fmt.Errorf("stream pattern must be 1-%d characters", MaxPatternLen)
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c != '*' && !streamChar(c) {
			return fmt.Errorf("stream pattern %q: only A-Z a-z 0-9 . _ - and * are allowed", p)
		}
	}
	return nil
}

func streamChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-'
}

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

// verify checks a token and returns its grants.
func (v *Verifier) verify(token string) (*grants, error) {
	if len(token) > maxTokenLen {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrInvalidToken, maxTokenLen)
	}
	// The signature is checked before the claims are read: jwt's parser
	// would decode them first, and the exact parse of a large hostile
	// payload costs far more than a signature check. Only a token signed
	// with the server's key is worth parsing.
	if err := v.checkSignature(token); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	var c tokenClaims
	if _, _, err := v.parser.ParseUnverified(token, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if err := v.validator.Validate(&c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	g := &c.Sselog
	if c.ExpiresAt != nil {
		g.until = c.ExpiresAt.Add(v.leeway)
	}
	return g, nil
}

// checkSignature verifies a compact JWS's signature with the key, by an
// algorithm the key allows, reading nothing of the payload.
func (v *Verifier) checkSignature(token string) error {
	header, rest, ok := strings.Cut(token, ".")
	payload, sig, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || strings.Contains(sig, ".") {
		return jwt.ErrTokenMalformed
	}
	hb, err := base64.RawURLEncoding.DecodeString(header)
	if err != nil {
		return fmt.Errorf("%w: header: %v", jwt.ErrTokenMalformed, err)
	}
	// A map reads keys exactly, as jwt reads the header.
	var h map[string]any
	if err := json.Unmarshal(hb, &h); err != nil {
		return fmt.Errorf("%w: header: %v", jwt.ErrTokenMalformed, err)
	}
	alg, _ := h["alg"].(string)
	if !slices.Contains(v.methods, alg) {
		return fmt.Errorf("%w: algorithm %q is not one of the key's (%s)", jwt.ErrTokenSignatureInvalid, alg, strings.Join(v.methods, ", "))
	}
	sb, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return fmt.Errorf("%w: signature: %v", jwt.ErrTokenMalformed, err)
	}
	if err := jwt.GetSigningMethod(alg).Verify(header+"."+payload, sb, v.key); err != nil {
		return fmt.Errorf("%w: %v", jwt.ErrTokenSignatureInvalid, err)
	}
	return nil
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
