// Package testkit holds the helpers the tests of store, stream, retention,
// httpapi and cmd/sselog share, written once: a real bbolt log in
// t.TempDir, a real HTTP server on a loopback port, an SSE reader that
// follows the WHATWG parsing rules, and WaitFor for conditions no channel
// announces.
//
// It lives in the module's top-level internal/ because the tests of four
// packages import it (an internal/ below one of them would hide it from the
// others), and because nothing outside this module may build on it: it is
// test code, with no compatibility promise.
//
// It imports store (for Open), so store's own in-package tests (package
// store, not store_test) cannot use it and keep their small local helpers.
// It imports neither httpapi nor cmd: httpapi's in-package tests may use it,
// and each test package builds its own server from Serve.
//
// Every helper registers its cleanup with the test, fails the test itself
// where it says so, and is for the test's own goroutine only unless its doc
// says otherwise (SSEReader returns its errors and may run anywhere).
package testkit

import "time"

// Wait bounds every wait a helper makes. It is generous because the race
// detector on a small, loaded machine is slow; a passing test never waits
// it out.
const Wait = 20 * time.Second
