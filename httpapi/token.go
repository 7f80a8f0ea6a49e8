package httpapi

import (
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
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

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
)

var (
	// ErrInvalidToken is returned for a token that is malformed, not signed
	// by the server's key with an algorithm of that key, expired, not yet
	// valid, without an expiry, whose grants are malformed, or whose
	// claims are not exact (see the comment at the top of this file).
	ErrInvalidToken = errors.New("invalid token")
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
	// The algorithm is checked with the signature (checkSignature); the
	// parser only decodes.
	v.parser = jwt.NewParser()
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

// tokenClaims is what a token's payload is decoded into, once its
// signature has been checked: jwt's parser decodes the payload with
// encoding/json, which calls UnmarshalJSON below with all of it, and jwt's
// validator then checks exp and nbf through the embedded RegisteredClaims'
// getters. So every claim jwt checks, and every grant, went through the
// exact parse.
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
