// Package httpapi is sselog's HTTP interface: an http.Handler, routed with
// gorilla/mux, that publishes events into the log and streams them out as
// Server-Sent Events, with the operator endpoints (stream info and
// deletion, retention overrides, backup) beside them.
//
// The contract:
//   - A publish is answered 201 only once the log has made it durable. A
//     failed disk write is 503 with Retry-After, and nothing of it is
//     stored or visible.
//   - An SSE response starts with a "retry:" hint flushed at once, then
//     replays the events from its start, then follows live, and sends a
//     comment line whenever it has been idle for the heartbeat interval.
//     The start is the Last-Event-ID header when it is present and not
//     empty, whatever the query says; else at most one of the query
//     parameters last_event_id (after that id), since (the first event at
//     or after a time) and last (the newest n events); else only what is
//     committed from then on. When the stream cannot continue exactly
//     after a resume id, the stream package's "reset" event says so first;
//     a start by time or by count claims no continuity and is sent none.
//   - Client input never reaches a frame unvalidated, and bad input is
//     answered with a 4xx JSON error and changes nothing. Every error goes
//     through one function, writeError, which maps it to a status.
//   - With a Verifier, every request but /healthz needs a bearer token that
//     grants it (401 without one, 403 for a stream not granted); a stream
//     ends when its token expires.
//   - A subscriber whose writes make no progress for the write timeout is
//     disconnected; it resumes with Last-Event-ID. A subscriber over a limit,
//     or arriving during shutdown, is answered 200 with only a jittered
//     retry hint, because any other status makes EventSource give up.
//   - SSE streams run on package ssewire, which owns their connections:
//     over HTTP/1.1 the connection is taken over from net/http (Hijack),
//     which http.Server.Shutdown neither waits for nor closes. Close ends
//     every stream with a last retry hint; registered with
//     http.Server.RegisterOnShutdown, Shutdown alone ends them all. Drain
//     also waits for the taken-over ones, so that none reads a closed log.
//   - A 5xx answer carries a fixed message; its detail (file paths,
//     operating-system errors) goes to the log only.
//   - What clients make the server hold is bounded: a request body holds
//     memory for the bytes that have arrived, not the length it announces,
//     and all bodies together at most Options.BodyMemory (beyond it, 503
//     with Retry-After). No read or write deadline is ever set ahead of
//     time on an HTTP/2 request, since that keeps a stream the client has
//     reset in memory until it fires; a watchdog sets one in the past once
//     an operation has run out its time. (Over HTTP/1.1, where a deadline
//     costs nothing after the client goes, deadlines are set ahead.)
//   - Listener caps the open connections and watches the framing of
//     plain-text HTTP/1.x: a request with both Content-Length and
//     Transfer-Encoding, or any request after one whose framing it could
//     not follow, is answered 400 and its connection closed.
package httpapi
