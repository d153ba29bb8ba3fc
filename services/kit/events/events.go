// Package events carries Meshop's domain events over NATS JetStream with a
// transactional outbox, so an event is published if and only if the state
// change that caused it was committed:
//
//	Outbox.InTx: state change + tx.Record(ev) ──commit──▶ outbox table ──Notify()──┐
//	Relay (poll every Interval, or on Notify):                                     ◀┘
//	   outbox (unsent, oldest first; FOR UPDATE SKIP LOCKED on PostgreSQL)
//	   ──publish, Nats-Msg-Id = ev.ID, traceparent──▶ stream EVENTS ──ack──▶ sent_at set
//	Consumer (durable pull, explicit ack, filter events.*.<type>):
//	   parse ──poison──────────────────────────────────────────▶ events.dlq.<consumer>
//	   span "process <type>" (child of traceparent)
//	   one tx: processed_events(consumer, ev.ID) + Handler ──commit──▶ ack
//	            (already there: ack only)       Handler error ──▶ nak with Backoff
//	            MaxDeliver-th failure ─────────────────────────▶ events.dlq.<consumer>
//
// Subjects are events.<source service>.<type>, e.g. events.order.order.created.
// Delivery is at least once end to end: a relay crash between publish and
// mark republishes (JetStream drops it as a duplicate within
// DuplicateWindow), and a consumer commits its processed_events row with
// the handler's writes, so every event id takes effect once per consumer.
//
// Dead letters go to events.dlq.<consumer> (DeadLetterSubject) in the same
// stream, with the original body and headers plus Meshop-Dead-* headers
// saying why; no consumer filter matches them. A poison message is
// dead-lettered on its first delivery and never blocks the stream.
//
// The W3C traceparent/tracestate of the producing request travel in message
// headers, so a consumer's span joins the producer's trace:
// request span → "publish <type>" (producer) → "process <type>" (consumer).
//
// Wiring in a service's main (names as in package app):
//
//	bus, err := events.Connect(ctx, natsURL, a.Logger)       // stream EVENTS in place
//	relay := events.NewRelay(events.RelayConfig{DB: db, Bus: bus, Telemetry: a.Telemetry, Logger: a.Logger})
//	outbox := events.NewOutbox(a.Telemetry.Propagator, relay.Notify) // for the store, and a consumer that records
//	cons, err := events.NewConsumer(events.ConsumerConfig{Name: "notification", Types: ..., Handler: ..., DB: db, Bus: bus, Outbox: outbox, ...})
//	a.Run(ctx, routes, relay.Run, cons.Run)
package events

import (
	"embed"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/meshop/meshop/services/kit/sqldb"
)

// Stream is the JetStream stream holding every event.
const Stream = "EVENTS"

// Event types (DESIGN §3).
const (
	OrderCreated     = "order.created"
	OrderConfirmed   = "order.confirmed"
	OrderCancelled   = "order.cancelled"
	PaymentSucceeded = "payment.succeeded"
	PaymentFailed    = "payment.failed"
	PaymentRefunded  = "payment.refunded"
	InventoryUpdated = "inventory.updated"
	UserRegistered   = "user.registered"
	NotificationSent = "notification.sent"
)

// Envelope is an event as it travels (DESIGN §3).
type Envelope struct {
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	Source     string          `json:"source"`
	OccurredAt time.Time       `json:"occurred_at"`
	SubjectID  string          `json:"subject_id"` // the entity the event is about (order id, user id)
	Data       json.RawMessage `json:"data"`
}

// Subject is the NATS subject of an event of type from source.
func Subject(source, typ string) string { return "events." + source + "." + typ }

// New builds an envelope with a fresh id, now as its time, and data
// encoded as JSON.
func New(source, typ, subjectID string, data any) (Envelope, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return Envelope{}, fmt.Errorf("events: encode %s data: %w", typ, err)
	}
	return Envelope{
		ID: uuid.Must(uuid.NewV7()).String(), Type: typ, Source: source,
		OccurredAt: time.Now().UTC().Truncate(time.Microsecond), SubjectID: subjectID, Data: raw,
	}, nil
}

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations are the outbox and processed_events tables, applied into each
// service's own database beside its schema.
func Migrations() sqldb.MigrationSet {
	return sqldb.Embedded("events", migrations, "migrations")
}

// MaxEnvelopeBytes bounds an encoded envelope, well under NATS's default
// 1 MiB payload limit.
const MaxEnvelopeBytes = 512 << 10

// check reports why ev cannot be published, or nil.
func (ev Envelope) check() error {
	switch {
	case ev.ID == "":
		return fmt.Errorf("events: %s event has no id (build it with New)", ev.Type)
	case !validToken(ev.Source):
		return fmt.Errorf("events: event %s: source %q: want letters, digits, - or _", ev.ID, ev.Source)
	}
	if err := validType(ev.Type); err != nil {
		return fmt.Errorf("events: event %s: %w", ev.ID, err)
	}
	return nil
}
