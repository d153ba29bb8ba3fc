package localenv

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
)

// Ports are chosen below the kernel's ephemeral range (32768-60999 on
// Linux). A port the kernel hands out for ":0" is released before the
// process that needs it binds it, and in that gap any outgoing connection
// on the machine can take it as its local port (seen in CI: "bind: address
// already in use"). Outgoing connections never take a port below the
// ephemeral range, so only another listener could, and the random choice
// over 12,000 ports makes that unlikely even with test runs side by side.
const (
	lowPort  = 20000
	highPort = 32000
)

var (
	handedOutMu sync.Mutex
	handedOut   = map[int]bool{} // never hand out the same port twice in one process
)

// FreePort returns a TCP port on 127.0.0.1 that nothing listens on. The
// port is not held, so a process started right after can bind it.
func FreePort() (int, error) {
	handedOutMu.Lock()
	defer handedOutMu.Unlock()
	var lastErr error
	for range 500 {
		port := lowPort + rand.IntN(highPort-lowPort)
		if handedOut[port] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			lastErr = err
			continue
		}
		l.Close()
		handedOut[port] = true
		return port, nil
	}
	return 0, fmt.Errorf("localenv: no free port in %d-%d: %v", lowPort, highPort, lastErr)
}

// FreePorts returns n distinct free ports.
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		ports = append(ports, port)
	}
	return ports, nil
}
