// Package notification tells users what happened to them: it consumes
// order, payment and user events and records one notification (the "email",
// subject and body rendered from the event) per event for the affected
// user, exactly once per event id, then sends it through a Sender after
// that transaction has committed, never inside one:
//
//	EVENTS ──consumer (dedupe by event id, one tx)──▶ Handle ──▶ notifications table (due)
//	                                                                │ after commit (Notify, or the next poll)
//	                                                                ▼
//	               Dispatcher: claim (one UPDATE) ──▶ Sender, bounded by SendTimeout, no tx open
//	                   ├─ sent   ──▶ one tx: sent_at + outbox: notification.sent (once)
//	                   └─ failed ──▶ send_error, retried with backoff up to MaxAttempts
//	HTTP GET /notifications ──▶ the caller's notifications, oldest first
//
// Sending is at least once: a process that dies between the send and
// recording it sends again once the claim expires. Each email carries a
// Message-ID made from the notification id, the same on every attempt, so
// a mail system can drop the duplicate; notification.sent is recorded once.
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
	// Attempts is how many times sending was tried (not in the API).
	Attempts int `json:"-" db:"send_attempts"`
}
