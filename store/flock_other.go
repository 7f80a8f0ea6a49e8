//go:build !unix || solaris || aix

package store

import "os"

// haveFlock reports that there is no flock here (syscall has none for
// these systems): a temporary file that exists is refused instead of taken
// over, and an operator removes a killed writer's leftover by hand.
const haveFlock = false

// tryLock does nothing: without flock, openTemp relies on O_EXCL.
func tryLock(f *os.File, exclusive bool) (bool, error) { return true, nil }

// openNoFollow is not needed without flock: openTemp uses O_EXCL, which
// refuses an existing path, links included.
const openNoFollow = 0

// linkCount is not used without flock.
func linkCount(os.FileInfo) uint64 { return 1 }
