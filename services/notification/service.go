package notification

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/events"
	"github.com/meshop/meshop/services/kit/paging"
)

// Service answers a user's questions about their notifications.
type Service interface {
	// List returns a page of the caller's notifications, oldest first; the
	// context carries the caller's identity (kit/auth).
	List(ctx context.Context, req paging.Request) (paging.Page[Notification], error)
}

// Store keeps notifications.
type Store interface {
	Insert(ctx context.Context, tx *sqlx.Tx, n Notification) (bool, error)
	ListByUser(ctx context.Context, userID string, limit int, after string) ([]Notification, error)
}

type service struct{ store Store }

// New returns the notification service over store.
func New(store Store) Service { return &service{store: store} }

func (s *service) List(ctx context.Context, req paging.Request) (paging.Page[Notification], error) {
	caller, err := auth.Require(ctx)
	if err != nil {
		return paging.Page[Notification]{}, err
	}
	items, err := s.store.ListByUser(ctx, caller.UserID, req.Limit+1, req.After)
	if err != nil {
		return paging.Page[Notification]{}, err
	}
	return paging.Build(items, req, func(n Notification) string { return n.ID }), nil
}

// Handler turns consumed events into notifications.
type Handler struct {
	Store Store
	// Notify [none] is called once the handled event's transaction is
	// over: the Dispatcher's Notify, so that the send starts right after
	// the commit instead of at the dispatcher's next poll.
	Notify func()
}

// Handle records the notification for ev in tx, due to be sent. It runs
// inside the consumer's transaction, which also marks ev processed: the
// record happens once, or not at all. It does not send: a send inside the
// transaction would hold it (and its locks) open for as long as the mail
// relay takes, and a rollback after a send would send twice. The
// Dispatcher sends it once the transaction has committed.
func (h Handler) Handle(ctx context.Context, tx *events.Tx, ev events.Envelope) error {
	userID, subject, body, err := render(ev)
	if err != nil {
		return err
	}
	n := Notification{
		ID: uuid.Must(uuid.NewV7()).String(), UserID: userID, EventID: ev.ID, EventType: ev.Type,
		Subject: subject, Body: body, CreatedAt: time.Now().UTC().Truncate(time.Microsecond),
	}
	inserted, err := h.Store.Insert(ctx, tx.Tx, n)
	if err != nil || !inserted {
		return err
	}
	if h.Notify != nil {
		// The consumer ends ctx when it has settled the event: after the
		// commit (or the rollback, where the dispatcher finds nothing).
		// A nudge it misses is caught by the dispatcher's poll.
		context.AfterFunc(ctx, h.Notify)
	}
	return nil
}
