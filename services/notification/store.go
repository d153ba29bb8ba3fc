package notification

import (
	"context"

	"github.com/jmoiron/sqlx"

	"github.com/meshop/meshop/services/kit/sqldb"
)

const (
	// ON CONFLICT DO NOTHING: a notification per event, even if the event
	// is handled twice. PostgreSQL and SQLite both accept it.
	insertSQL = `INSERT INTO notifications (id, user_id, event_id, event_type, subject, body, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING`
	listSQL = `SELECT id, user_id, event_id, event_type, subject, body, created_at FROM notifications
		WHERE user_id = ? AND id > ? ORDER BY id LIMIT ?`
)

// SQLStore keeps notifications with sqlx, on PostgreSQL or SQLite.
type SQLStore struct{ db *sqlx.DB }

// NewStore returns a store over db (migrated with Migrations).
func NewStore(db *sqlx.DB) *SQLStore { return &SQLStore{db: db} }

// Insert records n inside tx; it reports false when a notification for the
// same event already exists.
func (s *SQLStore) Insert(ctx context.Context, tx *sqlx.Tx, n Notification) (bool, error) {
	res, err := tx.ExecContext(ctx, tx.Rebind(insertSQL), n.ID, n.UserID, n.EventID, n.EventType, n.Subject, n.Body, n.CreatedAt)
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
