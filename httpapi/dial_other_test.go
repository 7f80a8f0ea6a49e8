//go:build !unix

package httpapi_test

import "net"

// smallBufferDialer is a plain dialer where socket options are not set the
// unix way; the test then only publishes more before the buffers fill.
func smallBufferDialer() *net.Dialer { return &net.Dialer{} }
