package bench

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// target is the server and stream a run drives.
type target struct {
	a          adapter // the kind of server
	base       string  // http://host:port, no trailing slash
	hostPort   string  // for dialing
	hostHeader string
	stream     string
	// publishPath and subscribePath are the request targets of a publish
	// to the stream and of a subscription to it.
	publishPath   string
	subscribePath string
	client        *http.Client // for the health check
}

func newTarget(a adapter, base, stream string) (*target, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("--url: %w", err)
	}
	if u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("--url must be http://host:port, not %q", base)
	}
	hostPort := u.Host
	if u.Port() == "" {
		hostPort = net.JoinHostPort(u.Hostname(), "80")
	}
	u.Path, u.RawPath, u.RawQuery, u.Fragment = "", "", "", ""
	return &target{
		a:             a,
		base:          u.String(),
		hostPort:      hostPort,
		hostHeader:    u.Host,
		stream:        stream,
		publishPath:   a.publishPath(stream),
		subscribePath: a.subscribePath(stream),
		client:        newHTTPClient(),
	}, nil
}

// newHTTPClient returns the client of the tool's few ordinary requests
// (the health check). Publishers and subscribers do not use it: see poster
// and dialSSE.
func newHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:              nil, // a benchmark of a local server goes straight to it
		DialContext:        (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		DisableCompression: true,
	}}
}

func (t *target) close() {
	t.client.CloseIdleConnections()
}

// publishError is a publish answered with a status that does not say the
// events were stored.
type publishError struct {
	status int
	body   string
}

func (e *publishError) Error() string {
	return fmt.Sprintf("publish: status %d: %s", e.status, e.body)
}

// health checks that the server answers before a run starts.
func (t *target) health(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return t.a.health(ctx, t.client, t.base)
}

// maxBatch is the most events one publish request carries to t: want, or
// 1 where the server has no batch publish.
func (t *target) maxBatch(want int) int {
	if !t.a.caps().batch {
		return 1
	}
	return want
}

// eventBuilder writes the events the tool publishes. Each event's data is a
// flat JSON object of at least size bytes (compact): optional members "t"
// (send time, Unix nanoseconds) and "n" (sequence number), then a padding
// string "p".
type eventBuilder struct {
	size int
	pad  []byte
}

func newEventBuilder(size int) *eventBuilder {
	return &eventBuilder{size: size, pad: bytes.Repeat([]byte("x"), max(size, 0))}
}

// appendEvent appends one sselog event object: type "bench" and the data
// of appendData.
func (b *eventBuilder) appendEvent(dst []byte, t, n int64) []byte {
	dst = append(dst, `{"type":"bench","data":`...)
	dst = b.appendData(dst, t, n)
	return append(dst, '}')
}

// appendData appends one event's data: the flat object of at least b.size
// bytes that every target is sent. t < 0 or n < 0 leaves that member out.
func (b *eventBuilder) appendData(dst []byte, t, n int64) []byte {
	dst = append(dst, '{')
	start := len(dst)
	comma := false
	if t >= 0 {
		dst = append(dst, `"t":`...)
		dst = strconv.AppendInt(dst, t, 10)
		comma = true
	}
	if n >= 0 {
		if comma {
			dst = append(dst, ',')
		}
		dst = append(dst, `"n":`...)
		dst = strconv.AppendInt(dst, n, 10)
		comma = true
	}
	// The data so far is "{" + dst[start:]; pad it up to size with
	// ,"p":"xxx" and the closing "}".
	have := 1 + len(dst) - start + 1
	overhead := len(`"p":""`)
	if comma {
		overhead++
	}
	if pad := b.size - have - overhead; pad >= 0 {
		if comma {
			dst = append(dst, ',')
		}
		dst = append(dst, `"p":"`...)
		dst = append(dst, b.pad[:pad]...)
		dst = append(dst, '"')
	}
	return append(dst, '}')
}

// appendBatch appends a request body of count events numbered from n (or
// all without a number when n < 0): one object when count is 1, else an
// array.
func (b *eventBuilder) appendBatch(dst []byte, count int, t, n int64) []byte {
	return b.appendStrided(dst, count, t, n, 1)
}

// appendStrided is appendBatch with the numbers step apart: n, n+step, and
// so on, as one stream's share of events spread over step streams.
func (b *eventBuilder) appendStrided(dst []byte, count int, t, n, step int64) []byte {
	if count == 1 {
		return b.appendEvent(dst, t, n)
	}
	dst = append(dst, '[')
	for i := range count {
		if i > 0 {
			dst = append(dst, ',')
		}
		seq := int64(-1)
		if n >= 0 {
			seq = n + int64(i)*step
		}
		dst = b.appendEvent(dst, t, seq)
	}
	return append(dst, ']')
}
