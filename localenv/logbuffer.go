package localenv

import (
	"bytes"
	"sync"
)

// LogBuffer lets a test read what the code under test logged while that
// code still runs: the logger writes from the code's goroutines, the test
// reads from its own. The zero value is ready to use.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p; it is what the logger's handler calls.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
