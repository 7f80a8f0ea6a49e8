package jetstream

import (
	"bytes"
	"testing"

	"github.com/sselog/sselog/store"
)

func TestCodecRoundTrip(t *testing.T) {
	key := &store.Key{Name: "k", Digest: [32]byte{1, 2, 3}}
	reqs := []request{
		{events: []store.Event{{Type: "a", Data: []byte(`{"x":1}`)}, {Data: []byte(`2`)}}, key: key},
		{events: []store.Event{{Type: "ü", Data: []byte("\"line\\nbreak\"")}}},
	}
	b := appendMessage(nil, reqs)
	if len(b) > encodedLen(reqs) {
		t.Fatalf("encoded %d bytes, bound %d", len(b), encodedLen(reqs))
	}
	writes, err := decodeMessage(b, "s", 1234, 7, 99)
	if err != nil {
		t.Fatal(err)
	}
	if len(writes) != 2 || *writes[0].Key != *key || writes[1].Key != nil {
		t.Fatalf("writes %+v", writes)
	}
	n := uint64(0)
	for i, w := range writes {
		for j, e := range w.Events {
			want := reqs[i].events[j]
			if e.Stream != "s" || e.Type != want.Type || !bytes.Equal(e.Data, want.Data) || e.ID != makeID(1234, 7, 99, n) {
				t.Fatalf("event %d.%d: %+v", i, j, e)
			}
			n++
		}
	}
	if idSeq(writes[1].Events[0].ID) != 99 || idMs(writes[1].Events[0].ID) != 1234 || idEpoch(writes[1].Events[0].ID) != 7 {
		t.Fatal("id fields do not read back")
	}
}

// FuzzDecodeMessage: a message body from anywhere (sselog.> is open to
// anyone with access to the cluster) is decoded or refused, never a panic
// or an event without data.
func FuzzDecodeMessage(f *testing.F) {
	f.Add(appendMessage(nil, []request{{events: []store.Event{{Type: "t", Data: []byte("1")}}, key: &store.Key{Name: "k"}}}))
	f.Add([]byte{1, 1, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		writes, err := decodeMessage(b, "s", 1, 1, 1)
		if err != nil {
			return
		}
		for _, w := range writes {
			if len(w.Events) == 0 {
				t.Fatal("a request without events")
			}
			for _, e := range w.Events {
				if len(e.Data) == 0 || store.ValidateType(e.Type) != nil {
					t.Fatalf("an event the copy would refuse: %+v", e)
				}
			}
			if w.Key != nil && store.ValidateKey(w.Key.Name) != nil {
				t.Fatalf("a key the copy would refuse: %q", w.Key.Name)
			}
		}
	})
}
