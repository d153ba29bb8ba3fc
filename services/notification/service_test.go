package notification

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"

	"github.com/meshop/meshop/localenv"
	"github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/events"
	"github.com/meshop/meshop/services/kit/kittest"
	"github.com/meshop/meshop/services/kit/paging"
)

// recordingSender remembers what it sent, or fails with err.
type recordingSender struct {
	mu   sync.Mutex
	sent []Notification
	err  error
}

func (r *recordingSender) Send(_ context.Context, n Notification) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.sent = append(r.sent, n)
	return nil
}

func openStore(t *testing.T, databaseURL string) *SQLStore {
	db := kittest.DB(t, databaseURL, Migrations(), events.Migrations())
	return NewStore(db, events.NewOutbox(propagation.TraceContext{}, nil))
}

func mustEvent(t *testing.T, typ string, data map[string]any) events.Envelope {
	ev, err := events.New("order", typ, "o1", data)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// handleInTx runs h.Handle in its own transaction, as the consumer does.
func handleInTx(s *SQLStore, h Handler, ev events.Envelope) error {
	ctx := context.Background()
	return events.NewOutbox(propagation.TraceContext{}, nil).InTx(ctx, s.db, func(tx *events.Tx) error {
		return h.Handle(ctx, tx, ev)
	})
}

func TestHandleRecordsOncePerEvent(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, databaseURL string) {
		s := openStore(t, databaseURL)
		h := Handler{Store: s}
		confirmed := mustEvent(t, events.OrderConfirmed, map[string]any{"order_id": "o1", "user_id": "u1", "total_cents": 1950, "currency": "USD"})
		for range 2 { // a redelivery must not notify twice
			if err := handleInTx(s, h, confirmed); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.ListByUser(context.Background(), "u1", 10, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].EventType != events.OrderConfirmed || got[0].Body != "Order o1 is confirmed. Total: 19.50 USD." {
			t.Fatalf("notifications = %+v", got)
		}
		// Recorded, due, not sent: sending is the dispatcher's, after the
		// commit.
		due, err := s.Due(context.Background(), time.Now(), 10)
		if err != nil || len(due) != 1 || due[0].ID != got[0].ID {
			t.Errorf("due = %+v (%v), want the one notification", due, err)
		}
		if sent := kittest.Outbox[events.Envelope](t, s.db); len(sent) != 0 {
			t.Errorf("notification.sent recorded before any send: %+v", sent)
		}

		// A handler failure after the insert rolls it back.
		cancelled := mustEvent(t, events.OrderCancelled, map[string]any{"order_id": "o2", "user_id": "u1", "cancel_reason": "payment_declined"})
		err = events.NewOutbox(propagation.TraceContext{}, nil).InTx(context.Background(), s.db, func(tx *events.Tx) error {
			if err := h.Handle(context.Background(), tx, cancelled); err != nil {
				return err
			}
			return errors.New("later step failed")
		})
		if err == nil {
			t.Fatal("want the error")
		}
		if got, _ := s.ListByUser(context.Background(), "u1", 10, ""); len(got) != 1 {
			t.Errorf("a rolled back handling left %d notifications, want 1", len(got))
		}
	})
}

func TestRender(t *testing.T) {
	tests := []struct {
		typ         string
		data        map[string]any
		wantSubject string
		wantCode    string
	}{
		{events.UserRegistered, map[string]any{"user_id": "u1", "name": "Ada", "email": "ada@example.com"}, "Welcome to Meshop", ""},
		{events.OrderConfirmed, map[string]any{"user_id": "u1", "order_id": "o1", "total_cents": 700}, "Your order is confirmed", ""},
		{events.OrderCancelled, map[string]any{"user_id": "u1", "order_id": "o1", "cancel_reason": "out_of_stock"}, "Your order was cancelled", ""},
		{events.PaymentFailed, map[string]any{"user_id": "u1", "order_id": "o1", "amount_cents": 700, "reason": "declined"}, "Your payment did not go through", ""},
		{events.OrderConfirmed, map[string]any{"order_id": "o1"}, "", "bad_event_data"},
		{events.InventoryUpdated, map[string]any{"user_id": "u1"}, "", "unexpected_event"},
	}
	for _, tt := range tests {
		t.Run(tt.typ+tt.wantCode, func(t *testing.T) {
			_, subject, _, err := render(mustEvent(t, tt.typ, tt.data))
			if tt.wantCode != "" {
				if e := errs.As(err); e.Code != tt.wantCode {
					t.Errorf("err = %v, want %s", err, tt.wantCode)
				}
				return
			}
			if err != nil || subject != tt.wantSubject {
				t.Errorf("subject = %q, err = %v; want %q", subject, err, tt.wantSubject)
			}
		})
	}
}

func TestListPaging(t *testing.T) {
	s := openStore(t, "sqlite:"+t.TempDir()+"/n.db")
	h := Handler{Store: s}
	for range 3 {
		ev := mustEvent(t, events.OrderConfirmed, map[string]any{"order_id": "o", "user_id": "u1"})
		if err := handleInTx(s, h, ev); err != nil {
			t.Fatal(err)
		}
	}
	svc := New(s)
	u1 := auth.WithIdentity(context.Background(), auth.Identity{UserID: "u1"})
	u2 := auth.WithIdentity(context.Background(), auth.Identity{UserID: "u2"})
	first, err := svc.List(u1, paging.Request{Limit: 2})
	if err != nil || len(first.Items) != 2 || first.NextCursor == "" {
		t.Fatalf("page 1: %+v, %v", first, err)
	}
	rest, err := svc.List(u1, paging.Request{Limit: 2, After: first.Items[1].ID})
	if err != nil || len(rest.Items) != 1 || rest.NextCursor != "" {
		t.Errorf("page 2: %+v, %v", rest, err)
	}
	if others, _ := svc.List(u2, paging.Request{Limit: 10}); len(others.Items) != 0 {
		t.Errorf("u2 sees u1's notifications")
	}
}
