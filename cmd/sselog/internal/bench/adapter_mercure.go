package bench

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
)

// mercureHub is the path of a Mercure hub: publish and subscribe.
const mercureHub = "/.well-known/mercure"

// mercureAdapter drives a Mercure hub (mercure.rocks): publish is a form
// POST to /.well-known/mercure with a publisher JWT, subscribe a GET of
// it with the topic in the query. A stream is a topic.
//
// What Mercure has no counterpart for is refused rather than emulated:
// batch publishes (one event per request instead; the publish workload's
// --batch is refused), Idempotency-Key, merged streams and --spawn.
type mercureAdapter struct {
	key string // --mercure-jwt-key
	// auth is the publish requests' Authorization header line, made by
	// prepare.
	auth string
}

func (*mercureAdapter) name() string              { return "mercure" }
func (*mercureAdapter) publishPath(string) string { return mercureHub }
func (*mercureAdapter) stored(status int) bool    { return status == http.StatusOK }
func (*mercureAdapter) registered(*parser) error  { return nil }
func (m *mercureAdapter) publishHeader() string {
	return m.auth + "Content-Type: application/x-www-form-urlencoded\r\n"
}
func (*mercureAdapter) subscribePath(s string) string {
	return mercureHub + "?topic=" + url.QueryEscape(s)
}

// earliest is the protocol's "earliest": every event of the history.
func (*mercureAdapter) earliest() string { return "earliest" }

// caps: Mercure's ids are UUIDv7s, assigned before the transport's write
// lock is taken (BoltTransport.Dispatch), so concurrent publishes may be
// stored in another order than their ids: order is not checked.
func (*mercureAdapter) caps() caps { return caps{} }

func (m *mercureAdapter) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&m.key, "mercure-jwt-key", "", "with --target mercure: the hub's publisher JWT key (publisher_jwt <key> HS256); the tool signs a token with the claim {\"mercure\":{\"publish\":[\"*\"]}}")
}

func (m *mercureAdapter) prepare() error {
	if m.key == "" {
		return errors.New("--mercure-jwt-key is required: the key of the hub's publisher_jwt (HS256)")
	}
	m.auth = "Authorization: Bearer " + publisherJWT(m.key) + "\r\n"
	return nil
}

// publisherJWT returns an HS256 JSON Web Token signed with key whose claim
// lets its bearer publish to every topic. It has no expiry: a run must not
// fail because it outlasted its token.
func publisherJWT(key string) string {
	enc := base64.RawURLEncoding
	msg := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." +
		enc.EncodeToString([]byte(`{"mercure":{"publish":["*"]}}`))
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write([]byte(msg))
	return msg + "." + enc.EncodeToString(mac.Sum(nil))
}

// health asks for a subscription without a topic: a hub answers 400
// Missing "topic" parameter, without registering anything. Mercure's own
// health endpoints are on Caddy's admin API, which need not be on.
func (*mercureAdapter) health(ctx context.Context, c *http.Client, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+mercureHub, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("hub at %s: %w", base, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusBadRequest || !bytes.Contains(body, []byte("topic")) {
		return fmt.Errorf("hub at %s: %s without a topic answered %s %q, not a Mercure hub's 400 Missing \"topic\" parameter", base, mercureHub, resp.Status, bytes.TrimSpace(body))
	}
	return nil
}

// appendPublish writes the form topic=<stream>&type=bench&data=<data>:
// the data is the JSON object sselog's events carry, and the type the
// one they have, so that both servers send alike frames.
func (*mercureAdapter) appendPublish(dst []byte, stream string, b *eventBuilder, count int, t, n, _ int64) []byte {
	if count != 1 {
		panic("bench: a Mercure publish carries one event") // callers honour caps().batch
	}
	dst = append(dst, "topic="...)
	dst = appendQueryEscape(dst, []byte(stream))
	dst = append(dst, "&type=bench&data="...)
	start := len(dst)
	dst = b.appendData(dst, t, n)
	// Escape the data in place: grow dst by what escaping adds, then
	// write from the end backwards.
	data := dst[start:]
	extra := 0
	for _, c := range data {
		if !unreserved(c) {
			extra += 2
		}
	}
	dst = slices.Grow(dst, extra)
	dst = dst[:len(dst)+extra]
	w := len(dst)
	for r := start + len(data) - 1; r >= start; r-- {
		c := dst[r]
		if unreserved(c) {
			w--
			dst[w] = c
			continue
		}
		w -= 3
		dst[w], dst[w+1], dst[w+2] = '%', upperHex[c>>4], upperHex[c&15]
	}
	return dst
}

const upperHex = "0123456789ABCDEF"

// unreserved reports whether c stands for itself in a form value.
func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~'
}

// appendQueryEscape appends s percent-encoded for a form value.
func appendQueryEscape(dst, s []byte) []byte {
	for _, c := range s {
		if unreserved(c) {
			dst = append(dst, c)
		} else {
			dst = append(dst, '%', upperHex[c>>4], upperHex[c&15])
		}
	}
	return dst
}
