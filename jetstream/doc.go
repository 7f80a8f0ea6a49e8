// Package jetstream is sselog's cluster backend: the event log kept in one
// replicated NATS JetStream stream, with the same guarantees as the
// standalone store and the same methods the server's packages use (the
// stream, httpapi and retention packages take it through their own small
// interfaces).
//
// # Shape
//
// The log is one JetStream stream (DefaultStream, "SSELOG", file storage,
// Options.Replicas copies) with subjects under "sselog.": event messages on
// sselog.ev.<stream>, each holding the events one write appends to that
// stream (codec.go), and control messages for trims and
// deletions (sselog.cut.<stream>) and retention overrides
// (sselog.pol.<stream>). One stream gives the whole log one sequence, so a
// position is one number across every sselog stream.
//
// Each node keeps a local copy: a store.Log opened as a replica
// (Options.Replica), to which the node's one applier applies every message
// in sequence order, reading them with JetStream's batched direct get
// (apply.go: any replica answers, no consumer state, no meta leader) and
// woken by each writer's announcement. The copy's commit hooks feed the
// node's hub, and every read (replay, history, merged feeds, stream info)
// is served by the copy, so the hand-over from replay to the live tail is
// the standalone log's, and replay runs at bbolt's speed. A node opens no
// JetStream consumer, let alone one per client.
//
// # Writes
//
// One writer per node sends each write as an atomic batch (JetStream's
// allow_atomic: every message of the batch is stored, or none) whose first
// message carries Nats-Expected-Last-Sequence: the copy's position. So a
// write is decided at a known position of the whole log: its ids take
// their time from the writer's clock but never below the previous id's,
// an idempotency key is looked up where it would be stored, a trim or
// deletion removes what the copies hold there. When another node wrote
// first, JetStream refuses the batch; the writer waits until its copy has
// applied the other write and decides again. Appends queued together share
// one write (at most Options.MaxBatch requests, and one message's bytes):
// one message per stream they append to, so that a busy node costs
// JetStream one message, and with sync "always" one fsync per replica, per
// write. A request that cannot fit one message is refused with
// store.ErrBatchTooLarge.
//
// A write is answered once JetStream acknowledged it (stored on a quorum
// of the stream's replicas; with the embedded server's default
// sync_interval "always", fsynced on each of them first) and the node's
// copy has applied it. An attempt without an answer within a second (a
// stream leader that died with it) is sent again; its first message's
// write id tells whether the first attempt landed after all. A write not
// acknowledged within Options.Timeout is answered store.ErrUnavailable: it
// may or may not be stored, and a retry with the same idempotency key
// stores it once.
//
// # Ids
//
// Ids are ULIDs: 48 bits of milliseconds, then a 16-bit epoch drawn when
// the JetStream stream is created, then the 48-bit JetStream sequence of
// the event's message and the event's 16-bit index in it. They increase strictly along the sequence across
// all nodes (see Writes), so they compare bytewise like a standalone log's.
// A resume decodes the sequence; an id from another epoch or from a
// standalone database is reported foreign (store.Bounds.Foreign), and the
// subscriber is sent the unknown reset. An id of this log that the node's
// copy has not reached yet (written through another node a moment ago) is
// waited for, up to two seconds.
//
// # Retention
//
// Trims are decided on a copy (store.Log.PlanTrim, from the same limits as
// the standalone worker), written as a control message naming the newest
// removed id, applied by every copy in order, then purged from JetStream
// by the node that wrote it once ReclaimDelay has passed (reclaim.go),
// with older control messages of the stream (the message holding the mark
// stays until a later trim passes it, as it may hold retained events).
// JetStream's own limits (MaxAge, MaxMsgsPerSubject) are not used: they remove messages without a
// record in the log, and a copy could not tell a client its exact
// low-water mark. A copy rebuilt from the stream keeps every low-water
// mark and tombstone, since the newest control message of each stream is
// kept.
//
// # Not offered
//
// Backup returns store.ErrUnsupported: JetStream's snapshots (nats stream
// backup) back the cluster up, and a node's copy is rebuilt from the
// cluster by removing its file. A copy whose stream was deleted and
// recreated (a new epoch) is refused at Open with store.ErrIdentity.
// Idempotency keys whose events retention already removed are not
// rebuilt into a new copy.
package jetstream
