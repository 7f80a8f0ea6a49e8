//go:build !unix

package testkit

import "net"

// SmallBufferDialer is a plain dialer where socket options are not set the
// unix way; tests then only write more before the buffers fill.
func SmallBufferDialer() *net.Dialer { return &net.Dialer{} }
