// Package store is sselog's durable event log: the domain types (Event, ID)
// and an append-only bbolt database holding every stream.
//
// The contract, which the rest of sselog builds on:
//
//   - One id space. Every event gets a ULID assigned by the single writer
//     goroutine, in commit order. Ids strictly increase across all streams,
//     across restarts (the newest id is persisted in every transaction) and
//     when the wall clock steps backwards (the generator never goes below the
//     last id it issued).
//
//   - Acknowledged means durable. Append returns only after the bbolt
//     transaction holding the events has committed and fsynced. NoSync is
//     never set.
//
//   - Group commit. Concurrent Append calls queue for one writer goroutine,
//     which takes everything queued into one transaction. A lone Append on an
//     idle log commits at once; there is no timer.
//
//   - Failures are whole. A commit that fails (disk full, an I/O error)
//     answers its appends with ErrWrite and leaves nothing of them stored or
//     visible; the log goes on, and later commits may succeed. An append
//     refused by MaxStreams (ErrTooManyStreams) does not hold back the
//     others of its commit. Open refuses a damaged file with ErrCorrupt,
//     and a bbolt file that holds buckets but not the layout below (another
//     program's database, a partial copy) with ErrNotLog, and adds nothing
//     to either.
//
//   - All or nothing. The events of one Append call land in one transaction,
//     contiguous in id order.
//
//   - Ordered notification. Hooks registered with OnCommit are called by the
//     writer after each commit, in commit (and therefore id) order, before
//     any caller of that transaction is answered.
//
//   - Removal is a prefix, and is remembered. Trim removes the oldest
//     events of a stream that a Cut selects, in bounded transactions
//     beside the writer. The selection rule exists once: Cut.Selects
//     applies it to a stream's counters, and a stream's Limits (the
//     server's defaults with its Policy applied) give its Cut at a given
//     time. DeleteStream removes a whole stream through the writer, in
//     order with appends, and runs the OnDelete hooks. Either way the stream's low-water mark (the newest id
//     removed) is persisted, and every read reports it (Scan's Bounds) from
//     the same transaction as its events, so a reader can always tell
//     "nothing after my position" from "what was after it is gone".
//
//   - Counters agree with events. A stream's entry in "streams" changes in
//     the same transaction as its events; Check reports any disagreement
//     (count, bytes, tombstone, low-water mark, the newest issued id) as
//     ErrCorrupt.
//
//   - Offline outputs are whole or absent. Compact writes its copy under a
//     temporary name beside the output, fsyncs it, moves it into place
//     and fsyncs the directory; the output name never holds part of a
//     database. The temporary file is locked with flock (CreateTemp) while
//     written, so a live run to the same output is refused with ErrBusy and
//     a killed run's leftover is taken over (where there is no flock, it is
//     refused until removed).
//
//   - A keyed request is stored once. AppendOnce stores a request under an
//     idempotency key at most once per stream and window (Options.
//     IdempotencyWindow): the key's record is written in the transaction of
//     its events, and the writer looks the key up in the transaction that
//     would store it, so concurrent duplicates store one copy and get its
//     ids. ExpireKeys removes keys past the window in bounded transactions.
//
//   - No stored event has the type ResetType, which the stream layer uses to
//     tell subscribers about removed events.
//
// A replica (Options.Replica; see replica.go) is a Log that copies a
// replicated log, the jetstream package's cluster, instead of assigning ids:
// Apply, ApplyTrim, ApplyDelete and ApplyPolicy store the replicated log's
// writes in its order with its ids, each recording the write's position in
// the same transaction, and the direct writes (Append, AppendOnce,
// DeleteStream, Trim, SetPolicy, DeletePolicy) return ErrReplica. Reads,
// bounds and hooks are a standalone log's. A replica's file is stamped with
// its identity; Open refuses to mix a replica's file and a standalone log's,
// or two replicas' (ErrIdentity). Trims and deletions raise the low-water
// mark, and the newest id, to the marks the replicated log recorded even
// when the replica never held the removed events (it was rebuilt after
// them), so a client resuming from one is told the same on every node.
//
// Layout: bucket "events" holds one sub-bucket per stream, keyed by the
// 16-byte binary ULID (byte order is id order, so resuming is one Seek);
// bucket "streams" holds per-stream counters, the low-water mark and a
// deletion tombstone; bucket "retention" holds per-stream retention
// overrides; bucket "meta" holds the layout version and the newest issued
// id (and, in a replica, its identity and position); bucket "idem" holds the idempotency records, keyed by the first id
// of their request. Every sselog file has "events", "streams", "meta" and
// the version from its first transaction; "retention" arrived with
// version 2, and "idem" later, within version 2 (Open adds it to a file
// without it; a binary that does not know it leaves it alone).
package store
