package payment

import (
	"context"
	"log/slog"
	"time"
)

// Resolver settles payments and refunds whose outcome is unknown in the
// background, so an order that never retries still gets its payment's (or
// its refund's) real outcome and its event. Run is an app.Actor.
type Resolver struct {
	Service  Service
	Interval time.Duration // between passes
	Logger   *slog.Logger
}

// Run settles unknown payments every Interval until ctx ends; it returns
// nil then. A failed pass is logged and retried at the next tick.
func (r Resolver) Run(ctx context.Context) error {
	logger := r.Logger.With("component", "resolver")
	failing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(r.Interval):
		}
		n, err := r.Service.SettleUnknown(ctx)
		if n > 0 {
			logger.Info("settled payments of unknown outcome", "settled", n)
		}
		switch {
		case err != nil && ctx.Err() == nil:
			// Logged at each failing pass as warn, but the first as error,
			// so a provider outage is one error line, not one per tick.
			level := slog.LevelWarn
			if !failing {
				level = slog.LevelError
			}
			logger.Log(ctx, level, "some payments are still unknown", "err", err.Error())
			failing = true
		case err == nil && failing:
			logger.Info("unknown payments settled again")
			failing = false
		}
	}
}
