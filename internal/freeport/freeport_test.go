package freeport

import (
	"net"
	"strconv"
	"testing"
)

func TestPickIsBindable(t *testing.T) {
	port, err := Pick()
	if err != nil {
		t.Fatal(err)
	}
	listener, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatalf("port %d from Pick cannot be bound: %v", port, err)
	}
	_ = listener.Close()
}
