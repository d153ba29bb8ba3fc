package serve

import "time"

// SetClockForTest makes now the clock of the server's node tracker
// (connections, departures, sync states); call it before Serve.
func (s *Server) SetClockForTest(now func() time.Time) { s.tracker.now = now }

// TrackedForTest is the number of nodes the tracker holds, after it
// forgot those gone for NodeForgetAfter.
func (s *Server) TrackedForTest() int { return s.tracker.len() }
