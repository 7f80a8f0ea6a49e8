// Command sselog is a durable event log served over HTTP with Server-Sent
// Events replay. See the README for the API and guarantees.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(runMain(os.Args[1:], os.Stdout, os.Stderr))
}

// runMain is main without the exit, so that the tests' child processes run
// exactly what main runs: run under a context that SIGINT and SIGTERM end,
// and an exit status.
func runMain(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, args, stdout, stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "sselog:", err)
		}
		return 2
	}
	return 0
}

const usage = `sselog: a durable event log with Server-Sent Events replay

Usage:
  sselog serve [flags]     run the server (sselog serve -h lists the flags)
  sselog backup [flags]    save a running server's database to a file
  sselog compact [flags]   shrink a stopped server's database file
  sselog inspect [flags]   describe a stopped server's database file
  sselog check [flags]     check every page of a stopped server's database file
  sselog publish [flags]   publish newline-delimited JSON from stdin to a stream
  sselog tail [flags]      print a stream's events as JSON lines, following it
  sselog bench <workload>  drive a running server and measure it

Each command takes -h for its flags.
`

// run is the whole program behind main, so tests can call it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdout, stderr)
	case "backup":
		return backup(ctx, args[1:], stdout, stderr)
	case "compact":
		return compact(ctx, args[1:], stdout, stderr)
	case "inspect":
		return inspect(ctx, args[1:], stdout, stderr)
	case "check":
		return check(ctx, args[1:], stdout, stderr)
	case "bench":
		return runBench(ctx, args[1:], stdout, stderr)
	case "publish":
		return publishCommand(ctx, args[1:], os.Stdin, stdout, stderr)
	case "tail":
		return tailCommand(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}
