package stream

import (
	"github.com/sselog/sselog/store"
)

// Reasons a subscriber is sent a reset instead of an exact continuation.
const (
	// resetTrimmed: events after the resume point were removed by
	// retention; what follows starts at the oldest retained event.
	resetTrimmed = "trimmed"
	// resetUnknown: the resume point is newer than any id in the database;
	// what follows is live.
	resetUnknown = "unknown"
	// resetDeleted: the stream was deleted; the connection ends after it.
	resetDeleted = "deleted"
)

// resetFrame appends an SSE "reset" event: id is where a client that
// reconnects after it resumes from, data is {"reason": ...} with, for a
// trim, the oldest retained id ("" when none is left).
func resetFrame(b []byte, id store.ID, reason string, oldest *store.ID) []byte {
	data := make([]byte, 0, 80)
	data = append(data, `{"reason":"`...)
	data = append(data, reason...)
	data = append(data, '"')
	if reason == resetTrimmed {
		data = append(data, `,"oldest_id":"`...)
		if oldest != nil {
			data = oldest.AppendText(data)
		}
		data = append(data, '"')
	}
	data = append(data, '}')
	return AppendFrame(b, id, store.ResetType, data)
}
