// Package freeport picks TCP ports on 127.0.0.1 for processes a test or the
// local cluster is about to start.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// Pick returns a port nothing listens on, below the kernel's ephemeral
// range when there is room: a port the kernel hands out for ":0" is also
// one it hands out as the source port of outgoing connections, so between
// this probe and the process's own listen a client socket can take it
// (seen in CI: a node exiting with "address already in use" while the other
// test packages ran). Random picks make two concurrent callers unlikely to
// collide; the probe listen makes a port in use impossible at the moment
// of the pick.
func Pick() (int, error) {
	if low := ephemeralLow(); low > 11000 {
		for range 64 {
			p := 10000 + rand.IntN(low-10000)
			if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p)); err == nil {
				l.Close()
				return p, nil
			}
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ephemeralLow is the first port of the kernel's ephemeral range (0 when it
// cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	low, _ := strconv.Atoi(f[0])
	return low
}
