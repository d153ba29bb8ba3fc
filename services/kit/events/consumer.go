package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshop/meshop/services/kit/telemetry"
)

// Handler handles one event inside tx, the transaction that also records
// the event as processed: its writes, and the events it records with
// tx.Record, commit if and only if the event is marked done. It must use
// tx, never the DB itself (on SQLite the process has one connection, held
// by tx). An error rolls everything back and the event is redelivered
// later; after MaxDeliver failures it is dead-lettered.
type Handler func(ctx context.Context, tx *Tx, ev Envelope) error

// ConsumerConfig configures a Consumer. Name, Types, Handler, DB, Bus,
// Telemetry, Metrics and Logger are required; zero values of the others
// take the defaults in brackets.
type ConsumerConfig struct {
	// Name is the durable consumer's name (letters, digits, - and _), e.g.
	// "notification". Instances sharing it share the work; it also keys
	// processed_events and names the dead-letter subject.
	Name string
	// Types are the event types handled, from any source (filter
	// events.*.<type> each). A type has at least two dot-separated tokens,
	// e.g. order.confirmed.
	Types     []string
	Handler   Handler
	DB        *sqlx.DB // the service's database, with Migrations applied
	Bus       *Bus
	Telemetry *telemetry.Telemetry
	// Metrics gets meshop_events_dead_lettered_total, shared by the
	// process's consumers (see DeadLetterMetricName).
	Metrics prometheus.Registerer
	Logger  *slog.Logger
	// MaxDeliver [5] is how many times an event is handed to Handler
	// before it is dead-lettered.
	MaxDeliver int
	// Backoff [1s 5s 15s 30s] is the delay before redelivery after the
	// 1st, 2nd, ... failure; the last value repeats.
	Backoff []time.Duration
	// AckWait [30s] is the Handler's deadline; an event neither acked nor
	// nacked within it (the process died) is redelivered.
	AckWait time.Duration
	// Outbox [one that nudges no relay] runs each handled event's
	// transaction. Pass the service's outbox when Handler records events of
	// its own in that transaction, so they leave at once.
	Outbox *Outbox
}

// Consumer is a durable JetStream pull consumer that hands each event to a
// Handler exactly once per event id, in a transaction: an app.Actor (Run).
//
// Per message: the envelope is parsed (unparseable, without id, or not
// matching its subject = poison: dead-lettered at once); a span "process
// <type>" (kind consumer) starts as the child of the traceparent in the
// headers; one transaction inserts (consumer, event id) into
// processed_events, where a duplicate means already done (ack, nothing
// else), and runs Handler; commit, then ack. Handler failure → nak with the
// Backoff delay; the MaxDeliver-th failure → dead letter, then term.
type Consumer struct {
	cfg    ConsumerConfig
	tracer trace.Tracer
	logger *slog.Logger
	types  map[string]bool
	// deadLettered counts the events given up on, by consumer, type and
	// reason (DeadLetterPoison, ...).
	deadLettered *prometheus.CounterVec
	// lastPrune is when processed_events rows past StreamMaxAge were last
	// deleted (only Run's goroutine touches it).
	lastPrune time.Time
}

// Dead-letter message headers, beside the original message's own
// (traceparent, ...), so an operator can see what failed and why.
const (
	HeaderDeadReason     = "Meshop-Dead-Reason"     // why: the parse or handler error
	HeaderDeadSubject    = "Meshop-Dead-Subject"    // the original subject
	HeaderDeadConsumer   = "Meshop-Dead-Consumer"   // the consumer that gave up
	HeaderDeadDeliveries = "Meshop-Dead-Deliveries" // how many deliveries it got
	HeaderDeadSequence   = "Meshop-Dead-Sequence"   // its EVENTS stream sequence
)

// DeadLetterSubject is where consumer puts the events it gives up on:
// events.dlq.<consumer>. The EVENTS stream stores it (events.>), and no
// consumer's filter matches it: those are events.*.<a>.<b>..., at least
// four tokens, and it has three.
func DeadLetterSubject(consumer string) string { return "events.dlq." + consumer }

// DeadLetterMetricName is the counter of events dead-lettered: labels
// consumer, type (one of the consumer's Types, or "unknown" for a subject
// that names none) and reason (DeadLetterPoison, DeadLetterHandlerFailed
// or DeadLetterUnfinished). It counts a dead letter once its publish
// succeeded, and once per message (within the stream's DuplicateWindow);
// each consumer's series for its Types start at 0.
const DeadLetterMetricName = "meshop_events_dead_lettered_total"

// Why an event was dead-lettered: the reason label of
// meshop_events_dead_lettered_total.
const (
	DeadLetterPoison        = "poison"         // unparseable, or not what its subject says
	DeadLetterHandlerFailed = "handler_failed" // Handler failed MaxDeliver times
	DeadLetterUnfinished    = "unfinished"     // the last attempt never finished (the process died)
)

// deadLetterCounter registers meshop_events_dead_lettered_total on reg, or
// returns the one already there: a process's consumers share it.
func deadLetterCounter(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: DeadLetterMetricName,
		Help: "Events a consumer gave up on and published to its dead-letter subject, by consumer, event type and reason.",
	}, []string{"consumer", "type", "reason"})
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return existing, nil
			}
		}
		return nil, err
	}
	return c, nil
}

// NewConsumer checks cfg and returns a consumer; Run creates it on the
// server and consumes.
func NewConsumer(cfg ConsumerConfig) (*Consumer, error) {
	if !validToken(cfg.Name) {
		return nil, fmt.Errorf("events: consumer name %q: want letters, digits, - or _", cfg.Name)
	}
	if len(cfg.Types) == 0 {
		return nil, fmt.Errorf("events: consumer %s: no event types", cfg.Name)
	}
	types := map[string]bool{}
	for _, typ := range cfg.Types {
		if err := validType(typ); err != nil {
			return nil, fmt.Errorf("events: consumer %s: %w", cfg.Name, err)
		}
		types[typ] = true
	}
	switch {
	case cfg.Handler == nil:
		return nil, fmt.Errorf("events: consumer %s: no handler", cfg.Name)
	case cfg.DB == nil || cfg.Bus == nil || cfg.Telemetry == nil || cfg.Metrics == nil || cfg.Logger == nil:
		return nil, fmt.Errorf("events: consumer %s: DB, Bus, Telemetry, Metrics and Logger are required", cfg.Name)
	case cfg.MaxDeliver < 0:
		return nil, fmt.Errorf("events: consumer %s: MaxDeliver %d < 0", cfg.Name, cfg.MaxDeliver)
	}
	if cfg.MaxDeliver == 0 {
		cfg.MaxDeliver = 5
	}
	if len(cfg.Backoff) == 0 {
		cfg.Backoff = []time.Duration{time.Second, 5 * time.Second, 15 * time.Second, 30 * time.Second}
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.Outbox == nil {
		cfg.Outbox = NewOutbox(cfg.Telemetry.Propagator, nil)
	}
	deadLettered, err := deadLetterCounter(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("events: consumer %s: dead-letter metric: %w", cfg.Name, err)
	}
	for typ := range types {
		for _, reason := range []string{DeadLetterPoison, DeadLetterHandlerFailed, DeadLetterUnfinished} {
			deadLettered.WithLabelValues(cfg.Name, typ, reason)
		}
	}
	return &Consumer{
		cfg:          cfg,
		tracer:       cfg.Telemetry.Tracer("github.com/meshop/meshop/services/kit/events"),
		logger:       cfg.Logger.With("component", "events.consumer", "consumer", cfg.Name),
		types:        types,
		deadLettered: deadLettered,
	}, nil
}

// Run creates or updates the durable consumer and handles events until ctx
// ends, then returns nil after the event in hand is done. NATS being
// unreachable, or the consumer vanishing, is logged and retried with
// backoff.
func (c *Consumer) Run(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		err := c.consume(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if attempt == 1 || attempt%20 == 0 {
			c.logger.Warn("consuming interrupted; resubscribing", "attempt", attempt, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff(attempt, 200*time.Millisecond, 5*time.Second)):
		}
	}
}

// consume subscribes and handles messages until ctx ends or the
// subscription fails.
func (c *Consumer) consume(ctx context.Context) error {
	filters := make([]string, 0, len(c.cfg.Types))
	for _, typ := range c.cfg.Types {
		filters = append(filters, "events.*."+typ)
	}
	slices.Sort(filters)
	createCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cons, err := c.cfg.Bus.js.CreateOrUpdateConsumer(createCtx, Stream, jetstream.ConsumerConfig{
		Durable:        c.cfg.Name,
		Description:    "Meshop consumer " + c.cfg.Name,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        c.cfg.AckWait,
		FilterSubjects: filters,
		// One delivery more than MaxDeliver: it is used only when the
		// last attempt could not dead-letter (the process died, or the
		// publish failed), and it dead-letters without calling Handler.
		MaxDeliver: c.cfg.MaxDeliver + 1,
	})
	if err != nil {
		return fmt.Errorf("create consumer %s on %s: %w", c.cfg.Name, Stream, err)
	}
	// A small buffer: AckWait runs from delivery, also for buffered messages.
	it, err := cons.Messages(jetstream.PullMaxMessages(16))
	if err != nil {
		return fmt.Errorf("subscribe consumer %s: %w", c.cfg.Name, err)
	}
	defer it.Stop()
	c.prune(ctx)
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return err
		}
		// Finish the event in hand even when shutdown begins; AckWait
		// bounds it.
		c.handle(context.WithoutCancel(ctx), msg)
		if time.Since(c.lastPrune) > time.Hour {
			c.prune(ctx)
		}
	}
}

// handle settles one message: ack, nak with delay, or dead letter + term.
func (c *Consumer) handle(ctx context.Context, msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil { // not a JetStream delivery; nothing to settle
		c.logger.Error("message without JetStream metadata dropped", "subject", msg.Subject(), "err", err)
		return
	}
	delivery := int(meta.NumDelivered)
	ev, err := c.parse(msg)
	if err != nil {
		c.deadLetter(ctx, msg, meta, DeadLetterPoison, "poison: "+err.Error())
		return
	}
	if delivery > c.cfg.MaxDeliver {
		c.deadLetter(ctx, msg, meta, DeadLetterUnfinished, fmt.Sprintf("delivered %d times, last attempt did not finish", delivery))
		return
	}

	parent := c.cfg.Telemetry.Propagator.Extract(ctx, headerCarrier(msg.Headers()))
	ctx, span := c.tracer.Start(parent, "process "+ev.Type,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.destination.name", msg.Subject()),
			attribute.String("messaging.consumer.group.name", c.cfg.Name),
			attribute.String("messaging.message.id", ev.ID),
			attribute.Int("messaging.nats.delivery", delivery),
		))
	defer span.End()

	ctx, cancel := context.WithTimeout(ctx, c.cfg.AckWait)
	defer cancel()
	duplicate, err := c.process(ctx, ev)
	switch {
	case err == nil:
		if duplicate {
			span.SetAttributes(attribute.Bool("meshop.event.duplicate", true))
			c.logger.DebugContext(ctx, "event already processed", "event_id", ev.ID, "type", ev.Type)
		}
		if err := msg.Ack(); err != nil {
			// Redelivered later and then found in processed_events.
			c.logger.WarnContext(ctx, "ack failed", "event_id", ev.ID, "err", err)
		}
	case delivery >= c.cfg.MaxDeliver:
		span.RecordError(err)
		span.SetStatus(codes.Error, "dead-lettered")
		c.deadLetter(ctx, msg, meta, DeadLetterHandlerFailed, fmt.Sprintf("handler failed %d times: %v", delivery, err))
	default:
		span.RecordError(err)
		span.SetStatus(codes.Error, "handler failed")
		delay := c.cfg.Backoff[min(delivery, len(c.cfg.Backoff))-1]
		c.logger.WarnContext(ctx, "handler failed; will redeliver", "event_id", ev.ID, "type", ev.Type,
			"delivery", delivery, "max_deliver", c.cfg.MaxDeliver, "retry_in", delay.String(), "err", err)
		if err := msg.NakWithDelay(delay); err != nil {
			c.logger.WarnContext(ctx, "nak failed; redelivery waits for AckWait", "event_id", ev.ID, "err", err)
		}
	}
}

// parse decodes and checks the envelope.
func (c *Consumer) parse(msg jetstream.Msg) (Envelope, error) {
	var ev Envelope
	if err := json.Unmarshal(msg.Data(), &ev); err != nil {
		return ev, fmt.Errorf("unparseable envelope: %w", err)
	}
	switch {
	case ev.ID == "":
		return ev, errors.New("envelope has no id")
	case Subject(ev.Source, ev.Type) != msg.Subject():
		return ev, fmt.Errorf("envelope of source %q type %q came on subject %s", ev.Source, ev.Type, msg.Subject())
	case !c.types[ev.Type]:
		return ev, fmt.Errorf("envelope type %q is not one this consumer handles", ev.Type)
	}
	return ev, nil
}

const (
	markProcessedSQL   = `INSERT INTO processed_events (consumer, event_id, processed_at) VALUES (?, ?, ?) ON CONFLICT (consumer, event_id) DO NOTHING`
	pruneProcessedSQL  = `DELETE FROM processed_events WHERE consumer = ? AND processed_at < ?`
	maxDeadReasonBytes = 1024
)

// process runs the handler for ev in one transaction with its
// processed_events row; duplicate reports that the row was already there.
func (c *Consumer) process(ctx context.Context, ev Envelope) (duplicate bool, err error) {
	err = c.cfg.Outbox.InTx(ctx, c.cfg.DB, func(tx *Tx) error {
		res, err := tx.ExecContext(ctx, tx.Rebind(markProcessedSQL), c.cfg.Name, ev.ID, time.Now().UTC())
		if err != nil {
			return fmt.Errorf("mark processed: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("mark processed: %w", err)
		} else if n == 0 {
			duplicate = true // another delivery of this event id committed first
			return nil
		}
		return c.callHandler(ctx, tx, ev)
	})
	return duplicate, err
}

// callHandler turns a handler panic into an error, so one bad event cannot
// bring the service down.
func (c *Consumer) callHandler(ctx context.Context, tx *Tx, ev Envelope) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panicked: %v", p)
		}
	}()
	return c.cfg.Handler(ctx, tx, ev)
}

// deadLetter publishes msg as it came to DeadLetterSubject with the reason
// in headers, counts it (kind: DeadLetterPoison, ...), then terminates it.
// If the publish fails the message is nacked instead, so a later delivery
// tries again, and nothing is counted.
func (c *Consumer) deadLetter(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, kind, reason string) {
	if len(reason) > maxDeadReasonBytes {
		reason = reason[:maxDeadReasonBytes]
	}
	dl := nats.NewMsg(DeadLetterSubject(c.cfg.Name))
	dl.Data = msg.Data()
	for k, v := range msg.Headers() {
		if !strings.HasPrefix(strings.ToLower(k), "nats-") { // keep traceparent & co, not JetStream's own
			dl.Header[k] = v
		}
	}
	dl.Header.Set(HeaderDeadReason, strings.ToValidUTF8(strings.ReplaceAll(reason, "\n", " "), "?"))
	dl.Header.Set(HeaderDeadSubject, msg.Subject())
	dl.Header.Set(HeaderDeadConsumer, c.cfg.Name)
	dl.Header.Set(HeaderDeadDeliveries, strconv.FormatUint(meta.NumDelivered, 10))
	dl.Header.Set(HeaderDeadSequence, strconv.FormatUint(meta.Sequence.Stream, 10))
	pubCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// The id makes a repeated dead-lettering of the same delivery a no-op.
	msgID := fmt.Sprintf("dlq.%s.%d", c.cfg.Name, meta.Sequence.Stream)
	ack, err := c.cfg.Bus.js.PublishMsg(pubCtx, dl, jetstream.WithMsgID(msgID), jetstream.WithExpectStream(Stream))
	if err != nil {
		c.logger.ErrorContext(ctx, "dead-letter publish failed; will retry on redelivery", "subject", msg.Subject(),
			"stream_seq", meta.Sequence.Stream, "reason", reason, "err", err)
		_ = msg.NakWithDelay(c.cfg.Backoff[0])
		return
	}
	// A repeated dead-lettering of the same message (the term below
	// failed) is a duplicate the stream dropped: counted once.
	if !ack.Duplicate {
		c.deadLettered.WithLabelValues(c.cfg.Name, c.subjectType(msg.Subject()), kind).Inc()
	}
	c.logger.ErrorContext(ctx, "event dead-lettered", "subject", msg.Subject(), "stream_seq", meta.Sequence.Stream,
		"delivery", meta.NumDelivered, "dead_letter_subject", dl.Subject, "reason", reason)
	if err := msg.Term(); err != nil {
		c.logger.WarnContext(ctx, "term failed; the redelivery will be dead-lettered again (deduplicated)", "stream_seq", meta.Sequence.Stream, "err", err)
	}
}

// subjectType is the event type of subject events.<source>.<type> if it
// is one the consumer handles, else "unknown": the type label stays one of
// a fixed set whatever a foreign producer publishes.
func (c *Consumer) subjectType(subject string) string {
	tokens := strings.SplitN(subject, ".", 3)
	if len(tokens) == 3 && tokens[0] == "events" && c.types[tokens[2]] {
		return tokens[2]
	}
	return "unknown"
}

// prune deletes this consumer's processed_events rows older than the
// stream keeps events: no stored message can duplicate them any more.
func (c *Consumer) prune(ctx context.Context) {
	c.lastPrune = time.Now()
	_, err := c.cfg.DB.ExecContext(ctx, c.cfg.DB.Rebind(pruneProcessedSQL), c.cfg.Name, time.Now().UTC().Add(-StreamMaxAge-time.Hour))
	if err != nil && ctx.Err() == nil {
		c.logger.Warn("pruning processed_events failed", "err", err)
	}
}

// validToken reports whether s is one NATS subject token we allow in
// names: letters, digits, - and _.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// validType checks an event type: two or more tokens joined by dots.
func validType(typ string) error {
	tokens := strings.Split(typ, ".")
	if len(tokens) < 2 || slices.ContainsFunc(tokens, func(t string) bool { return !validToken(t) }) {
		return fmt.Errorf("event type %q: want tokens of letters, digits, - or _ joined by dots, at least two (order.created)", typ)
	}
	return nil
}
