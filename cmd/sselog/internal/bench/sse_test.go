package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

// parsed is a frame copied out of the parser, for comparing.
type parsed struct {
	id, event, data string
	retry           int64
	hasID, hasData  bool
}

func parseAll(t *testing.T, input string, bufSize int) ([]parsed, int64, error) {
	t.Helper()
	p := newParser(strings.NewReader(input), bufSize)
	var out []parsed
	var f frame
	for {
		err := p.next(&f)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return out, p.comments, err
		}
		out = append(out, parsed{string(f.id), string(f.event), string(f.data), f.retry, f.hasID, f.hasData})
	}
}

func TestParser(t *testing.T) {
	long := strings.Repeat("x", 100)
	tests := []struct {
		name     string
		input    string
		want     []parsed
		comments int64
		wantErr  error
	}{
		{
			name:  "sselog stream",
			input: "retry: 3000\n\nid: 01A\nevent: bench\ndata: {\"n\":1}\n\nid: 01B\ndata: {}\n\n",
			want: []parsed{
				{retry: 3000},
				{id: "01A", event: "bench", data: `{"n":1}`, retry: -1, hasID: true, hasData: true},
				{id: "01B", data: "{}", retry: -1, hasID: true, hasData: true},
			},
		},
		{
			name:  "CRLF line ends",
			input: "retry: 10\r\n\r\nid: 7\r\ndata: a\r\ndata: b\r\n\r\n",
			want: []parsed{
				{retry: 10},
				{id: "7", data: "a\nb", retry: -1, hasID: true, hasData: true},
			},
		},
		{
			name:  "multi-line data, empty data lines",
			input: "data: one\ndata:\ndata: three\n\ndata\n\n",
			want: []parsed{
				{data: "one\n\nthree", retry: -1, hasData: true},
				{data: "", retry: -1, hasData: true},
			},
		},
		{
			name:     "comments and heartbeats are skipped",
			input:    ":\n\n: keep-alive\n\nid: 1\n: in between\ndata: x\n\n:\n\n",
			want:     []parsed{{id: "1", data: "x", retry: -1, hasID: true, hasData: true}},
			comments: 4,
		},
		{
			name:  "no space after the colon, and only one space removed",
			input: "id:5\ndata:  two spaces\n\n",
			want:  []parsed{{id: "5", data: " two spaces", retry: -1, hasID: true, hasData: true}},
		},
		{
			name:  "unknown fields and a bad retry are ignored",
			input: "foo: bar\nretry: soon\ndata: x\n\n",
			want:  []parsed{{data: "x", retry: -1, hasData: true}},
		},
		{
			name:  "an id with NUL is ignored",
			input: "id: a\x00b\ndata: x\n\n",
			want:  []parsed{{data: "x", retry: -1, hasData: true}},
		},
		{
			name:  "lines longer than the buffer",
			input: "id: " + long + "\ndata: " + long + "\r\ndata: " + long + "\n\n",
			want:  []parsed{{id: long, data: long + "\n" + long, retry: -1, hasID: true, hasData: true}},
		},
		{
			name:    "a block cut off before its blank line",
			input:   "id: 1\ndata: x\n\nid: 2\ndata: y\n",
			want:    []parsed{{id: "1", data: "x", retry: -1, hasID: true, hasData: true}},
			wantErr: io.ErrUnexpectedEOF,
		},
		{
			name:    "a line cut off",
			input:   "data: x\n\ndata: y",
			want:    []parsed{{data: "x", retry: -1, hasData: true}},
			wantErr: io.ErrUnexpectedEOF,
		},
		{
			name:  "blank lines alone are nothing",
			input: "\n\n\r\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// 16 is bufio's smallest buffer: it exercises the long-line path.
			for _, size := range []int{16, 4096} {
				got, comments, err := parseAll(t, tc.input, size)
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("buffer %d: error %v, want %v", size, err, tc.wantErr)
				}
				if len(got) != len(tc.want) {
					t.Fatalf("buffer %d: got %d frames %+v, want %d %+v", size, len(got), got, len(tc.want), tc.want)
				}
				for i := range got {
					if got[i] != tc.want[i] {
						t.Errorf("buffer %d: frame %d = %+v, want %+v", size, i, got[i], tc.want[i])
					}
				}
				if comments != tc.comments {
					t.Errorf("buffer %d: %d comments, want %d", size, comments, tc.comments)
				}
			}
		})
	}
}

// endless repeats one SSE frame forever.
type endless struct {
	frame []byte
	off   int
}

func (e *endless) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], e.frame[e.off:])
		n += c
		e.off = (e.off + c) % len(e.frame)
	}
	return n, nil
}

func TestParserDoesNotAllocatePerEvent(t *testing.T) {
	src := &endless{frame: []byte("id: 01JDX3ZJ1P8V6Y5C4Q2W7N9K0A\nevent: bench\ndata: {\"t\":1764000000000000000,\"n\":12345,\"p\":\"xxxxxxxx\"}\n:\n\n")}
	p := newParser(src, 4096)
	var f frame
	if err := p.next(&f); err != nil { // grows the frame's buffers once
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if err := p.next(&f); err != nil {
			t.Fatal(err)
		}
		if _, ok := jsonInt(f.data, seqKey); !ok {
			t.Fatal("no sequence number")
		}
		if _, ok := jsonInt(f.data, timeKey); !ok {
			t.Fatal("no time")
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per event", allocs)
	}
}

func TestJSONInt(t *testing.T) {
	tests := []struct {
		name string
		data string
		key  string
		want int64
		ok   bool
	}{
		{"first member", `{"n":42,"t":7}`, `"n":`, 42, true},
		{"later member", `{"t":1764000000000000000,"n":9}`, `"t":`, 1764000000000000000, true},
		{"largest int64", `{"n":9223372036854775807}`, `"n":`, 9223372036854775807, true},
		{"overflow", `{"n":9223372036854775808}`, `"n":`, 0, false},
		{"missing", `{"p":"x"}`, `"n":`, 0, false},
		{"not a number", `{"n":"7"}`, `"n":`, 0, false},
		{"negative", `{"n":-1}`, `"n":`, 0, false},
		{"empty", `{"n":}`, `"n":`, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := jsonInt([]byte(tc.data), []byte(tc.key))
			if got != tc.want || ok != tc.ok {
				t.Fatalf("jsonInt(%s, %s) = %d, %t; want %d, %t", tc.data, tc.key, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestEventBuilder(t *testing.T) {
	tests := []struct {
		name     string
		size     int
		count    int
		t, n     int64
		wantSize int // of each event's compact data; 0: not checked
	}{
		{"padded, no members", 100, 1, -1, -1, 100},
		{"padded with members", 100, 1, 1764000000000000000, 7, 100},
		{"exactly the members", 0, 1, 1764000000000000000, 7, 0},
		{"smaller than the members", 10, 1, 1764000000000000000, 7, 0},
		{"padding that just fits", len(`{"n":1,"p":""}`), 1, -1, 1, len(`{"n":1,"p":""}`)},
		{"batch", 64, 5, 1, 10, 64},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := newEventBuilder(tc.size).appendBatch(nil, tc.count, tc.t, tc.n)
			type event struct {
				Type string          `json:"type"`
				Data json.RawMessage `json:"data"`
			}
			var events []event
			if tc.count == 1 {
				var e event
				if err := json.Unmarshal(body, &e); err != nil {
					t.Fatalf("%s: %v", body, err)
				}
				events = []event{e}
			} else if err := json.Unmarshal(body, &events); err != nil {
				t.Fatalf("%s: %v", body, err)
			}
			if len(events) != tc.count {
				t.Fatalf("%d events, want %d", len(events), tc.count)
			}
			for i, e := range events {
				var compact bytes.Buffer
				if err := json.Compact(&compact, e.Data); err != nil || compact.Len() != len(e.Data) {
					t.Fatalf("data %s is not compact JSON (%v)", e.Data, err)
				}
				if tc.wantSize > 0 && len(e.Data) != tc.wantSize {
					t.Errorf("data %s is %d bytes, want %d", e.Data, len(e.Data), tc.wantSize)
				}
				if n, ok := jsonInt(e.Data, seqKey); tc.n >= 0 && (!ok || n != tc.n+int64(i)) {
					t.Errorf("event %d: n = %d, %t; want %d", i, n, ok, tc.n+int64(i))
				}
				if ts, ok := jsonInt(e.Data, timeKey); tc.t >= 0 && (!ok || ts != tc.t) {
					t.Errorf("event %d: t = %d, %t; want %d", i, ts, ok, tc.t)
				}
			}
		})
	}
}

func TestReadAnswer(t *testing.T) {
	tests := []struct {
		name     string
		answer   string
		status   int
		body     string
		keep     bool
		wantFail bool
	}{
		{"content length", "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{\"id\":1}", 201, `{"id":1}`, true, false},
		{"chunked", "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"id\r\n4\r\n\":1}\r\n0\r\n\r\n", 201, `{"id":1}`, true, false},
		{"connection close", "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}", 503, `{}`, false, false},
		{"HTTP/1.0", "HTTP/1.0 201 Created\r\nContent-Length: 2\r\n\r\n{}", 201, `{}`, false, false},
		{"to the end", "HTTP/1.1 201 Created\r\n\r\nabc", 201, "abc", false, false},
		{"garbage", "SSH-2.0-OpenSSH\r\n\r\n", 0, "", false, true},
		{"short body", "HTTP/1.1 201 Created\r\nContent-Length: 10\r\n\r\nabc", 0, "", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &poster{br: bufio.NewReader(strings.NewReader(tc.answer))}
			status, body, keep, err := p.readAnswer()
			if tc.wantFail {
				if err == nil {
					t.Fatalf("no error for %q", tc.answer)
				}
				return
			}
			if err != nil || status != tc.status || string(body) != tc.body || keep != tc.keep {
				t.Fatalf("readAnswer = %d, %q, keep %t, %v; want %d, %q, keep %t", status, body, keep, err, tc.status, tc.body, tc.keep)
			}
		})
	}
}
