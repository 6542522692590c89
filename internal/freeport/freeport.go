// Package freeport picks free loopback ports for the servers that tests, the
// chaos runner and the development mode start.
package freeport

import (
	"net"

	"github.com/cockroachdb/errors"
)

// Pick asks the kernel for a free port on 127.0.0.1. Another process could
// take it before the caller's server binds it; that server's start then
// reports the bind error.
func Pick() (int, error) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, errors.Wrap(err, "find a free port: listen on 127.0.0.1:0")
	}
	defer listener.Close()
	return listener.Addr().(*net.TCPAddr).Port, nil
}
