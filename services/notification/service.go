package notification

import (
	"context"
	"log/slog"
	"regexp"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/propagation"

	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/events"
)

// Service answers a user's questions about their notifications.
type Service interface {
	List(ctx context.Context, userID string, limit int, cursor string) (items []Notification, next string, err error)
}

// Store keeps notifications.
type Store interface {
	Insert(ctx context.Context, tx *sqlx.Tx, n Notification) (bool, error)
	ListByUser(ctx context.Context, userID string, limit int, after string) ([]Notification, error)
}

type service struct{ store Store }

// New returns the notification service over store.
func New(store Store) Service { return &service{store: store} }

var cursorPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Paging limits of List.
const (
	defaultPageSize = 20
	maxPageSize     = 100
)

func (s *service) List(ctx context.Context, userID string, limit int, cursor string) ([]Notification, string, error) {
	if limit == 0 {
		limit = defaultPageSize
	}
	if limit < 1 || limit > maxPageSize {
		return nil, "", errs.Newf(errs.Invalid, "invalid_limit", "limit must be between 1 and %d", maxPageSize)
	}
	if cursor != "" && !cursorPattern.MatchString(cursor) {
		return nil, "", errs.New(errs.Invalid, "invalid_cursor", "cursor is not one this API returned")
	}
	items, err := s.store.ListByUser(ctx, userID, limit+1, cursor)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(items) > limit {
		items = items[:limit]
		next = items[limit-1].ID
	}
	return items, next, nil
}

// Handler turns consumed events into notifications.
type Handler struct {
	Store      Store
	Sender     Sender
	Propagator propagation.TextMapPropagator
	Logger     *slog.Logger
}

// Handle records the notification for ev and its notification.sent event
// in tx, then sends it. It runs inside the consumer's transaction, which
// also marks ev processed: all of it happens once, or not at all.
func (h Handler) Handle(ctx context.Context, tx *sqlx.Tx, ev events.Envelope) error {
	userID, subject, body, err := render(ev)
	if err != nil {
		return err
	}
	n := Notification{
		ID: uuid.Must(uuid.NewV7()).String(), UserID: userID, EventID: ev.ID, EventType: ev.Type,
		Subject: subject, Body: body, CreatedAt: time.Now().UTC().Truncate(time.Microsecond),
	}
	inserted, err := h.Store.Insert(ctx, tx, n)
	if err != nil || !inserted {
		return err
	}
	sent, err := events.New("notification", events.NotificationSent, n.ID,
		map[string]any{"notification_id": n.ID, "user_id": n.UserID, "event_type": n.EventType, "event_id": ev.ID})
	if err != nil {
		return err
	}
	if err := events.Record(ctx, tx, h.Propagator, sent); err != nil {
		return err
	}
	return h.Sender.Send(ctx, n)
}
