package httpapi

// BodyBytesHeld is how much of the body memory budget the requests in
// flight hold.
func (h *Handler) BodyBytesHeld() int64 { return h.bodies.used.Load() }
