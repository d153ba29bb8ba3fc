package events

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/propagation"

	"github.com/meshop/meshop/services/kit/sqldb"
)

// Outbox is how a service records its events: in the transaction of the
// state change they report, so they exist if and only if it commits, and
// with a nudge to the relay after the commit, so they leave at once
// instead of at the relay's next poll. Stores use it for their own
// transactions; a consumer's handler gets one (ConsumerConfig.Outbox):
//
//	err := s.outbox.InTx(ctx, s.db, func(tx *events.Tx) error {
//		if _, err := tx.ExecContext(ctx, ...); err != nil { // the state change
//			return sqldb.Err("insert order", err)
//		}
//		return tx.Record(ctx, created)
//	})
type Outbox struct {
	prop   propagation.TextMapPropagator
	notify func()
}

// NewOutbox returns a process's outbox. prop is its propagator: the trace
// context of the recording request is stored with each event, so the
// relay's publish continues that trace. notify is the relay's Notify; nil
// nudges nothing (tests), and the relay's polling still finds the events.
func NewOutbox(prop propagation.TextMapPropagator, notify func()) *Outbox {
	return &Outbox{prop: prop, notify: notify}
}

// InTx runs fn in one transaction of db (see sqldb.InTx). The events fn
// records with tx.Record are committed with its writes or not at all;
// after a commit that recorded any, the relay is nudged.
func (o *Outbox) InTx(ctx context.Context, db *sqlx.DB, fn func(tx *Tx) error) error {
	recorded := false
	err := sqldb.InTx(ctx, db, func(sqlTx *sqlx.Tx) error {
		tx := &Tx{Tx: sqlTx, prop: o.prop}
		err := fn(tx)
		recorded = tx.recorded
		return err
	})
	if err == nil && recorded && o.notify != nil {
		o.notify()
	}
	return err
}

// Tx is a transaction of Outbox.InTx: a *sqlx.Tx for the state change,
// and Record for the events that report it.
type Tx struct {
	*sqlx.Tx
	prop     propagation.TextMapPropagator
	recorded bool
}

const insertOutboxSQL = `INSERT INTO outbox (id, subject, envelope, trace_headers, created_at) VALUES (?, ?, ?, ?, ?)`

// Record writes ev to the outbox inside tx, with the trace context of ctx.
//
// An envelope without id, with a source or type that cannot form a subject
// (see Subject), or larger than MaxEnvelopeBytes is refused here, where the
// producer can still fail its request, rather than stall the relay.
func (tx *Tx) Record(ctx context.Context, ev Envelope) error {
	if err := ev.check(); err != nil {
		return err
	}
	body, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("events: encode %s: %w", ev.Type, err)
	}
	if len(body) > MaxEnvelopeBytes {
		return fmt.Errorf("events: %s %s is %d bytes encoded, over the %d byte limit", ev.Type, ev.ID, len(body), MaxEnvelopeBytes)
	}
	carrier := propagation.MapCarrier{}
	tx.prop.Inject(ctx, carrier)
	headers, _ := json.Marshal(carrier) // a map of strings always encodes
	_, err = tx.ExecContext(ctx, tx.Rebind(insertOutboxSQL), ev.ID, Subject(ev.Source, ev.Type), string(body), string(headers), ev.OccurredAt)
	if err != nil {
		return fmt.Errorf("events: record %s %s in outbox: %w", ev.Type, ev.ID, err)
	}
	tx.recorded = true
	return nil
}
