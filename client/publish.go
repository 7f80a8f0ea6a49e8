package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// maxKeyLen is the longest idempotency key the server accepts.
const maxKeyLen = 255

// maxAnswer bounds what is read of a successful answer: a batch's ids
// take 29 bytes each.
const maxAnswer = 16 << 20

// Publish appends events to stream, atomically and in order, and returns
// their ids in the same order once the server has stored them durably.
//
// The events go as one JSON array (a batch, even of one), under an
// idempotency key drawn at random for this call. A failure that a retry
// may fix (the connection failing at any point, or 408, 429, 500, 502,
// 503, 504) is retried with the same key and body after a pause (see
// WithBackoff), honouring Retry-After, until the server answers or ctx
// ends. However many attempts reached the server, the events are stored
// once, provided the last attempt comes within the server's idempotency
// window (24 hours by default), which a deadline on ctx guarantees.
//
// Any other answer is returned at once as an *Error: errors.Is tells
// ErrInvalid, ErrUnauthorized, ErrForbidden, ErrNotFound, ErrTooLarge and
// ErrKeyReused apart. If ctx ends first, the error wraps ctx's error and
// the last attempt's; the events may or may not have been stored, and a
// later Publish of them gets a new key, so it can store them a second
// time (PublishWithKey, with the same key, cannot).
func (c *Client) Publish(ctx context.Context, stream string, events ...Event) ([]string, error) {
	return c.PublishWithKey(ctx, stream, rand.Text(), events...)
}

// PublishWithKey is Publish with the caller's idempotency key: 1 to 255
// visible ASCII characters ('!' to '~'). A key derived from what the
// events record (an outbox row's id, say) lets a publisher that crashes
// and starts over repeat a publish whose answer it never saw, without
// storing it twice, within the server's window. The same key with other
// events, on the same stream, is refused with ErrKeyReused.
func (c *Client) PublishWithKey(ctx context.Context, stream, key string, events ...Event) ([]string, error) {
	if err := checkKey(key); err != nil {
		return nil, fmt.Errorf("publish to %s: %w", stream, err)
	}
	body, err := encodeBatch(events)
	if err != nil {
		return nil, fmt.Errorf("publish to %s: %w", stream, err)
	}
	var ids []string
	err = c.retry(ctx, func() error {
		ids, err = c.publishOnce(ctx, stream, key, body, len(events))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("publish to %s: %w", stream, err)
	}
	return ids, nil
}

// checkKey checks an idempotency key as the server does, so that a bad
// one is not sent, refused, and taken for the server's fault.
func checkKey(key string) error {
	if len(key) == 0 || len(key) > maxKeyLen {
		return fmt.Errorf("%w: idempotency key must be 1 to %d characters", ErrInvalid, maxKeyLen)
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c < '!' || c > '~' {
			return fmt.Errorf("%w: idempotency key must be visible ASCII ('!' to '~')", ErrInvalid)
		}
	}
	return nil
}

// wireEvent is an event as the publish endpoint reads it.
type wireEvent struct {
	Type string          `json:"type,omitempty"`
	Data json.RawMessage `json:"data"`
}

// encodeBatch encodes events as the JSON array the server reads. Data is
// sent as given, not HTML-escaped: "<" stays "<", so that subscribers get
// the bytes that were published.
func encodeBatch(events []Event) ([]byte, error) {
	if len(events) == 0 {
		return nil, fmt.Errorf("%w: no events", ErrInvalid)
	}
	batch := make([]wireEvent, len(events))
	for i, e := range events {
		data := e.Data
		if data == nil {
			data = json.RawMessage("null")
		} else if !json.Valid(data) {
			return nil, fmt.Errorf("%w: event %d: data is not JSON", ErrInvalid, i)
		}
		batch[i] = wireEvent{Type: e.Type, Data: data}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(batch); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// publishOnce is one attempt: the request, and its answer read whole. A
// failure to read the answer is the connection's, and retried; an answer
// that reads but is not sselog's is ErrProtocol.
func (c *Client) publishOnce(ctx context.Context, stream, key string, body []byte, n int) ([]string, error) {
	req, err := c.newRequest(ctx, http.MethodPost, c.streamURL(stream, "/events"), body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Idempotency-Key", key)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusCreated {
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			resp.Body.Close()
			return nil, fmt.Errorf("%w: status %d to a publish, want 201", ErrProtocol, resp.StatusCode)
		}
		return nil, responseError(resp, c.now())
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	var answer struct {
		IDs []string `json:"ids"`
	}
	if err := json.Unmarshal(raw, &answer); err != nil {
		return nil, fmt.Errorf("%w: publish answer %.200q: %v", ErrProtocol, raw, err)
	}
	if len(answer.IDs) != n {
		return nil, fmt.Errorf("%w: %d ids for %d events", ErrProtocol, len(answer.IDs), n)
	}
	return answer.IDs, nil
}
