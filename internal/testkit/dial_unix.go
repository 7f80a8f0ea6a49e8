//go:build unix

package testkit

import (
	"errors"
	"net"
	"syscall"
)

// SmallBufferDialer sets a small, fixed receive buffer before connecting,
// so that the kernel absorbs little for a client that stops reading (Linux
// would otherwise let the buffer grow to tens of MiB): a server writing to
// it blocks soon.
func SmallBufferDialer() *net.Dialer {
	return &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return errors.Join(err, serr)
	}}
}
