package notification

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/events"
)

// Queue is the part of the store the Dispatcher uses (SQLStore has it).
type Queue interface {
	Due(ctx context.Context, now time.Time, limit int) ([]Notification, error)
	Claim(ctx context.Context, id string, now, until time.Time) (bool, error)
	MarkSent(ctx context.Context, id string, at time.Time, sent events.Envelope) (bool, error)
	MarkFailed(ctx context.Context, id, reason string, retryAt *time.Time) error
}

// DispatcherConfig configures a Dispatcher. Queue, Sender and Logger are
// required; zero values of the others take the defaults in brackets.
type DispatcherConfig struct {
	Queue  Queue
	Sender Sender
	Logger *slog.Logger
	// SendTimeout [10s] bounds one send: the recipient's lookup, the dial
	// and the whole SMTP conversation.
	SendTimeout time.Duration
	// MaxAttempts [10] is how many times a notification's send is tried.
	// After the last failure it is given up: it stays listed, with its
	// error (send_error), and is not sent.
	MaxAttempts int
	// Backoff [5s] is the wait after the first failure; it doubles after
	// each further failure, up to MaxBackoff [5m].
	Backoff, MaxBackoff time.Duration
	// Interval [1s] is how often due notifications are looked for; Notify
	// wakes the dispatcher sooner.
	Interval time.Duration
	// BatchSize [20] is how many due notifications one query reads.
	BatchSize int
	// Now [time.Now] is the clock.
	Now func() time.Time
}

// claimMargin is how much longer than SendTimeout a claimed notification
// waits before another attempt may take it: only a dispatcher that died
// mid-send (or failed to record the outcome) leaves one that long.
const claimMargin = time.Minute

// maxErrorBytes bounds the send_error kept per notification.
const maxErrorBytes = 1024

// Dispatcher sends recorded notifications, outside any transaction, and
// records each outcome: an app.Actor (Run).
//
// Per due notification: claim it (one UPDATE: the attempt is counted and
// the row is not due again for SendTimeout + 1 min), send it with a
// deadline of SendTimeout, then record the outcome: sent → sent_at and the
// notification.sent event in one transaction, once; failed → the error
// and the next try after a backoff, or given up after MaxAttempts (at
// once when the recipient does not exist). No database connection is held
// while the Sender runs.
type Dispatcher struct {
	cfg    DispatcherConfig
	logger *slog.Logger
	wake   chan struct{}
}

// NewDispatcher returns a dispatcher for cfg; Run starts it.
func NewDispatcher(cfg DispatcherConfig) *Dispatcher {
	if cfg.SendTimeout <= 0 {
		cfg.SendTimeout = 10 * time.Second
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 10
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 5 * time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Minute
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 20
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Dispatcher{
		cfg:    cfg,
		logger: cfg.Logger.With("component", "dispatcher"),
		wake:   make(chan struct{}, 1),
	}
}

// Notify wakes the dispatcher now instead of at its next interval; it
// never blocks. Call it once a notification is committed.
func (d *Dispatcher) Notify() {
	select {
	case d.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// Run sends due notifications until ctx ends, then returns nil. A send in
// progress at shutdown is cut by ctx and recorded as a failed attempt.
// Database failures are logged when they start and when they end.
func (d *Dispatcher) Run(ctx context.Context) error {
	timer := time.NewTimer(0) // first pass at once: what the last run left
	defer timer.Stop()
	var failing error
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-d.wake:
		}
		err := d.drain(ctx)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case err != nil && failing == nil:
			d.logger.Error("sending notifications failed; retrying", "err", err)
		case err == nil && failing != nil:
			d.logger.Info("sending notifications recovered", "after", failing.Error())
		}
		failing = err
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(d.cfg.Interval)
	}
}

// drain sends batches until none is full or the database fails.
func (d *Dispatcher) drain(ctx context.Context) error {
	for {
		n, err := d.pass(ctx)
		if err != nil || n < d.cfg.BatchSize || ctx.Err() != nil {
			return err
		}
	}
}

// pass sends one batch of due notifications and reports how many it read.
func (d *Dispatcher) pass(ctx context.Context) (int, error) {
	due, err := d.cfg.Queue.Due(ctx, d.cfg.Now(), d.cfg.BatchSize)
	if err != nil {
		return 0, err
	}
	for _, n := range due {
		if ctx.Err() != nil {
			break
		}
		if err := d.send(ctx, n); err != nil {
			return len(due), err
		}
	}
	return len(due), nil
}

// send claims, sends and records one notification. Its error is the
// database's; a failed send is recorded, not returned.
func (d *Dispatcher) send(ctx context.Context, n Notification) error {
	now := d.cfg.Now()
	claimed, err := d.cfg.Queue.Claim(ctx, n.ID, now, now.Add(d.cfg.SendTimeout+claimMargin))
	if err != nil || !claimed {
		return err
	}
	attempt := n.Attempts + 1
	sendCtx, cancel := context.WithTimeout(ctx, d.cfg.SendTimeout)
	sendErr := d.cfg.Sender.Send(sendCtx, n)
	cancel()

	// The outcome is recorded even when shutdown began during the send.
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer rcancel()
	if sendErr == nil {
		sent, err := events.New("notification", events.NotificationSent, n.ID,
			map[string]any{"notification_id": n.ID, "user_id": n.UserID, "event_type": n.EventType, "event_id": n.EventID})
		if err != nil {
			return err
		}
		// If this fails the claim expires and the email is sent again,
		// with the same Message-ID.
		if _, err := d.cfg.Queue.MarkSent(rctx, n.ID, d.cfg.Now(), sent); err != nil {
			return fmt.Errorf("notification %s was sent, recording it failed: %w", n.ID, err)
		}
		return nil
	}
	reason := sendErr.Error()
	if len(reason) > maxErrorBytes {
		reason = reason[:maxErrorBytes]
	}
	log := d.logger.With("notification", n.ID, "event_id", n.EventID, "attempt", attempt, "max_attempts", d.cfg.MaxAttempts, "err", sendErr)
	if attempt >= d.cfg.MaxAttempts || errs.Is(sendErr, errs.NotFound) {
		log.Error("sending a notification failed; giving up")
		return d.cfg.Queue.MarkFailed(rctx, n.ID, reason, nil)
	}
	wait := d.backoff(attempt)
	retryAt := d.cfg.Now().Add(wait)
	log.Warn("sending a notification failed; will retry", "retry_in", wait.String())
	return d.cfg.Queue.MarkFailed(rctx, n.ID, reason, &retryAt)
}

// backoff is the wait after the attempt-th failure: Backoff doubled per
// earlier failure, at most MaxBackoff.
func (d *Dispatcher) backoff(attempt int) time.Duration {
	wait := d.cfg.Backoff
	for i := 1; i < attempt && wait < d.cfg.MaxBackoff; i++ {
		wait *= 2
	}
	return min(wait, d.cfg.MaxBackoff)
}
