// Package events carries Meshop's domain events over NATS JetStream with a
// transactional outbox, so an event is published if and only if the state
// change that caused it was committed:
//
//	service tx: state change + Record(ev) ──commit──▶ outbox table
//	Relay: outbox (unsent, oldest first) ──publish (Nats-Msg-Id = ev.ID)──▶ stream EVENTS
//	Consumer: durable, explicit ack ──▶ dedupe by event id (processed_events,
//	          same tx as the handler's writes) ──▶ handler ──▶ ack
//	          poison or N failed deliveries ──▶ dead-letter subject
//
// Subjects are events.<source service>.<type>, e.g. events.order.order.created.
// The W3C traceparent/tracestate of the producing request travel in message
// headers, so a consumer's span joins the producer's trace.
package events

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/propagation"

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
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err) // the directory is embedded above; this cannot fail
	}
	return sqldb.MigrationSet{Name: "events", FS: sub}
}

const insertOutboxSQL = `INSERT INTO outbox (id, subject, envelope, trace_headers, created_at) VALUES (?, ?, ?, ?, ?)`

// Record writes ev to the outbox inside tx, the transaction of the state
// change it reports. The trace context of ctx is stored with it, so the
// relay's publish carries it. prop is the process's propagator.
func Record(ctx context.Context, tx *sqlx.Tx, prop propagation.TextMapPropagator, ev Envelope) error {
	body, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("events: encode %s: %w", ev.Type, err)
	}
	carrier := propagation.MapCarrier{}
	prop.Inject(ctx, carrier)
	headers, _ := json.Marshal(carrier) // a map of strings always encodes
	_, err = tx.ExecContext(ctx, tx.Rebind(insertOutboxSQL), ev.ID, Subject(ev.Source, ev.Type), string(body), string(headers), ev.OccurredAt)
	if err != nil {
		return fmt.Errorf("events: record %s %s in outbox: %w", ev.Type, ev.ID, err)
	}
	return nil
}
