// Package stream is the in-memory side of sselog: who follows which stream,
// and how each follower moves from replay into live without a gap or a
// duplicate.
//
// A Subscription is a cursor over one stream's log. It reads the events
// after its cursor from the log in short read transactions, a bounded page
// at a time, until it has caught up; from then on it reads the frames of
// newly committed events from the stream's in-memory tail, which the log's
// commit hook fills in commit order. Because ids are assigned in commit
// order and every frame is filtered by "id greater than the cursor", the
// handover between the two sources can neither skip nor repeat an event,
// whatever the timing of commits against the subscribe.
//
// When the events after a cursor are gone, a subscriber is told rather than
// silently moved on: it is handed an SSE event of type "reset" whose id is
// where a reconnecting client should resume from, and whose data gives the
// reason. "trimmed": retention removed events after the cursor (detected
// from the log's low-water mark, read in the same transaction as the page
// that follows); "oldest_id" names the oldest retained event. "unknown": the
// resume point is newer than any id in the database. "deleted": the stream
// was deleted; the subscription ends after the reset (Next returns
// ErrDeleted). A subscriber reading live frames from the tail already has
// every event, so a trim behind it does not reset it. A subscription opened
// with SubscribeStart (a start by time or by count, whose cursor is a
// computed bound rather than an event the client was handed) is spared
// the resets its first read of the log would give (events removed before
// its start, a start beyond the newest id); a trim that passes it later,
// or a deletion while it is open, is told like any other.
//
// Nothing is ever dropped for a slow subscriber: when the tail has moved on
// past it, it reads from the log again. The SSE frame of a committed event
// is encoded once, in the commit hook, and shared by every subscriber that
// sends it live.
//
// Memory is bounded by two hub-wide budgets, whatever the number of
// subscribers, streams and events:
//
//   - TailBudget (Options.TailBudget, 64 MiB by default) caps the tails of
//     all followed streams together, counted as the memory they hold: the
//     buffer of each commit run still in a tail (whole, until its last
//     frame goes) and the ring slots a tail has grown by. After every
//     commit the total is within the budget: the committing stream is cut
//     to its fair share (the budget over the number of followed streams,
//     at least MinTailShare), then the others, round robin; when the
//     shares do not fit, tails are emptied. A cut tail loses no event: its
//     floor moves up, and subscribers behind the floor read from the log,
//     as slow subscribers do. A stream no longer followed leaves the budget
//     at once. Outside the count: each followed stream's fixed cost (about
//     a kilobyte), and the frames a subscriber is writing after its tail
//     let go of them, until its next call to Next.
//
//   - ReplayBudget (Options.ReplayBudget, 64 MiB by default) caps the
//     replay pages of all subscriptions together, counted as their buffers'
//     capacity, from the start of the read that fills a page until the
//     subscriber's next call to Next or Close. A page takes up to PageBytes
//     from the budget; once the budget is spent, MinReplayPage. A page
//     holds at least one event, so the pages held never pass the budget
//     plus MinReplayPage per subscription, beyond events that alone are
//     larger and the reset frame that announces a gap. A subscription that
//     has caught up holds no page.
//
// Hub.Usage reports both totals.
package stream
