//go:build unix && !solaris && !aix

package store

import (
	"errors"
	"os"
	"syscall"
)

// haveFlock reports that tryLock takes real locks here, so that a temporary
// file left by a killed writer can be told from one a live writer holds.
const haveFlock = true

// tryLock takes flock's lock on f, exclusive or shared, without waiting. It
// reports false when another open file description holds a conflicting
// lock: another process, or another open of the file in this one (bbolt's,
// say). The lock belongs to f's open file description and ends when f is
// closed or its process dies, however it dies.
func tryLock(f *os.File, exclusive bool) (bool, error) {
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, syscall.EWOULDBLOCK):
			return false, nil
		case errors.Is(err, syscall.EINTR):
			continue
		}
		return false, err
	}
}

// openNoFollow makes openTemp refuse a temporary path that is a symbolic
// link, rather than empty the file it points to.
const openNoFollow = syscall.O_NOFOLLOW

// linkCount is how many names the file has.
func linkCount(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Nlink)
	}
	return 1
}
