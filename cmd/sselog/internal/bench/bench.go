// Package bench is `sselog bench`: workloads that drive a running sselog
// server over HTTP and report what they measured, as a small table or as
// one JSON object per run. With --target they drive another kind of
// server the same way (a Mercure hub), each kind spoken to through an
// adapter, so that the figures of the two can be set side by side.
//
// The tool shares the machine with the server, so it is built not to be
// the bottleneck: subscribers are plain TCP connections with one goroutine
// each, read with ReadSlice and parsed by hand without allocating per
// event, and latencies go into per-goroutine fixed-bucket histograms that
// are merged at the end.
package bench

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Defaults of the common flags.
const (
	DefaultURL     = "http://127.0.0.1:8080"
	DefaultTimeout = 60 * time.Second
	DefaultSize    = 100
)

// ErrCheck is returned when a run saw what must not happen: failed
// requests, gaps, duplicates, missing events, ids out of order, broken
// connections. The figures are still printed.
var ErrCheck = errors.New("bench: checks failed")

// errNoSpawn is returned for --spawn with a target this executable cannot
// start.
var errNoSpawn = errors.New("--spawn starts sselog only: start the server yourself (bench/peers.sh does) and give --url, and --pid for its CPU time and memory")

// errUnsupported is wrapped by the refusals of what a target has no
// counterpart for.
var errUnsupported = errors.New("no counterpart on this target")

const usage = `Usage: sselog bench <workload> [flags]

Workloads:
  publish   concurrent publishers: events/s and acknowledgement latency
  fanout    paced publishing to many subscribers: deliveries/s, publish-to-receive latency, gaps
            (--merged: events spread over many streams, each subscriber on several, merged)
  replay    publish events, then replay them all from the start: events/s
  idle      idle subscribers: the server's resident memory per subscriber

Each workload takes -h for its flags. --spawn starts a server of this
executable on a free port with a temporary database, and stops it at the
end; SSELOG_* environment variables reach it.

--target mercure drives a Mercure hub at --url instead (with
--mercure-jwt-key): publish, fanout, idle and replay, with the same
payload and the same checks. Batch publishes, Idempotency-Key and
fanout --merged have no Mercure counterpart and are refused.
bench/peers.sh builds Mercure and runs both side by side.
`

// Run is `sselog bench`: args starts with the workload's name.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	var w workload
	var fs *flag.FlagSet
	var c *common
	switch args[0] {
	case "publish":
		fs, c, w = publishFlags(stderr)
	case "fanout":
		fs, c, w = fanoutFlags(stderr)
	case "replay":
		fs, c, w = replayFlags(stderr)
	case "idle":
		fs, c, w = idleFlags(stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("bench: unknown workload %q", args[0])
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench %s: unexpected argument %q (flags only)", args[0], fs.Arg(0))
	}
	if c.timeout <= 0 {
		return errors.New("--timeout must be positive")
	}
	e, err := c.start(ctx, args[0])
	if err != nil {
		return err
	}
	rep, err := w(ctx, e)
	if stopErr := e.stop(); stopErr != nil && err == nil {
		err = stopErr
	}
	if rep != nil {
		if perr := writeReport(stdout, rep, c.json); perr != nil && err == nil {
			err = perr
		}
	}
	return err
}

// common holds the flags every workload takes.
type common struct {
	target   string
	adapters []adapter // one of each kind, holding its own flags
	url      string
	stream   string
	json     bool
	spawn    bool
	pid      int
	timeout  time.Duration
}

// workload runs one measurement against e. It returns its report even when
// it also returns an error, as long as there are figures to show.
type workload func(ctx context.Context, e *env) (report, error)

func newFlagSet(name string, stderr io.Writer, help string) (*flag.FlagSet, *common) {
	c := &common{adapters: newAdapters()}
	fs := flag.NewFlagSet("sselog bench "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.target, "target", c.adapters[0].name(), "the kind of server at --url: "+adapterNames(c.adapters))
	for _, a := range c.adapters {
		a.addFlags(fs)
	}
	fs.StringVar(&c.url, "url", DefaultURL, "server base URL (ignored with --spawn)")
	fs.StringVar(&c.stream, "stream", "", "stream to use, or with fanout --merged the prefix of the streams' names (default: a new bench-<random> stream per run)")
	fs.BoolVar(&c.json, "json", false, "print one JSON object instead of a table")
	fs.BoolVar(&c.spawn, "spawn", false, "start a server (this executable, serve on a free port, temporary database) and stop it at the end")
	fs.IntVar(&c.pid, "pid", 0, "process id of the server at --url, to read its CPU time and memory from /proc")
	fs.DurationVar(&c.timeout, "timeout", DefaultTimeout, "deadline for each wait: one publish, subscribers connecting, the last delivery, the replay, memory settling")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: sselog bench %s [flags]\n\n%s\n\nFlags:\n", name, help)
		fs.PrintDefaults()
	}
	return fs, c
}

// env is what a workload runs against.
type env struct {
	t       *target // its adapter is e.t.a, its capabilities e.caps
	caps    caps
	pid     int // the server's process id, 0 when unknown
	spawned *spawned
	info    runInfo
	timeout time.Duration
}

func (c *common) start(ctx context.Context, workload string) (*env, error) {
	stream := c.stream
	if stream == "" {
		stream = "bench-" + strings.ToLower(rand.Text()[:12])
	}
	a, err := pickAdapter(c.adapters, c.target)
	if err != nil {
		return nil, err
	}
	e := &env{pid: c.pid, timeout: c.timeout, caps: a.caps()}
	base := c.url
	if c.spawn {
		if !e.caps.spawn {
			return nil, fmt.Errorf("--target %s: %w", a.name(), errNoSpawn)
		}
		if c.pid != 0 {
			return nil, errors.New("--spawn and --pid exclude each other")
		}
		s, err := spawnServer(ctx, nil)
		if err != nil {
			return nil, err
		}
		e.spawned, e.pid, base = s, s.pid(), s.url
	}
	t, err := newTarget(a, base, stream)
	if err == nil {
		err = t.health(ctx)
	}
	if err != nil {
		if e.spawned != nil {
			e.spawned.stop()
		}
		return nil, err
	}
	e.t = t
	e.info = runInfo{Workload: workload, Target: a.name(), URL: t.base, Stream: stream, Spawned: c.spawn, ServerPID: e.pid}
	return e, nil
}

func (e *env) stop() error {
	e.t.close()
	if e.spawned != nil {
		return e.spawned.stop()
	}
	return nil
}

// runInfo opens every report.
type runInfo struct {
	Workload  string  `json:"workload"`
	Target    string  `json:"target"`
	URL       string  `json:"url"`
	Stream    string  `json:"stream"`
	Spawned   bool    `json:"spawned"`
	ServerPID int     `json:"server_pid,omitempty"`
	ClientCPU float64 `json:"client_cpu_s"`
	// ServerCPU is known only with --spawn or --pid; with an in-process
	// server (the tests) both figures count both sides.
	ServerCPU float64 `json:"server_cpu_s,omitempty"`
}

// cpuMeter measures the CPU time the tool and the server use over a phase.
type cpuMeter struct {
	pid          int
	client, serv time.Duration
	servOK       bool
}

func startCPU(pid int) *cpuMeter {
	m := &cpuMeter{pid: pid, client: selfCPU()}
	if pid != 0 {
		d, err := readCPU(pid)
		m.serv, m.servOK = d, err == nil
	}
	return m
}

// stop writes the CPU time used since start into info.
func (m *cpuMeter) stop(info *runInfo) {
	info.ClientCPU = (selfCPU() - m.client).Seconds()
	if m.servOK {
		if d, err := readCPU(m.pid); err == nil {
			info.ServerCPU = (d - m.serv).Seconds()
		}
	}
}

// report is a workload's result: it marshals to JSON and lists its rows for
// the table.
type report interface {
	base() *runInfo
	rows() []row
}

type row struct{ name, value string }

func writeReport(w io.Writer, r report, asJSON bool) error {
	if asJSON {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	info := r.base()
	rows := []row{{"workload", info.Workload}, {"server", info.Target + " at " + info.URL}, {"stream", info.Stream}}
	rows = append(rows, r.rows()...)
	rows = append(rows, row{"client cpu", fmt.Sprintf("%.2f s", info.ClientCPU)})
	if info.ServerPID != 0 {
		rows = append(rows, row{"server cpu", fmt.Sprintf("%.2f s (pid %d)", info.ServerCPU, info.ServerPID)})
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r.name, r.value)
	}
	return tw.Flush()
}

// Formatting helpers for rows.

func fmtCount(n int64) string {
	s := itoa(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func fmtRate(perSec float64, unit string) string {
	return fmtCount(int64(perSec+0.5)) + " " + unit + "/s"
}

// fmtOrder is the row of ids out of order: their count, or why there is
// none.
func fmtOrder(n int64, checked bool, target string) string {
	if !checked {
		return "not checked: " + target + "'s ids carry no order"
	}
	return fmtCount(n)
}

func fmtLatency(l latency) []row {
	return []row{
		{"latency p50", fmt.Sprintf("%.3f ms", l.P50)},
		{"latency p99", fmt.Sprintf("%.3f ms", l.P99)},
		{"latency max", fmt.Sprintf("%.3f ms", l.Max)},
	}
}
