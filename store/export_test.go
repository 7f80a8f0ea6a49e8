package store

// QueuedAppends reports how many appends wait for the writer. Tests use it to
// know, without sleeping, that callers have queued behind a held writer.
func (l *Log) QueuedAppends() int { return len(l.queue) }

// NoSync reports bbolt's NoSync flag, which must never be set: a SIGKILL
// test cannot tell a missing fsync from a present one.
func (l *Log) NoSync() bool { return l.db.NoSync }
