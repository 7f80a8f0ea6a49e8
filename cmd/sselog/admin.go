package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sselog/sselog/store"
)

// The operator commands: backup talks to a running server; compact and
// inspect open a stopped server's file, and fail fast with store.ErrLocked
// while a server holds it.

// backupHeaderTimeout bounds the wait for the backup's status line. The
// server answers as soon as its read transaction begins; the body of a
// large database then takes as long as it takes, until the context ends.
const backupHeaderTimeout = 30 * time.Second

// adminEnv lets the environment set the flags an operator shares between
// serve and these commands (the database, the server's URL and token), but
// never a one-off such as --out or --force.
func adminEnv(keys ...string) func(string) (string, bool) {
	return func(key string) (string, bool) {
		if !slices.Contains(keys, key) {
			return "", false
		}
		return os.LookupEnv(key)
	}
}

// parseAdmin parses a command's flags, with the environment variables keys,
// and refuses stray arguments, which would end flag parsing silently.
func parseAdmin(flags *flag.FlagSet, args []string, keys ...string) error {
	if err := parseWithEnv(flags, args, adminEnv(keys...)); err != nil {
		return err
	}
	if flags.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (flags only; see %s -h)", flags.Arg(0), flags.Name())
	}
	return nil
}

type backupConfig struct {
	url   string
	out   string
	token string
	force bool
}

func backupFlags(stderr io.Writer) (*flag.FlagSet, *backupConfig) {
	c := &backupConfig{}
	flags := flag.NewFlagSet("sselog backup", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.StringVar(&c.url, "url", "http://127.0.0.1:8080", "base URL of the running server")
	flags.StringVar(&c.out, "out", "", "file to save the backup to (required)")
	flags.StringVar(&c.token, "token", "", "bearer token sent in the Authorization header, if the server wants one")
	flags.BoolVar(&c.force, "force", false, "replace --out if it exists")
	flags.Usage = func() {
		fmt.Fprintf(stderr, `Usage: sselog backup --out FILE [flags]

Saves a consistent copy of a running server's database (GET /v1/backup)
while publishers go on. The copy is written to FILE.tmp and checked before
it is moved into place. A backup to the same FILE that is still running
makes this one fail; what a killed one left in FILE.tmp is replaced.
--url and --token can also be set as SSELOG_URL and SSELOG_TOKEN; flags win.

`)
		flags.PrintDefaults()
	}
	return flags, c
}

// backup is `sselog backup`: it downloads the server's copy beside --out,
// checks its length and that it opens as an sselog database, syncs it, and
// only then moves it to --out. Whatever fails, or the context ending, leaves
// no file behind.
func backup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags, c := backupFlags(stderr)
	if err := parseAdmin(flags, args, "SSELOG_URL", "SSELOG_TOKEN"); err != nil {
		return err
	}
	if c.out == "" {
		return errors.New("backup: --out is required")
	}
	base, err := url.Parse(c.url)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return fmt.Errorf("backup: --url %q: want the server's base URL, such as http://127.0.0.1:8080", c.url)
	}
	if !c.force {
		if _, err := os.Lstat(c.out); err == nil {
			return fmt.Errorf("backup: %s already exists (--force replaces it)", c.out)
		}
	}

	start := time.Now()
	// The temporary file first: a backup to the same --out that is still
	// running is refused before the server is asked for anything.
	tmp, err := store.CreateTemp(c.out + ".tmp")
	if errors.Is(err, store.ErrBusy) {
		return fmt.Errorf("backup: %w (another backup to %s is running)", err, c.out)
	}
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	report, size, err := saveBackup(ctx, tmp, strings.TrimSuffix(c.url, "/")+"/v1/backup", c.token, c.out, c.force)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	var events uint64
	for _, s := range report.Streams {
		events += s.Count
	}
	fmt.Fprintf(stdout, "saved %s: %d bytes (%s) in %v, %s, %s, last id %s\n",
		c.out, size, sizeText(size), time.Since(start).Round(time.Millisecond),
		plural(len(report.Streams), "stream"), plural(int(events), "event"), idText(report.LastID, true))
	return nil
}

// requestBackup starts the download and returns the body and its announced
// length, or the server's own explanation of a refusal.
func requestBackup(ctx context.Context, u, token string) (io.ReadCloser, int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// A transparently decompressed body has no length to check.
	tr.DisableCompression = true
	// One request: no idle connection should outlive it.
	tr.DisableKeepAlives = true
	tr.ResponseHeaderTimeout = backupHeaderTimeout
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, 0, fmt.Errorf("GET %s: %s: %s", u, resp.Status, serverError(resp.Body))
	}
	if resp.ContentLength < 0 {
		resp.Body.Close()
		return nil, 0, fmt.Errorf("GET %s: the answer has no Content-Length, so a copy cut short could not be told from a whole one", u)
	}
	return resp.Body, resp.ContentLength, nil
}

// serverError is the message of the server's JSON error body, or the start
// of whatever else was sent instead (a proxy's page, say).
func serverError(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, 4<<10))
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return e.Error
	}
	if s := strings.TrimSpace(string(b)); s != "" {
		return fmt.Sprintf("%.200q", s)
	}
	return "no explanation given"
}

// saveBackup downloads the server's copy into tmp, which must be exactly the
// announced size, checks it, and moves it to out. It returns what the copy
// holds and its size. tmp is removed, or moved to out, before it is
// closed: its lock (store.CreateTemp) tells a later backup to the same out
// that this one is still running, and once this process is gone, however
// it ended, that backup takes the file over.
func saveBackup(ctx context.Context, tmp *store.TempFile, u, token, out string, force bool) (store.Report, int64, error) {
	owned := true // tmp is locked and at its name: remove it on failure
	defer func() {
		if owned {
			tmp.Remove()
		} else {
			tmp.Close() // moved, and closed; or taken over by another backup
		}
	}()
	body, size, err := requestBackup(ctx, u, token)
	if err != nil {
		return store.Report{}, 0, err
	}
	defer body.Close()
	n, err := io.Copy(tmp, body)
	if ctx.Err() != nil {
		return store.Report{}, size, fmt.Errorf("interrupted after %d of %d bytes: %w", n, size, ctx.Err())
	}
	if err != nil {
		return store.Report{}, size, fmt.Errorf("download cut short after %d of %d bytes: %w", n, size, err)
	}
	if n != size {
		return store.Report{}, size, fmt.Errorf("download cut short: %d of %d bytes", n, size)
	}
	if err := tmp.Sync(); err != nil {
		return store.Report{}, size, err
	}
	// Inspect opens the copy with a shared lock of its own, which our
	// exclusive one would block; a shared one still refuses a new backup.
	if err := tmp.Share(); err != nil {
		owned = false // another backup has the file now
		return store.Report{}, size, err
	}
	report, err := store.Inspect(tmp.Name())
	if err != nil {
		return store.Report{}, size, fmt.Errorf("the copy does not open as an sselog database: %w", err)
	}
	// An interrupt that came while the copy was checked still means stop.
	if err := ctx.Err(); err != nil {
		return store.Report{}, size, err
	}
	// Without --force, a hard link refuses a file created at out during
	// the download rather than replace it.
	err = tmp.Move(out, force)
	if errors.Is(err, fs.ErrExist) {
		return store.Report{}, size, fmt.Errorf("%s appeared during the download (--force replaces it)", out)
	}
	if err != nil {
		return store.Report{}, size, err
	}
	owned = false
	if err := store.SyncDir(filepath.Dir(out)); err != nil {
		return store.Report{}, size, err
	}
	return report, size, nil
}

// lockedHint adds advice to store.ErrLocked, keeping it checkable.
func lockedHint(err error, advice string) error {
	if errors.Is(err, store.ErrLocked) {
		return fmt.Errorf("%w: %s", err, advice)
	}
	return err
}

// compact is `sselog compact`: store.Compact, with its sizes reported.
func compact(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var db, out string
	flags := flag.NewFlagSet("sselog compact", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.StringVar(&db, "db", filepath.Join("data", "sselog.db"), "database file of a stopped server")
	flags.StringVar(&out, "out", "", "write the compacted copy here and keep --db as it is (default: replace --db)")
	flags.Usage = func() {
		fmt.Fprintf(stderr, `Usage: sselog compact [--db FILE] [--out FILE]

Rewrites a stopped server's database without its free pages: bbolt reuses
the space that trims and deletions free, but never gives it back to the file
system. The copy is written beside its destination (--out, or --db in
place) as DEST.compacting and moved there once synced: an interrupted run
leaves the destination as it was, and the next run replaces its leftover.
A file saved by sselog backup holds the free pages too; compact it
with --out to keep a small copy. --db can also be set as SSELOG_DB; flags win.

`)
		flags.PrintDefaults()
	}
	if err := parseAdmin(flags, args, "SSELOG_DB"); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	dst := out
	if dst == "" {
		dst = db
	}
	// Not interruptible: the original stays whole until the final rename.
	res, err := store.Compact(dst, db)
	if err != nil {
		return lockedHint(err, "stop the server first")
	}
	where := "in place"
	if filepath.Clean(dst) != filepath.Clean(db) {
		where = "into " + dst + " (the original is unchanged)"
	}
	change := "the same size"
	if res.Before > 0 && res.After != res.Before {
		pct := 100 * float64(res.Before-res.After) / float64(res.Before)
		change = fmt.Sprintf("%.1f%% smaller", pct)
		if pct < 0 {
			// A file with little free space can come out larger: bbolt
			// grows a file in steps of up to 16 MiB.
			change = fmt.Sprintf("%.1f%% larger", -pct)
		}
	}
	fmt.Fprintf(stdout, "compacted %s %s: %d bytes (%s) -> %d bytes (%s), %s\n",
		db, where, res.Before, sizeText(res.Before), res.After, sizeText(res.After), change)
	return nil
}

// inspect is `sselog inspect`: store.Inspect, as tables or JSON.
func inspect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var db string
	var asJSON bool
	flags := flag.NewFlagSet("sselog inspect", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.StringVar(&db, "db", filepath.Join("data", "sselog.db"), "database file of a stopped server")
	flags.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	flags.Usage = func() {
		fmt.Fprintf(stderr, `Usage: sselog inspect [--db FILE] [--json]

Describes a stopped server's database without changing it: size and free
pages, the newest id, and each stream's counts, id range, low-water mark and
retention override. --db can also be set as SSELOG_DB; flags win.

`)
		flags.PrintDefaults()
	}
	if err := parseAdmin(flags, args, "SSELOG_DB"); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	r, err := store.Inspect(db)
	if err != nil {
		return lockedHint(err, "stop the server first, or inspect a copy made with sselog backup")
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	return writeReport(stdout, r)
}

// writeReport prints r as inspect's tables.
func writeReport(w io.Writer, r store.Report) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	pageBytes := func(n int64) string { return sizeText(n * int64(r.PageSize)) }
	fmt.Fprintf(tw, "database\t%s\n", r.Path)
	fmt.Fprintf(tw, "file size\t%d bytes (%s)\n", r.FileSize, sizeText(r.FileSize))
	fmt.Fprintf(tw, "page size\t%d bytes\n", r.PageSize)
	fmt.Fprintf(tw, "pages\t%d (%s)\n", r.Pages, pageBytes(r.Pages))
	fmt.Fprintf(tw, "free pages\t%d (%s)\n", r.FreePages, pageBytes(int64(r.FreePages)))
	fmt.Fprintf(tw, "last id\t%s\n", idText(r.LastID, true))
	if err := tw.Flush(); err != nil {
		return err
	}

	if len(r.Streams) == 0 {
		fmt.Fprintln(w, "\nno streams")
	} else {
		fmt.Fprintln(tw, "\nSTREAM\tEVENTS\tBYTES\tFIRST ID\tLAST ID\tLOW WATER\tRETENTION")
		for _, s := range r.Streams {
			p, ok := r.Policies[s.Name]
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\n", s.Name, s.Count, s.Bytes,
				idText(s.FirstID, false), idText(s.LastID, false), idText(s.LowWater, false), policyText(p, ok))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(r.Deleted) > 0 {
		fmt.Fprintln(tw, "\nDELETED STREAM\tLOW WATER")
		for _, s := range r.Deleted {
			fmt.Fprintf(tw, "%s\t%s\n", s.Name, idText(s.LowWater, false))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	// An operator may set a policy before the first publish.
	var ahead []string
	for name := range r.Policies {
		if !slices.ContainsFunc(r.Streams, func(s store.StreamInfo) bool { return s.Name == name }) {
			ahead = append(ahead, name)
		}
	}
	if len(ahead) > 0 {
		slices.Sort(ahead)
		fmt.Fprintln(tw, "\nNOT YET PUBLISHED TO\tRETENTION")
		for _, name := range ahead {
			fmt.Fprintf(tw, "%s\t%s\n", name, policyText(r.Policies[name], true))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	// Worth a hint when a tenth of the pages, and at least a MiB, are free.
	if free := int64(r.FreePages) * int64(r.PageSize); free >= 1<<20 && int64(r.FreePages) >= r.Pages/10 {
		fmt.Fprintf(w, "\nsselog compact --db %s (with the server stopped) gives the %s of free pages back to the file system.\n", r.Path, sizeText(free))
	}
	return nil
}

// idText shows an id, "-" for the zero id; withTime adds its timestamp.
func idText(id store.ID, withTime bool) string {
	if id.IsZero() {
		return "-"
	}
	if withTime {
		return id.String() + " (" + id.Time().UTC().Format(time.RFC3339Nano) + ")"
	}
	return id.String()
}

// policyText shows a retention override's fields; unset fields inherit the
// server's defaults.
func policyText(p store.Policy, ok bool) string {
	if !ok {
		return "-"
	}
	var parts []string
	add := func(name string, unlimited bool, v string) {
		if unlimited {
			v = "unlimited"
		}
		parts = append(parts, name+"="+v)
	}
	if p.MaxAge != nil {
		add("max_age", *p.MaxAge == 0, p.MaxAge.String())
	}
	if p.MaxEvents != nil {
		add("max_events", *p.MaxEvents == 0, fmt.Sprint(*p.MaxEvents))
	}
	if p.MaxBytes != nil {
		add("max_bytes", *p.MaxBytes == 0, fmt.Sprint(*p.MaxBytes))
	}
	if len(parts) == 0 {
		return "(override with no fields: defaults apply)"
	}
	return strings.Join(parts, " ")
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// sizeText is n bytes in the largest binary unit below it, to one decimal.
func sizeText(n int64) string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.mult {
			return fmt.Sprintf("%.1f %s", float64(n)/float64(u.mult), u.suffix)
		}
	}
	return fmt.Sprintf("%d B", n)
}
