package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// zeroID asks sselog for the whole stream.
const zeroID = "00000000000000000000000000"

// sselogAdapter drives sselog: POST /v1/streams/{stream}/events with JSON
// events, GET on the same path to subscribe.
type sselogAdapter struct{}

func (*sselogAdapter) name() string                  { return "sselog" }
func (*sselogAdapter) addFlags(*flag.FlagSet)        {}
func (*sselogAdapter) prepare() error                { return nil }
func (*sselogAdapter) earliest() string              { return zeroID }
func (*sselogAdapter) stored(status int) bool        { return status == http.StatusCreated }
func (*sselogAdapter) publishHeader() string         { return "Content-Type: application/json\r\n" }
func (*sselogAdapter) publishPath(s string) string   { return eventsPath(s) }
func (*sselogAdapter) subscribePath(s string) string { return eventsPath(s) }

func (*sselogAdapter) caps() caps {
	return caps{batch: true, idempotency: true, merged: true, spawn: true, orderedIDs: true}
}

// eventsPath is the path of a stream's events: publish to it, subscribe to
// it alone.
func eventsPath(stream string) string {
	return "/v1/streams/" + url.PathEscape(stream) + "/events"
}

func (*sselogAdapter) health(ctx context.Context, c *http.Client, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("server at %s: %w", base, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("server at %s: /healthz answered %s", base, resp.Status)
	}
	return nil
}

// appendPublish writes one event object, or an array of them for a batch;
// the stream is in the path.
func (*sselogAdapter) appendPublish(dst []byte, _ string, b *eventBuilder, count int, t, n, step int64) []byte {
	return b.appendStrided(dst, count, t, n, step)
}

// registered reads the first block, the retry hint that sselog flushes
// once the subscriber is registered.
func (*sselogAdapter) registered(p *parser) error {
	var f frame
	if err := p.next(&f); err != nil {
		return fmt.Errorf("first block: %w", err)
	}
	if f.retry < 0 || f.hasData {
		return fmt.Errorf("first block is not a retry hint (retry %d, data %q)", f.retry, f.data)
	}
	return nil
}
