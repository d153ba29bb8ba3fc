package serve

import "time"

// SetClockForTest makes now the clock of the server's node tracker
// (connections, departures, sync states); call it before Serve.
func (s *Server) SetClockForTest(now func() time.Time) { s.tracker.now = now }

// TrackedForTest is the number of nodes the tracker holds, after it
// forgot those gone for NodeForgetAfter.
func (s *Server) TrackedForTest() int { return s.tracker.len() }

// ForgottenForTest is the number of forgotten nodes whose snapshots the
// server has not dropped yet.
func (s *Server) ForgottenForTest() int {
	s.tracker.mu.Lock()
	defer s.tracker.mu.Unlock()
	return len(s.tracker.forgotten)
}
