package serve

import (
	"context"
	"time"

	"github.com/meshop/meshop/controlplane/catalog"
)

// Source is where snapshots come from (catalog.Watcher).
type Source interface {
	Changed() <-chan struct{}
	Take() (*catalog.Snapshot, time.Time)
}

// Run feeds the server from src until ctx ends: changes are debounced
// (Quiet, at most MaxDelay) and then applied in one pass.
func (s *Server) Run(ctx context.Context, src Source) error {
	var (
		timer     *time.Timer
		fire      <-chan time.Time
		deadline  time.Time
		pending   *catalog.Snapshot
		firstSeen time.Time
	)
	for {
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return ctx.Err()
		case <-src.Changed():
			snap, seen := src.Take()
			if snap == nil {
				continue
			}
			pending = snap
			if firstSeen.IsZero() || (!seen.IsZero() && seen.Before(firstSeen)) {
				firstSeen = seen
			}
			now := time.Now()
			if timer == nil {
				deadline = now.Add(s.opts.MaxDelay)
				timer = time.NewTimer(s.opts.Quiet)
				fire = timer.C
			} else {
				timer.Reset(min(s.opts.Quiet, time.Until(deadline)))
			}
		case <-fire:
			timer, fire = nil, nil
			s.Apply(pending, firstSeen)
			pending, firstSeen = nil, time.Time{}
		}
	}
}
