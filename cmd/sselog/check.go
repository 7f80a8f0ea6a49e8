package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/sselog/sselog/store"
)

// check is `sselog check`: bbolt's consistency check, a read of every
// stored event and a comparison of each stream's counters with its events,
// for a stopped server's file or a backup.
func check(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var db string
	flags := flag.NewFlagSet("sselog check", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.StringVar(&db, "db", filepath.Join("data", "sselog.db"), "database file of a stopped server, or a backup")
	flags.Usage = func() {
		fmt.Fprintf(stderr, `Usage: sselog check [--db FILE]

Checks every page of the database (bbolt's consistency check), decodes
every stored event, and compares each stream's counters (events, bytes,
deletion, low-water mark) and the newest issued id with the events stored,
without changing the file. Any disagreement is damage: the exit status is
then non-zero. The server checks only the file's header, root, freelist and
buckets when it starts; run this after a crash of the machine, a disk error,
or on a backup before relying on it. --db can also be set as SSELOG_DB;
flags win.

`)
		flags.PrintDefaults()
	}
	if err := parseAdmin(flags, args, "SSELOG_DB"); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := store.Check(db); err != nil {
		return lockedHint(err, "stop the server first, or check a copy made with sselog backup")
	}
	report, err := store.Inspect(db)
	if err != nil {
		return err
	}
	var events uint64
	for _, s := range report.Streams {
		events += s.Count
	}
	fmt.Fprintf(stdout, "%s: ok, %d streams, %d events, last id %s\n", db, len(report.Streams), events, report.LastID)
	return nil
}
