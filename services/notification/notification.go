// Package notification tells users what happened to them: it consumes
// order, payment and user events and records one notification (the "email",
// subject and body rendered from the event) per event for the affected
// user, exactly once per event id, then sends it through a Sender.
//
//	EVENTS ──consumer (dedupe by event id, one tx)──▶ Handle ──▶ notifications table
//	                                                     ├──▶ outbox: notification.sent
//	                                                     └──▶ Sender (log, or SMTP)
//	HTTP GET /notifications ──▶ the caller's notifications, newest first
package notification

import (
	"embed"
	"time"

	"github.com/meshop/meshop/services/kit/sqldb"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations returns the notification database's schema.
func Migrations() sqldb.MigrationSet {
	return sqldb.Embedded("notification", migrations, "migrations")
}

// Notification is one message to a user.
type Notification struct {
	ID        string    `json:"id" db:"id"`
	UserID    string    `json:"user_id" db:"user_id"`
	EventID   string    `json:"-" db:"event_id"`
	EventType string    `json:"event_type" db:"event_type"`
	Subject   string    `json:"subject" db:"subject"`
	Body      string    `json:"body" db:"body"`
	CreatedAt time.Time `json:"created_at" db:"created_at"`
}
