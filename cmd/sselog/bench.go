package main

import (
	"context"
	"io"

	"github.com/sselog/sselog/cmd/sselog/internal/bench"
)

// runBench is `sselog bench`: the load tool lives in its own package, so that
// the server's command stays thin.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return bench.Run(ctx, args, stdout, stderr)
}
