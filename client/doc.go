// Package client is the Go client of an sselog server: publish events,
// follow a stream over Server-Sent Events, walk its history, and keep a
// consumer's place in a checkpoint. It imports none of the server's
// packages (nor bbolt): its only dependency beyond the standard library is
// github.com/oklog/ulid/v2.
//
// # Publishing
//
// Publish sends its events as one batch (a JSON array, even for one
// event), which the server stores atomically, and returns their ids once
// they are durable. Every call carries a fresh random Idempotency-Key
// (crypto/rand, 130 bits); the retries of that call carry the same key and
// the same body. The server stores a key's request once and answers every
// repeat with the first answer, so:
//
//   - Retried, and never duplicated by a retry: a failed connection (also
//     after the request was sent, when the events may already be stored),
//     408, 429, 500, 502, 503 and 504. 500 is retried because with the key
//     every repeat is safe, and because a proxy answers it while the server
//     restarts; a server that answers 500 for good keeps Publish retrying
//     until ctx ends. Retry-After (seconds or an HTTP date) is waited, then
//     a random part of a doubling spread (WithBackoff: "full jitter").
//   - Returned at once, as an *Error: every other 4xx (ErrInvalid,
//     ErrUnauthorized, ErrForbidden, ErrNotFound, ErrTooLarge,
//     ErrKeyReused), and any status not listed above.
//   - What a retry cannot protect against: a repeat that comes after the
//     server's idempotency window (24 hours by default), and a second call
//     of Publish with the same events, which gets a new key; the first is
//     ruled out by a deadline on ctx, the second by PublishWithKey with a
//     key of the caller's. A server without idempotency keys (before they
//     were added) ignores the header, and a retry there can store a batch
//     twice.
//
// # Subscribing
//
// Subscribe is an iterator (iter.Seq2[Item, error]) over a stream's events
// from a start: After an id, the Beginning, Since a time, the Last n, or
// Live. It reconnects by itself, with Last-Event-ID set to the id of the
// last item it yielded, so that what it yields has no gap and no duplicate
// across reconnections, server restarts included. Before the first item, a
// Live start resumes after the position the server's first block gave
// (sselog sends the newest id there), so nothing committed while it
// reconnects is missed; the other starts are repeated, which is exact for
// After, Beginning and Since, and makes Last the n newest as of the
// connection that delivers the first item. Between attempts it waits the
// server's retry hint, jittered, and backs off while attempts keep
// failing. Where the server cannot continue exactly (events removed by
// retention or deletion, a position it never issued), Subscribe yields an
// Item whose Reset says so, never an event. It ends when ctx ends, when
// the loop stops, or with an error reconnecting cannot fix. Subscribe
// ignores the http.Client's Timeout, which would cut every stream.
//
// History walks the same events over the history endpoint, page by page,
// from any start but Live, and ends at the end of what is stored; Info
// describes a stream.
//
// # Consumers that crash
//
// A consumer saves the ID of each Item it has finished with in a
// Checkpoint, and starts with Resume: after a crash it handles again at
// most what it finished after its last Save (at-least-once). FileCheckpoint
// keeps the id in a file, replaced atomically and durably.
//
// # The SSE parser
//
// SSE is parsed by a small parser of this package (sse.go) held to the
// WHATWG rules: CR, LF and CRLF line ends (a CR is not held waiting for a
// LF), the byte order mark, comments, the last event id that persists from
// block to block, blocks without data that dispatch nothing but set the
// last event id, and a block cut by the end of the stream that is dropped,
// its id with it. It is tested on the
// server's golden frames and fuzzed against a second, plain reading of
// the rules. The go-sse client the server's tests use was not taken: its
// reader dispatches blocks that carry no data (the "retry:" block every
// stream starts with arrives as an empty event) and the block a stream
// ends inside, both contrary to the standard; its Connection stops for
// good on any answer but 200 (a 503 while the server restarts, a 429),
// with no Retry-After, and hands events to callbacks rather than to an
// iterator the consumer's pace drives; and it would add a dependency to
// every service that imports this package.
package client
