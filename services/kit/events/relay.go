package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshop/meshop/services/kit/sqldb"
	"github.com/meshop/meshop/services/kit/telemetry"
)

// RelayConfig configures a Relay. DB, Bus, Telemetry and Logger are
// required; zero values of the others take the defaults in brackets.
type RelayConfig struct {
	DB        *sqlx.DB // the service's database, with Migrations applied
	Bus       *Bus
	Telemetry *telemetry.Telemetry
	Logger    *slog.Logger
	// Interval [200ms] is how often the outbox is polled. Producers call
	// Notify after a commit, so polling only catches what Notify missed
	// (another instance's writes, a restart).
	Interval time.Duration
	// BatchSize [100] is how many rows one pass reads (and, on PostgreSQL,
	// locks) at a time.
	BatchSize int
	// PublishTimeout [5s] is how long a publish waits for JetStream's ack.
	PublishTimeout time.Duration
	// Retention [24h] is how long sent rows stay in the outbox before they
	// are deleted; negative keeps them forever.
	Retention time.Duration
}

// Relay publishes the outbox to JetStream at least once, oldest first: an
// app.Actor (Run) per producing service.
//
// Each row is published to its subject with Nats-Msg-Id = event id and its
// stored trace headers, and marked sent only after JetStream's ack. A crash
// between the two republishes the row, which JetStream drops as a duplicate
// within DuplicateWindow (and consumers dedupe after it). On PostgreSQL the
// rows of a pass are locked FOR UPDATE SKIP LOCKED, so several instances of
// a service share the outbox without publishing a row twice; on SQLite rows
// are read without a transaction (one connection is shared by the whole
// process) and a concurrent relay would at worst republish, deduplicated.
type Relay struct {
	cfg      RelayConfig
	postgres bool
	tracer   trace.Tracer
	logger   *slog.Logger
	wake     chan struct{}
}

// NewRelay returns a relay for cfg; Run starts it.
func NewRelay(cfg RelayConfig) *Relay {
	if cfg.Interval <= 0 {
		cfg.Interval = 200 * time.Millisecond
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 100
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = 5 * time.Second
	}
	if cfg.Retention == 0 {
		cfg.Retention = 24 * time.Hour
	}
	return &Relay{
		cfg:      cfg,
		postgres: cfg.DB.DriverName() == "pgx",
		tracer:   cfg.Telemetry.Tracer("github.com/meshop/meshop/services/kit/events"),
		logger:   cfg.Logger.With("component", "events.relay"),
		wake:     make(chan struct{}, 1),
	}
}

// Notify wakes the relay now instead of at its next interval. Call it
// after committing a transaction that recorded events; it never blocks.
func (r *Relay) Notify() {
	select {
	case r.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// pruneEvery is how often sent rows past Retention are deleted.
const pruneEvery = 10 * time.Minute

// Run relays until ctx ends, then returns nil. Failures (NATS or the
// database unreachable) are logged once when they start and once when they
// end; meanwhile passes back off up to 5s and ignore Notify.
func (r *Relay) Run(ctx context.Context) error {
	timer := time.NewTimer(0) // first pass at once: rows left by the last run
	defer timer.Stop()
	var (
		failing   error
		delay     = r.cfg.Interval
		lastPrune time.Time
	)
	for {
		wake := r.wake
		if failing != nil {
			wake = nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-wake:
		}
		err := r.drain(ctx)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case err != nil && failing == nil:
			r.logger.Error("relaying the outbox failed; retrying with backoff", "err", err)
			failing, delay = err, r.cfg.Interval
		case err == nil && failing != nil:
			r.logger.Info("relaying the outbox recovered", "after", failing.Error())
			failing = nil
		}
		if failing != nil {
			delay = min(2*delay, 5*time.Second)
		} else {
			delay = r.cfg.Interval
			if r.cfg.Retention > 0 && time.Since(lastPrune) > pruneEvery {
				lastPrune = time.Now()
				r.prune(ctx)
			}
		}
		timer.Reset(delay)
	}
}

// drain publishes batches until the outbox has no unsent rows or a
// publish fails.
func (r *Relay) drain(ctx context.Context) error {
	for {
		n, err := r.pass(ctx)
		if err != nil || n < r.cfg.BatchSize {
			return err
		}
	}
}

const (
	selectUnsentSQL = `SELECT id, subject, envelope, trace_headers FROM outbox WHERE sent_at IS NULL ORDER BY created_at, id LIMIT ?`
	markSentSQL     = `UPDATE outbox SET sent_at = ? WHERE id IN (?) AND sent_at IS NULL`
	pruneOutboxSQL  = `DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?`
)

type outboxRow struct {
	ID           string `db:"id"`
	Subject      string `db:"subject"`
	Envelope     string `db:"envelope"`
	TraceHeaders string `db:"trace_headers"`
}

// pass publishes one batch and reports how many rows it read.
func (r *Relay) pass(ctx context.Context) (int, error) {
	if !r.postgres {
		var rows []outboxRow
		if err := r.cfg.DB.SelectContext(ctx, &rows, r.cfg.DB.Rebind(selectUnsentSQL), r.cfg.BatchSize); err != nil {
			return 0, fmt.Errorf("read outbox: %w", err)
		}
		sent, pubErr := r.publishAll(ctx, rows)
		return len(rows), errors.Join(pubErr, r.markSent(ctx, r.cfg.DB, sent))
	}
	// What was published is marked sent even when a later row failed.
	var n int
	var pubErr error
	err := sqldb.InTx(ctx, r.cfg.DB, func(tx *sqlx.Tx) error {
		var rows []outboxRow
		if err := tx.SelectContext(ctx, &rows, tx.Rebind(selectUnsentSQL+` FOR UPDATE SKIP LOCKED`), r.cfg.BatchSize); err != nil {
			return fmt.Errorf("read outbox: %w", err)
		}
		n = len(rows)
		var sent []string
		sent, pubErr = r.publishAll(ctx, rows)
		return r.markSent(ctx, tx, sent)
	})
	return n, errors.Join(pubErr, err)
}

// publishAll publishes rows in order and stops at the first failure, so a
// later event does not overtake an earlier one from the same relay.
func (r *Relay) publishAll(ctx context.Context, rows []outboxRow) (sent []string, err error) {
	for _, row := range rows {
		if err := r.publish(ctx, row); err != nil {
			return sent, err
		}
		sent = append(sent, row.ID)
	}
	return sent, nil
}

func (r *Relay) publish(ctx context.Context, row outboxRow) error {
	stored := propagation.MapCarrier{}
	if err := json.Unmarshal([]byte(row.TraceHeaders), &stored); err != nil {
		// Publishing without the trace beats never publishing.
		r.logger.Warn("outbox row has unreadable trace headers; publishing without them", "event_id", row.ID, "err", err)
	}
	prop := r.cfg.Telemetry.Propagator
	ctx, span := r.tracer.Start(prop.Extract(ctx, stored), "publish "+typeOf(row.Subject),
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.operation.type", "send"),
			attribute.String("messaging.destination.name", row.Subject),
			attribute.String("messaging.message.id", row.ID),
		))
	defer span.End()

	msg := nats.NewMsg(row.Subject)
	msg.Data = []byte(row.Envelope)
	prop.Inject(ctx, headerCarrier(msg.Header)) // the consumer's parent is this span
	pubCtx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
	defer cancel()
	ack, err := r.cfg.Bus.js.PublishMsg(pubCtx, msg, jetstream.WithMsgID(row.ID), jetstream.WithExpectStream(Stream))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "publish failed")
		return fmt.Errorf("publish %s %s: %w", row.Subject, row.ID, err)
	}
	span.SetAttributes(attribute.Int64("messaging.nats.stream_sequence", int64(ack.Sequence)), attribute.Bool("messaging.nats.duplicate", ack.Duplicate))
	return nil
}

func (r *Relay) markSent(ctx context.Context, db sqlx.ExtContext, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	query, args, err := sqlx.In(markSentSQL, time.Now().UTC(), ids)
	if err != nil {
		return fmt.Errorf("mark sent: %w", err)
	}
	if _, err := db.ExecContext(ctx, db.Rebind(query), args...); err != nil {
		return fmt.Errorf("mark %d events sent: %w", len(ids), err)
	}
	return nil
}

func (r *Relay) prune(ctx context.Context) {
	res, err := r.cfg.DB.ExecContext(ctx, r.cfg.DB.Rebind(pruneOutboxSQL), time.Now().UTC().Add(-r.cfg.Retention))
	if err != nil {
		r.logger.Warn("pruning sent outbox rows failed", "err", err)
		return
	}
	if n, _ := res.RowsAffected(); n > 0 {
		r.logger.Debug("pruned sent outbox rows", "rows", n)
	}
}

// typeOf is the event type in subject events.<source>.<type>.
func typeOf(subject string) string {
	parts := strings.SplitN(subject, ".", 3)
	if len(parts) < 3 {
		return subject
	}
	return parts[2]
}

// headerCarrier carries trace context in NATS headers under the exact
// (lowercase) W3C names, traceparent and tracestate; Get also accepts other
// capitalisations.
type headerCarrier nats.Header

func (h headerCarrier) Get(key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	for k, v := range h {
		if strings.EqualFold(k, key) && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

func (h headerCarrier) Set(key, value string) { h[key] = []string{value} }

func (h headerCarrier) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}
