package bench

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"strings"
)

// adapter is how the tool speaks to one kind of server (--target): where
// and how it publishes, where it is subscribed to and what it answers.
// Everything else (pacing, connections, the SSE parser, the payload and
// the accounting of gaps, duplicates and missing events) is shared, so
// that every workload measures each kind of server the same way.
//
// Adding a target is one file with a type that implements adapter, and
// its line in newAdapters.
type adapter interface {
	// name is the --target value that selects it.
	name() string
	// addFlags registers the adapter's own flags, named after it
	// (--mercure-jwt-key), on every workload's flag set.
	addFlags(fs *flag.FlagSet)
	// prepare checks those flags once they are parsed; it is called only
	// for the selected adapter.
	prepare() error
	// caps says what the server can do beyond the common ground.
	caps() caps
	// health checks, before a run, that a server of this kind answers at
	// base (http://host:port).
	health(ctx context.Context, c *http.Client, base string) error
	// publishPath is the request target of a publish to stream.
	publishPath(stream string) string
	// publishHeader is the header lines every publish carries besides
	// Host, User-Agent and Content-Length, each ending in CRLF.
	publishHeader() string
	// appendPublish appends the body of a request that publishes count
	// events to stream (count is 1 unless caps().batch): each one's data
	// as b writes it, with send time t and numbers n, n+step, ...
	appendPublish(dst []byte, stream string, b *eventBuilder, count int, t, n, step int64) []byte
	// stored reports whether a publish answer's status says the events
	// were stored.
	stored(status int) bool
	// subscribePath is the request target of a subscription to stream.
	subscribePath(stream string) string
	// earliest is the Last-Event-ID that asks for the whole stream.
	earliest() string
	// registered reads, after a subscription's response headers, what
	// shows that the server has registered the subscriber: from then on
	// every event stored is delivered to it.
	registered(p *parser) error
}

// caps are what a kind of server can do beyond the common ground of
// publishing one event per request and subscribing to one stream.
type caps struct {
	// batch: one request publishes several events.
	batch bool
	// idempotency: publishes take an Idempotency-Key.
	idempotency bool
	// merged: one subscription follows several streams, merged
	// (fanout --merged).
	merged bool
	// spawn: --spawn can start one (this executable's serve).
	spawn bool
	// orderedIDs: ids increase in the order events are stored, so that
	// ids out of order are a fault to count. Where they carry no order
	// (random ids, or ids assigned before the write is ordered), order is
	// not checked.
	orderedIDs bool
}

// newAdapters returns one of each kind of server, with its flags unset;
// the first is the default target.
func newAdapters() []adapter {
	return []adapter{&sselogAdapter{}, &mercureAdapter{}}
}

// adapterNames lists the targets for help and errors: "sselog|mercure".
func adapterNames(all []adapter) string {
	names := make([]string, len(all))
	for i, a := range all {
		names[i] = a.name()
	}
	return strings.Join(names, "|")
}

// pickAdapter returns the adapter called name, prepared.
func pickAdapter(all []adapter, name string) (adapter, error) {
	for _, a := range all {
		if a.name() == name {
			if err := a.prepare(); err != nil {
				return nil, fmt.Errorf("--target %s: %w", name, err)
			}
			return a, nil
		}
	}
	return nil, fmt.Errorf("--target must be one of %s, not %q", adapterNames(all), name)
}
