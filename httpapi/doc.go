// Package httpapi is sselog's HTTP interface: an http.Handler, routed with
// gorilla/mux, that publishes events into the log and streams them out as
// Server-Sent Events.
//
// The contract:
//   - A publish is answered 201 only once the log has made it durable.
//   - An SSE response starts with a "retry:" hint flushed at once, then
//     replays every event after the client's Last-Event-ID (header, else the
//     last_event_id query parameter), then follows live, and sends a comment
//     line whenever it has been idle for the heartbeat interval.
//   - Client input never reaches a frame unvalidated, and bad input is
//     answered with a 4xx JSON error and changes nothing. Every error goes
//     through one function, writeError, which maps it to a status.
//   - A subscriber whose writes make no progress for the write timeout is
//     disconnected; it resumes with Last-Event-ID.
package httpapi
