package notification

import (
	"context"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/meshop/meshop/services/kit/events"
	"github.com/meshop/meshop/services/kit/sqldb"
)

const (
	// ON CONFLICT DO NOTHING: a notification per event, even if the event
	// is handled twice. PostgreSQL and SQLite both accept it. A new
	// notification is due at once (next_send_at = created_at).
	insertSQL = `INSERT INTO notifications (id, user_id, event_id, event_type, subject, body, created_at, next_send_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING`
	listSQL = `SELECT id, user_id, event_id, event_type, subject, body, created_at FROM notifications
		WHERE user_id = ? AND id > ? ORDER BY id LIMIT ?`
	dueSQL = `SELECT id, user_id, event_id, event_type, subject, body, created_at, send_attempts FROM notifications
		WHERE next_send_at <= ? ORDER BY next_send_at, id LIMIT ?`
	// The claim is one statement, so of two dispatchers (two instances)
	// only one moves next_send_at; no transaction stays open for the send.
	claimSQL      = `UPDATE notifications SET send_attempts = send_attempts + 1, next_send_at = ? WHERE id = ? AND next_send_at <= ?`
	markSentSQL   = `UPDATE notifications SET sent_at = ?, next_send_at = NULL, send_error = NULL WHERE id = ? AND sent_at IS NULL`
	markFailedSQL = `UPDATE notifications SET send_error = ?, next_send_at = ? WHERE id = ? AND sent_at IS NULL`
)

// SQLStore keeps notifications with sqlx, on PostgreSQL or SQLite.
type SQLStore struct {
	db     *sqlx.DB
	outbox *events.Outbox
}

// NewStore returns a store over db (migrated with Migrations and
// events.Migrations) that records notification.sent through outbox.
func NewStore(db *sqlx.DB, outbox *events.Outbox) *SQLStore {
	return &SQLStore{db: db, outbox: outbox}
}

// Insert records n inside tx, due to be sent at once; it reports false
// when a notification for the same event already exists.
func (s *SQLStore) Insert(ctx context.Context, tx *sqlx.Tx, n Notification) (bool, error) {
	res, err := tx.ExecContext(ctx, tx.Rebind(insertSQL), n.ID, n.UserID, n.EventID, n.EventType, n.Subject, n.Body, n.CreatedAt, n.CreatedAt)
	if err != nil {
		return false, sqldb.Err("insert notification", err)
	}
	inserted, _ := res.RowsAffected()
	return inserted == 1, nil
}

// ListByUser returns up to limit of the user's notifications with ids after
// after, oldest first (ids are time-ordered).
func (s *SQLStore) ListByUser(ctx context.Context, userID string, limit int, after string) ([]Notification, error) {
	var out []Notification
	if err := s.db.SelectContext(ctx, &out, s.db.Rebind(listSQL), userID, after, limit); err != nil {
		return nil, sqldb.Err("list notifications", err)
	}
	for i := range out {
		out[i].CreatedAt = out[i].CreatedAt.UTC()
	}
	return out, nil
}

// Due returns up to limit notifications due to be sent at now, the
// longest waiting first.
func (s *SQLStore) Due(ctx context.Context, now time.Time, limit int) ([]Notification, error) {
	var out []Notification
	if err := s.db.SelectContext(ctx, &out, s.db.Rebind(dueSQL), dbTime(now), limit); err != nil {
		return nil, sqldb.Err("list due notifications", err)
	}
	for i := range out {
		out[i].CreatedAt = out[i].CreatedAt.UTC()
	}
	return out, nil
}

// Claim takes the notification id for one send attempt if it is still due
// at now: it counts the attempt and is not due again before until (when a
// send that never reported back is tried again). It reports false when
// another dispatcher claimed it first, or it is no longer due.
func (s *SQLStore) Claim(ctx context.Context, id string, now, until time.Time) (bool, error) {
	res, err := s.db.ExecContext(ctx, s.db.Rebind(claimSQL), dbTime(until), id, dbTime(now))
	if err != nil {
		return false, sqldb.Err("claim notification", err)
	}
	n, err := res.RowsAffected()
	return n == 1, sqldb.Err("claim notification", err)
}

// MarkSent records that id was sent at at, and sent (its notification.sent
// event) in the same transaction, unless it was recorded sent already: it
// reports whether this call did.
func (s *SQLStore) MarkSent(ctx context.Context, id string, at time.Time, sent events.Envelope) (bool, error) {
	var marked bool
	err := s.outbox.InTx(ctx, s.db, func(tx *events.Tx) error {
		res, err := tx.ExecContext(ctx, tx.Rebind(markSentSQL), dbTime(at), id)
		if err != nil {
			return sqldb.Err("mark notification sent", err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return sqldb.Err("mark notification sent", err)
		}
		marked = true
		return tx.Record(ctx, sent)
	})
	return marked && err == nil, err
}

// MarkFailed records why sending id failed, and when to try again; a nil
// retryAt gives up (the notification stays listed, with its error).
func (s *SQLStore) MarkFailed(ctx context.Context, id, reason string, retryAt *time.Time) error {
	var next any
	if retryAt != nil {
		next = dbTime(*retryAt)
	}
	_, err := s.db.ExecContext(ctx, s.db.Rebind(markFailedSQL), reason, next, id)
	return sqldb.Err("mark notification failed", err)
}

// dbTime is t as both engines store it: UTC, whole microseconds
// (PostgreSQL's precision; SQLite would keep nanoseconds).
func dbTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }
