package httpapi_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/stream"
)

// TestObservePublish: with ObservePublish set, every publish answer is
// reported with its status, token refusals and oversized bodies
// included, and an oversized chunked body still closes its connection
// (net/http does so only for its own writer, not for the wrapper that
// reports the status).
func TestObservePublish(t *testing.T) {
	var mu sync.Mutex
	seen := map[int]int{}
	s := newServer(t, httpapi.Options{MaxBody: 64, ObservePublish: func(status int) {
		mu.Lock()
		defer mu.Unlock()
		seen[status]++
	}}, stream.Options{})
	s.mustPublish(t, "s", `{"data":1}`)
	if status, _, _, _ := s.do(http.MethodPost, "/v1/streams/s/events", "application/json", `{"data":`, nil); status != http.StatusBadRequest {
		t.Fatalf("malformed: %d", status)
	}
	conn, err := net.Dial("tcp", s.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	big := `{"data":"` + strings.Repeat("x", 100) + `"}`
	fmt.Fprintf(conn, "POST /v1/streams/s/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(big), big)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !resp.Close {
		t.Fatalf("oversized chunked body: %d, Close %v; want 413 and the connection closed", resp.StatusCode, resp.Close)
	}
	mu.Lock()
	defer mu.Unlock()
	if seen[201] != 1 || seen[400] != 1 || seen[413] != 1 {
		t.Fatalf("reported %v, want one each of 201, 400 and 413", seen)
	}
}
