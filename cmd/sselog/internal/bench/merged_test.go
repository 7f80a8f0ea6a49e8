package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"testing"
)

func TestFanoutMerged(t *testing.T) {
	url := newServer(t)
	r, err := runJSON[fanoutReport](t, "fanout", "--url", url, "--merged", "--streams", "12", "--per-subscriber", "3",
		"--subscribers", "20", "--rate", "300", "--duration", "500ms")
	if err != nil {
		t.Fatal(err)
	}
	// 150 events over 12 streams: streams 0 to 5 have 13, the others 12;
	// each subscriber follows 3 streams, 4 apart.
	if !r.Merged || r.Streams != 12 || r.PerSubscriber != 3 || r.Published != 150 || !r.Complete {
		t.Errorf("run: %+v", r)
	}
	var want int64
	l := &layout{names: make([]string, 12), perSub: 3}
	for i := range 20 {
		for _, j := range l.streamsOf(i) {
			want += l.count(j, 150)
		}
	}
	if r.Expected != want || r.Deliveries != want {
		t.Errorf("deliveries %d of %d, want %d", r.Deliveries, r.Expected, want)
	}
	if r.Gaps+r.Duplicates+r.Disordered+r.Malformed+r.Foreign+r.Errors+r.PublishErrors != 0 {
		t.Errorf("checks: %+v", r)
	}
	// Each tick's events go to their streams in one request each.
	if r.PublishRequests < 1 || r.PublishRequests > r.Published {
		t.Errorf("%d publish requests for %d events", r.PublishRequests, r.Published)
	}
	for j := range 12 {
		name := fmt.Sprintf("%s.%d", r.Stream, j)
		if n := streamCount(t, url, name); n != l.count(int64(j), 150) {
			t.Errorf("stream %s holds %d events, want %d", name, n, l.count(int64(j), 150))
		}
	}
	checkLatency(t, r.latency)
}

func TestLayout(t *testing.T) {
	tests := []struct {
		name                 string
		streams, perSub, sub int
	}{
		{"issue 12's", 100, 10, 1000},
		{"uneven", 7, 3, 50},
		{"all streams each", 5, 5, 4},
		{"one stream each", 3, 1, 9},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := newLayout(&sselogAdapter{}, "b", &fanoutConfig{merged: true, streams: tc.streams, perSub: tc.perSub})
			if err != nil {
				t.Fatal(err)
			}
			taken := make([]int, tc.streams)
			for i := range tc.sub {
				streams := l.streamsOf(i)
				sorted := slices.Sorted(slices.Values(streams))
				if len(slices.Compact(sorted)) != tc.perSub {
					t.Fatalf("subscriber %d follows %v, want %d distinct streams", i, streams, tc.perSub)
				}
				q, err := url.ParseQuery(strings.TrimPrefix(l.subscribePath(i), "/v1/events?"))
				if err != nil {
					t.Fatal(err)
				}
				for k, j := range streams {
					taken[j]++
					if q["stream"][k] != l.names[j] {
						t.Fatalf("subscriber %d: path %s, stream %d is %s", i, l.subscribePath(i), k, l.names[j])
					}
				}
			}
			// Over whole rounds of S subscribers every stream is taken K
			// times; 1000 subscribers on 100 streams is ten rounds.
			if tc.sub%tc.streams == 0 {
				for j, n := range taken {
					if want := tc.sub / tc.streams * tc.perSub; n != want {
						t.Errorf("stream %d followed by %d subscribers, want %d", j, n, want)
					}
				}
			}
			// final and count against a plain walk over the events.
			for _, sent := range []int64{0, 1, int64(tc.streams) - 1, int64(tc.streams), 3*int64(tc.streams) + 2} {
				for j := range l.stride() {
					last, n := j-l.stride(), int64(0)
					for e := range sent {
						if e%l.stride() == j {
							last, n = e, n+1
						}
					}
					if l.final(j, sent) != last || l.count(j, sent) != n {
						t.Errorf("stream %d after %d events: final %d, count %d; want %d, %d", j, sent, l.final(j, sent), l.count(j, sent), last, n)
					}
				}
			}
		})
	}
}

func TestLayoutFlags(t *testing.T) {
	tests := []struct {
		name string
		f    fanoutConfig
		want string // "" : valid
	}{
		{"single", fanoutConfig{}, ""},
		{"merged defaults", fanoutConfig{merged: true}, ""},
		{"streams without merged", fanoutConfig{streams: 10}, "need --merged"},
		{"per-subscriber without merged", fanoutConfig{perSub: 2}, "need --merged"},
		{"more per subscriber than streams", fanoutConfig{merged: true, streams: 3, perSub: 4}, "--per-subscriber"},
		{"over the server's limit", fanoutConfig{merged: true, streams: 100, perSub: 65}, "at most 64"},
		{"negative", fanoutConfig{merged: true, streams: -1}, "--streams"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := newLayout(&sselogAdapter{}, "b", &tc.f)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				want := 1
				if tc.f.merged {
					want = DefaultMergedStreams
				}
				if len(l.names) != want || len(l.paths) != want {
					t.Errorf("%d streams, want %d", len(l.names), want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestParseEnvelope(t *testing.T) {
	tests := []struct {
		name, data      string
		stream, payload string
		ok              bool
	}{
		{"event", `{"stream":"b.7","data":{"t":1,"n":2}}`, "b.7", `{"t":1,"n":2}`, true},
		{"not an envelope", `{"t":1,"n":2}`, "", "", false},
		{"no data", `{"stream":"b.7"}`, "", "", false},
		{"empty name", `{"stream":"","data":{}}`, "", "", false},
		{"cut off", `{"stream":"b.7","data":{"t":1`, "", "", false},
		{"members the other way round", `{"data":{"n":2},"stream":"b.7"}`, "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stream, payload, ok := parseEnvelope([]byte(tc.data))
			if ok != tc.ok || string(stream) != tc.stream || string(payload) != tc.payload {
				t.Fatalf("parseEnvelope(%s) = %q, %q, %t; want %q, %q, %t", tc.data, stream, payload, ok, tc.stream, tc.payload, tc.ok)
			}
		})
	}
}

func TestAppendStrided(t *testing.T) {
	body := newEventBuilder(0).appendStrided(nil, 4, 5, 3, 10)
	var events []struct {
		Data struct{ T, N int64 } `json:"data"`
	}
	if err := json.Unmarshal(body, &events); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	var got []int64
	for _, e := range events {
		got = append(got, e.Data.N)
	}
	if want := []int64{3, 13, 23, 33}; !slices.Equal(got, want) {
		t.Errorf("numbers %v, want %v", got, want)
	}
}

// followerCounts are a follower's tallies.
type followerCounts struct {
	received, gaps, duplicates, disordered, malformed, foreign int64
}

// The follower's checks, fed a merged feed by hand: each mistake a server
// could make is counted where it belongs. The layout is 4 streams, b.0 to
// b.3, and the follower follows b.1 and b.3 (events 1, 5, 9, ... and 3, 7,
// 11, ...).
func TestFollowerChecks(t *testing.T) {
	ev := func(id, stream string, n int64) string {
		return fmt.Sprintf("id: %s\nevent: bench\ndata: {\"stream\":%q,\"data\":{\"t\":1,\"n\":%d}}\n\n", id, stream, n)
	}
	tests := []struct {
		name string
		feed []string
		want followerCounts
		last [2]int64 // the last numbers of b.1 and b.3
	}{
		{"in order", []string{ev("A1", "b.1", 1), ev("A2", "b.3", 3), ev("A3", "b.1", 5)}, followerCounts{received: 3}, [2]int64{5, 3}},
		{"a gap in one stream", []string{ev("A1", "b.1", 1), ev("A2", "b.1", 9)}, followerCounts{received: 2, gaps: 1}, [2]int64{9, -1}},
		{"a duplicate", []string{ev("A1", "b.3", 3), ev("A2", "b.3", 3)}, followerCounts{received: 1, duplicates: 1}, [2]int64{-3, 3}},
		{"ids going back", []string{ev("A2", "b.1", 1), ev("A1", "b.3", 3)}, followerCounts{received: 2, disordered: 1}, [2]int64{1, 3}},
		{"a stream not followed", []string{ev("A1", "b.2", 2)}, followerCounts{foreign: 1}, [2]int64{-3, -1}},
		{"the envelope names another stream", []string{ev("A1", "b.3", 1)}, followerCounts{malformed: 1}, [2]int64{-3, -1}},
		{"no envelope", []string{"id: A1\nevent: bench\ndata: {\"t\":1,\"n\":1}\n\n"}, followerCounts{malformed: 1}, [2]int64{-3, -1}},
		{"a reset", []string{"event: reset\ndata: {\"stream\":\"b.1\",\"reason\":\"deleted\"}\n\n"}, followerCounts{malformed: 1}, [2]int64{-3, -1}},
	}
	l := &layout{merged: true, ordered: true, names: []string{"b.0", "b.1", "b.2", "b.3"}, perSub: 2}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s follower
			s.init([]int64{1, 3}, l.stride())
			c := &sseConn{p: newParser(strings.NewReader(strings.Join(tc.feed, "")), 512)}
			s.follow(&group{}, c, l)
			if !errors.Is(s.err, io.EOF) {
				t.Fatalf("follow ended with %v, want the end of the feed", s.err)
			}
			got := followerCounts{s.received, s.gaps, s.duplicates, s.disordered, s.malformed, s.foreign}
			if got != tc.want {
				t.Errorf("counts %+v, want %+v", got, tc.want)
			}
			if last := [2]int64{s.lasts[0].Load(), s.lasts[1].Load()}; last != tc.last {
				t.Errorf("last numbers %v, want %v", last, tc.last)
			}
		})
	}
}
