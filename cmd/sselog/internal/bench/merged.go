package bench

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// maxPerSubscriber is how many stream parameters the server takes in one
// merged request (httpapi.MaxMergedStreams).
const maxPerSubscriber = 64

// layout is how a fan-out run spreads its events over streams and its
// subscribers over the streams. Event n goes to stream n mod S (S is
// stride()), so each stream's events are numbered S apart. A single-stream
// run is the layout of one stream that every subscriber follows on that
// stream's own endpoint.
type layout struct {
	merged bool
	// ordered: the server's ids increase in the order events are stored,
	// so that a subscriber checks that the ids it receives do.
	ordered bool
	names   []string // the streams, by index
	paths   []string // each stream's events path, to publish to
	perSub  int      // streams per subscriber
}

// newLayout reads the layout from f's flags: base is the name of the one
// stream, or with --merged the prefix of base.0, base.1, ... Paths are a's.
func newLayout(a adapter, base string, f *fanoutConfig) (*layout, error) {
	ordered := a.caps().orderedIDs
	if !f.merged {
		if f.streams != 0 || f.perSub != 0 {
			return nil, errors.New("--streams and --per-subscriber need --merged")
		}
		return &layout{ordered: ordered, names: []string{base}, paths: []string{a.publishPath(base)}, perSub: 1}, nil
	}
	streams, perSub := cmp.Or(f.streams, DefaultMergedStreams), cmp.Or(f.perSub, DefaultPerSubscriber)
	if streams < 1 || perSub < 1 || perSub > streams || perSub > maxPerSubscriber {
		return nil, fmt.Errorf("--streams must be positive, --per-subscriber from 1 to --streams and at most %d", maxPerSubscriber)
	}
	l := &layout{merged: true, ordered: ordered, perSub: perSub}
	for j := range streams {
		name := base + "." + strconv.Itoa(j)
		l.names = append(l.names, name)
		l.paths = append(l.paths, a.publishPath(name))
	}
	return l, nil
}

// stride is the number of streams: the distance between two events of one
// stream.
func (l *layout) stride() int64 { return int64(len(l.names)) }

// streamsOf returns the streams subscriber i follows: i, i+S/K, i+2S/K, ...
// mod S, for K streams per subscriber. They are distinct (K*(S/K) <= S),
// and over S consecutive subscribers every stream is taken K times, so the
// streams are covered evenly; subscribers S apart follow the same set.
func (l *layout) streamsOf(i int) []int64 {
	s := l.stride()
	step := s / int64(l.perSub)
	out := make([]int64, l.perSub)
	for k := range out {
		out[k] = (int64(i) + int64(k)*step) % s
	}
	return out
}

// subscribePath is subscriber i's request: the merged endpoint with its
// streams' names.
func (l *layout) subscribePath(i int) string {
	var b strings.Builder
	b.WriteString("/v1/events")
	sep := "?stream="
	for _, j := range l.streamsOf(i) {
		b.WriteString(sep)
		sep = "&stream="
		b.WriteString(url.QueryEscape(l.names[j]))
	}
	return b.String()
}

// final returns the number of stream j's last event when events 0 to
// sent-1 were published; when none of them is j's, the number before its
// first (j - S).
func (l *layout) final(j, sent int64) int64 {
	s := l.stride()
	if j >= sent {
		return j - s
	}
	return j + (sent-1-j)/s*s
}

// count returns how many of events 0 to sent-1 are stream j's.
func (l *layout) count(j, sent int64) int64 {
	if j >= sent {
		return 0
	}
	return (sent-1-j)/l.stride() + 1
}

// The envelope of a merged event, as the server writes it, compact:
// {"stream":"<name>","data":<the event's data>}.
var (
	envelopeHead = []byte(`{"stream":"`)
	envelopeData = []byte(`","data":`)
)

// parseEnvelope splits a merged event's data into its stream's name and
// the event's own data, in place. Stream names hold no quote or
// backslash, so the name is written unescaped and ends at the first quote.
func parseEnvelope(data []byte) (stream, payload []byte, ok bool) {
	rest, ok := bytes.CutPrefix(data, envelopeHead)
	if !ok {
		return nil, nil, false
	}
	stream, payload, ok = bytes.Cut(rest, envelopeData)
	if !ok || len(stream) == 0 || bytes.IndexByte(stream, '"') >= 0 || len(payload) == 0 || payload[len(payload)-1] != '}' {
		return nil, nil, false
	}
	return stream, payload[:len(payload)-1], true
}
