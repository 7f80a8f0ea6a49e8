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
// every event, so a trim behind it does not reset it.
//
// Nothing is ever dropped for a slow subscriber: when the tail has moved on
// past it, it reads from the log again. The SSE frame of a committed event
// is encoded once, in the commit hook, and shared by every subscriber that
// sends it live.
package stream
