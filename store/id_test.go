package store_test

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
)

func TestIDText(t *testing.T) {
	l := testkit.OpenAt(t, filepath.Join(t.TempDir(), "log.db"), store.Options{})
	id := mustAppend(t, l, "a", makeEvents("", 1, 0)...)[0]

	s := id.String()
	if len(s) != 26 {
		t.Fatalf("String() = %q, want 26 characters", s)
	}
	if got := string(id.AppendText([]byte("id: "))); got != "id: "+s {
		t.Fatalf("AppendText = %q, want %q", got, "id: "+s)
	}
	back, err := store.ParseID(s)
	if err != nil || back != id {
		t.Fatalf("ParseID(%q) = %s, %v; want %s", s, back, err, id)
	}
	// Clients echo ids back in lower case in Last-Event-ID at times; a ULID
	// is case-insensitive.
	if back, err := store.ParseID(strings.ToLower(s)); err != nil || back != id {
		t.Fatalf("ParseID(lower) = %s, %v; want %s", back, err, id)
	}
	js, err := json.Marshal(struct{ ID store.ID }{id})
	if err != nil || string(js) != `{"ID":"`+s+`"}` {
		t.Fatalf("json = %s, %v", js, err)
	}
	if id.IsZero() || !(store.ID{}).IsZero() {
		t.Fatal("IsZero is wrong")
	}
	if (store.ID{}).Compare(id) != -1 || id.Compare(id) != 0 || id.Compare(store.ID{}) != 1 {
		t.Fatal("the zero ID must sort before every issued id")
	}

	for _, bad := range []string{"", "x", s[:25], s + "0", "8" + s[1:], strings.Repeat("U", 26), strings.Repeat("z", 100)} {
		if _, err := store.ParseID(bad); !errors.Is(err, store.ErrInvalidID) {
			t.Errorf("ParseID(%q) = %v, want ErrInvalidID", bad, err)
		}
	}
}
