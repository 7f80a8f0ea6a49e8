package jetstream

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Reclaiming JetStream's storage after a trim or deletion waits: a node
// whose copy is a little behind must still read the removed events, and
// the record that removes them, in order. Were the events purged at once,
// such a node would apply the events after them before the record, and
// hand its subscribers those events with no reset for the ones it never
// read. So the events a trim or deletion removed are purged only once the
// record is DefaultReclaimDelay old, together with the stream's records
// before it; a node lagging more than that while serving is not covered
// (a node that starts catches up before it serves).

// DefaultReclaimDelay is Options.ReclaimDelay's default.
const DefaultReclaimDelay = 30 * time.Second

// reclaim is a trim or deletion whose storage is not reclaimed yet.
type reclaim struct {
	record uint64    // the sequence of its record
	below  uint64    // its stream's event messages below this are gone
	at     time.Time // when it was acknowledged
}

// reclaims holds, per stream, the trims and deletions this node wrote and
// has not reclaimed, oldest first. Another node's are its own to reclaim;
// a node that restarts forgets its list, and the stream's next trim
// reclaims what it left.
type reclaims struct {
	mu      sync.Mutex
	streams map[string][]reclaim
}

func (r *reclaims) add(stream string, c reclaim) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.streams == nil {
		r.streams = make(map[string][]reclaim)
	}
	r.streams[stream] = append(r.streams[stream], c)
}

// due takes, per stream, the newest entry older than delay, dropping it
// and the older ones.
func (r *reclaims) due(now time.Time, delay time.Duration) map[string]reclaim {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]reclaim)
	for name, list := range r.streams {
		n := 0
		for n < len(list) && now.Sub(list[n].at) >= delay {
			n++
		}
		if n == 0 {
			continue
		}
		out[name] = list[n-1]
		if n == len(list) {
			delete(r.streams, name)
		} else {
			r.streams[name] = list[n:]
		}
	}
	return out
}

// reclaim purges what has waited out the delay: each such stream's event
// messages below its mark, and its trim and deletion records before the
// newest of them. A failed purge is retried by the stream's next one.
func (l *Log) reclaim(now time.Time) {
	for name, c := range l.reclaims.due(now, l.opts.ReclaimDelay) {
		ctx, cancel := context.WithTimeout(l.ctx, l.opts.Timeout)
		var err error
		// Sequence 0 would purge the whole subject (nats.go omits it).
		if c.below > 0 {
			err = l.stream.Purge(ctx, jetstream.WithPurgeSubject(subjEvents+token(name)), jetstream.WithPurgeSequence(c.below))
		}
		if err == nil {
			err = l.stream.Purge(ctx, jetstream.WithPurgeSubject(subjCut+token(name)), jetstream.WithPurgeSequence(c.record))
		}
		cancel()
		if err != nil {
			l.logger.Warn("reclaiming the storage of a trim failed; the stream's next trim retries", "stream", name, "err", err)
		}
	}
}

// reclaimer reclaims what falls due, off the writer's path: after each
// trim or deletion, and every half delay.
func (l *Log) reclaimer() {
	defer l.wg.Done()
	t := time.NewTicker(max(l.opts.ReclaimDelay/2, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			l.reclaim(now)
		case <-l.reclaimNow:
			l.reclaim(time.Now())
		case <-l.ctx.Done():
			return
		}
	}
}
