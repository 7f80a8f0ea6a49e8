// Package retention removes old events from the log.
//
// # What is trimmed
//
// Each stream has limits (store.Limits): a maximum age, a maximum number
// of events and a maximum stored size (the bytes the log keeps for the
// events' types and data, as counted by store.StreamInfo.Bytes). The
// server's defaults (Options.Defaults) apply to every stream; a stream's
// override, kept in the database with store.Log.SetPolicy, replaces the
// dimensions it sets (store.Limits.Apply), where 0 means no limit on that
// dimension. A stream is trimmed from its oldest event: first everything
// older than the age limit, then the oldest until it is within both the
// count and the size limit, so with several limits the strictest one
// decides. An event's age is its id's timestamp.
//
// The limits and this rule belong to package store, not to this one: the
// worker turns a stream's limits into a store.Cut, skips the stream when
// store.Cut.Selects finds nothing to remove from its counters, and
// otherwise leaves the choice of events to store.Log.Trim, which applies
// the same rule. The HTTP API shows the same limits without importing
// this package.
//
// # Chunks
//
// A Worker removes at most Options.Chunk events per write transaction and
// commits each chunk before taking the next. The log's writer and the
// worker share bbolt's single write lock, so an append waits at most for
// the chunk in progress, never for a whole trim: publishing keeps its
// latency while a million events are removed (TestPublishLatencyWhileTrimming
// measures it). A pass checks its context between chunks.
//
// # Trimmed events are gone
//
// Removal is permanent. Each trim moves the stream's persisted low-water
// mark to the newest id it removed (store.StreamInfo.LowWater). A client
// that resumes from an id below that mark has missed events for good: the
// stream package sends it a "reset" event instead of pretending the replay
// is complete.
//
// # Time
//
// The age limit is measured against Options.Now, read once per pass, so
// tests and tools can inject a clock. Run's ticker uses the runtime's
// timers (tests drive it with testing/synctest).
package retention
