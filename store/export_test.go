package store

import "context"

// QueuedAppends reports how many appends wait for the writer. Tests use it to
// know, without sleeping, that callers have queued behind a held writer.
func (l *Log) QueuedAppends() int { return len(l.queue) }

// NoSync reports bbolt's NoSync flag, which must never be set: a SIGKILL
// test cannot tell a missing fsync from a present one.
func (l *Log) NoSync() bool { return l.db.NoSync }

// ScanAfter is Scan without the bounds.
func (l *Log) ScanAfter(stream string, after ID, limit int, fn func(*Event) error) error {
	_, err := l.Scan(stream, after, limit, fn)
	return err
}

// AppendOnceQueued skips AppendOnce's read-only lookup, as a call that
// raced with the commit of its key's first use does.
func (l *Log) AppendOnceQueued(ctx context.Context, stream string, key Key, events []Event) ([]ID, bool, error) {
	return l.appendOnceQueued(ctx, stream, key, events, l.keys.hash(stream, key.Name))
}
