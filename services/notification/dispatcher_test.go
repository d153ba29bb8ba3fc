package notification

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/propagation"

	"github.com/meshop/meshop/localenv"
	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/events"
	"github.com/meshop/meshop/services/kit/kittest"
	"github.com/meshop/meshop/services/kit/sqldb"
)

// flakySender fails its first failures sends with err, then sends.
type flakySender struct {
	mu       sync.Mutex
	failures int
	err      error
	calls    int
	sent     []Notification
}

func (f *flakySender) Send(_ context.Context, n Notification) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.calls <= f.failures {
		return f.err
	}
	f.sent = append(f.sent, n)
	return nil
}

func (f *flakySender) counts() (calls, sent int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls, len(f.sent)
}

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// sendState is a notification's sending columns.
type sendState struct {
	Attempts  int        `db:"send_attempts"`
	NextSend  *time.Time `db:"next_send_at"`
	SentAt    *time.Time `db:"sent_at"`
	SendError *string    `db:"send_error"`
}

func stateOf(t *testing.T, db *sqlx.DB, eventID string) sendState {
	t.Helper()
	var st sendState
	if err := db.Get(&st, db.Rebind("SELECT send_attempts, next_send_at, sent_at, send_error FROM notifications WHERE event_id = ?"), eventID); err != nil {
		t.Fatal(err)
	}
	return st
}

func sentEvents(t *testing.T, db *sqlx.DB) []events.Envelope {
	t.Helper()
	var out []events.Envelope
	for _, ev := range kittest.Outbox[events.Envelope](t, db) {
		if ev.Type == events.NotificationSent {
			out = append(out, ev)
		}
	}
	return out
}

func TestFailedSendIsRetriedLaterNotLost(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, databaseURL string) {
		s := openStore(t, databaseURL)
		ctx := context.Background()
		ev := mustEvent(t, events.OrderConfirmed, map[string]any{"order_id": "o1", "user_id": "u1"})
		if err := handleInTx(s, Handler{Store: s}, ev); err != nil {
			t.Fatal(err)
		}
		sender := &flakySender{failures: 1, err: errors.New("smtp: 451 try again later")}
		clk := &clock{now: time.Now().UTC()}
		d := NewDispatcher(DispatcherConfig{Queue: s, Sender: sender, Logger: slog.New(slog.DiscardHandler), Now: clk.Now, Backoff: 5 * time.Second})

		if _, err := d.pass(ctx); err != nil {
			t.Fatal(err)
		}
		st := stateOf(t, s.db, ev.ID)
		if st.Attempts != 1 || st.SentAt != nil || st.SendError == nil || !strings.Contains(*st.SendError, "451") ||
			st.NextSend == nil || !st.NextSend.Equal(clk.Now().Add(5*time.Second).Truncate(time.Microsecond)) {
			t.Fatalf("after a failed send: %+v, want attempt 1, the error, retry in 5s", st)
		}
		if got := sentEvents(t, s.db); len(got) != 0 {
			t.Errorf("notification.sent recorded for a failed send: %+v", got)
		}

		// Not before its backoff...
		clk.advance(4 * time.Second)
		if _, err := d.pass(ctx); err != nil {
			t.Fatal(err)
		}
		if calls, _ := sender.counts(); calls != 1 {
			t.Fatalf("sent again %d times before the backoff, want 0", calls-1)
		}
		// ...but after it.
		clk.advance(2 * time.Second)
		if _, err := d.pass(ctx); err != nil {
			t.Fatal(err)
		}
		if calls, sent := sender.counts(); calls != 2 || sent != 1 {
			t.Fatalf("calls %d sent %d, want the retry to send", calls, sent)
		}
		st = stateOf(t, s.db, ev.ID)
		if st.Attempts != 2 || st.SentAt == nil || st.NextSend != nil || st.SendError != nil {
			t.Errorf("after the retry: %+v, want sent, nothing due, no error", st)
		}
		got := sentEvents(t, s.db)
		if len(got) != 1 || got[0].SubjectID != sender.sent[0].ID || !strings.Contains(string(got[0].Data), ev.ID) {
			t.Fatalf("notification.sent events = %+v, want one for the notification of %s", got, ev.ID)
		}

		// Sent once: neither another pass nor the event's redelivery sends
		// it again.
		clk.advance(time.Hour)
		if err := handleInTx(s, Handler{Store: s}, ev); err != nil {
			t.Fatal(err)
		}
		if _, err := d.pass(ctx); err != nil {
			t.Fatal(err)
		}
		if calls, _ := sender.counts(); calls != 2 {
			t.Errorf("sent %d times, want 2 (one failure, one success)", calls)
		}
		if got := sentEvents(t, s.db); len(got) != 1 {
			t.Errorf("notification.sent events = %d, want 1", len(got))
		}
	})
}

func TestSendingGivesUpAfterMaxAttempts(t *testing.T) {
	s := openStore(t, "sqlite:"+t.TempDir()+"/n.db")
	ctx := context.Background()
	gone := mustEvent(t, events.OrderConfirmed, map[string]any{"order_id": "o1", "user_id": "gone"})
	flaky := mustEvent(t, events.OrderCancelled, map[string]any{"order_id": "o2", "user_id": "u1"})
	for _, ev := range []events.Envelope{gone, flaky} {
		if err := handleInTx(s, Handler{Store: s}, ev); err != nil {
			t.Fatal(err)
		}
	}
	clk := &clock{now: time.Now().UTC()}
	sender := SenderFunc(func(_ context.Context, n Notification) error {
		if n.UserID == "gone" {
			return errs.New(errs.NotFound, "USER_NOT_FOUND", "no user")
		}
		return errors.New("connection refused")
	})
	d := NewDispatcher(DispatcherConfig{Queue: s, Sender: sender, Logger: slog.New(slog.DiscardHandler), Now: clk.Now, MaxAttempts: 3})
	for range 5 {
		if _, err := d.pass(ctx); err != nil {
			t.Fatal(err)
		}
		clk.advance(time.Hour)
	}
	for _, tt := range []struct {
		ev       events.Envelope
		attempts int
	}{{gone, 1}, {flaky, 3}} {
		st := stateOf(t, s.db, tt.ev.ID)
		if st.Attempts != tt.attempts || st.NextSend != nil || st.SentAt != nil || st.SendError == nil {
			t.Errorf("%s: %+v, want given up after %d attempts with its error", tt.ev.Type, st, tt.attempts)
		}
	}
	// Given up sending, still the user's notification.
	if got, _ := s.ListByUser(ctx, "u1", 10, ""); len(got) != 1 {
		t.Errorf("u1 has %d notifications, want 1", len(got))
	}
}

// SenderFunc adapts a function to Sender.
type SenderFunc func(ctx context.Context, n Notification) error

func (f SenderFunc) Send(ctx context.Context, n Notification) error { return f(ctx, n) }

func TestClaimIsTakenOnce(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, databaseURL string) {
		s := openStore(t, databaseURL)
		ev := mustEvent(t, events.OrderConfirmed, map[string]any{"order_id": "o1", "user_id": "u1"})
		if err := handleInTx(s, Handler{Store: s}, ev); err != nil {
			t.Fatal(err)
		}
		ctx, now := context.Background(), time.Now()
		due, err := s.Due(ctx, now, 10)
		if err != nil || len(due) != 1 {
			t.Fatalf("due = %v, %v", due, err)
		}
		var wins int
		for range 2 { // two dispatchers that read the same due row
			ok, err := s.Claim(ctx, due[0].ID, now, now.Add(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				wins++
			}
		}
		if wins != 1 {
			t.Errorf("claimed %d times, want once", wins)
		}
		if again, _ := s.Due(ctx, now.Add(30*time.Second), 10); len(again) != 0 {
			t.Errorf("a claimed notification is due again within its claim: %+v", again)
		}
		if again, _ := s.Due(ctx, now.Add(2*time.Minute), 10); len(again) != 1 {
			t.Errorf("a claim that never reported back did not expire")
		}
	})
}

// hangingSMTP accepts connections and never answers; accepted receives
// each connection as it is accepted.
func hangingSMTP(t *testing.T) (addr string, accepted <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c // held open, never written to
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for {
			select {
			case c := <-conns:
				c.Close()
			default:
				return
			}
		}
	})
	return ln.Addr().String(), conns
}

type fixedRecipients map[string]string

func (r fixedRecipients) Email(_ context.Context, userID string) (string, error) {
	if email, ok := r[userID]; ok {
		return email, nil
	}
	return "", errs.New(errs.NotFound, "USER_NOT_FOUND", "no user")
}

func TestHangingSMTPHoldsNoTransactionAndTimesOut(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, databaseURL string) {
		s := openStore(t, databaseURL)
		ev := mustEvent(t, events.OrderConfirmed, map[string]any{"order_id": "o1", "user_id": "u1"})
		if err := handleInTx(s, Handler{Store: s}, ev); err != nil {
			t.Fatal(err)
		}
		addr, accepted := hangingSMTP(t)
		const timeout = 500 * time.Millisecond
		d := NewDispatcher(DispatcherConfig{
			Queue: s, Logger: slog.New(slog.DiscardHandler), SendTimeout: timeout,
			Sender: SMTPSender{Addr: addr, From: "shop@meshop.local", Recipients: fixedRecipients{"u1": "ada@example.com"}},
		})

		start := time.Now()
		done := make(chan error, 1)
		go func() { _, err := d.pass(context.Background()); done <- err }()
		select {
		case <-accepted:
		case <-time.After(5 * time.Second):
			t.Fatal("the dispatcher never connected to the SMTP server")
		}

		// While the relay hangs, the notification's row is free: a write
		// to it in a transaction of its own commits at once (on SQLite,
		// whose one connection a held transaction would keep; on
		// PostgreSQL, whose row lock it would keep).
		ctx, cancel := context.WithTimeout(context.Background(), timeout/2)
		defer cancel()
		err := sqldb.InTx(ctx, s.db, func(tx *sqlx.Tx) error {
			_, err := tx.ExecContext(ctx, tx.Rebind("UPDATE notifications SET body = body WHERE event_id = ?"), ev.ID)
			return err
		})
		if err != nil {
			t.Fatalf("a write during the hanging send: %v", err)
		}
		if s.db.DriverName() == "pgx" {
			var open int
			if err := s.db.Get(&open, `SELECT COUNT(*) FROM pg_stat_activity
				WHERE datname = current_database() AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'`); err != nil {
				t.Fatal(err)
			}
			if open != 0 {
				t.Errorf("%d transactions open during the send, want none", open)
			}
		}

		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the send did not give up")
		}
		if took := time.Since(start); took > timeout+time.Second {
			t.Errorf("the pass took %s, want about the %s send timeout", took, timeout)
		}
		st := stateOf(t, s.db, ev.ID)
		if st.Attempts != 1 || st.SentAt != nil || st.NextSend == nil || st.SendError == nil || !strings.Contains(*st.SendError, "timeout") {
			t.Errorf("after the hanging send: %+v, want a timeout recorded and a retry due", st)
		}
	})
}

func TestRunSendsRightAfterCommit(t *testing.T) {
	s := openStore(t, "sqlite:"+t.TempDir()+"/n.db")
	sender := &flakySender{}
	queue := &passCounter{Queue: s}
	d := NewDispatcher(DispatcherConfig{Queue: queue, Sender: sender, Logger: slog.New(slog.DiscardHandler), Interval: time.Hour})
	runCtx, stop := context.WithCancel(context.Background())
	defer stop()
	go d.Run(runCtx)
	// Its first pass finds nothing; the next comes in an hour, or on Notify.
	for deadline := time.Now().Add(5 * time.Second); queue.passes.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the dispatcher made no first pass within 5s")
		}
	}

	// As the consumer does: the handler's context ends once the event is
	// settled, after the commit.
	h := Handler{Store: s, Notify: d.Notify}
	handleCtx, settled := context.WithCancel(context.Background())
	ev := mustEvent(t, events.UserRegistered, map[string]any{"user_id": "u1"})
	if err := events.NewOutbox(propagation.TraceContext{}, nil).InTx(handleCtx, s.db, func(tx *events.Tx) error { return h.Handle(handleCtx, tx, ev) }); err != nil {
		t.Fatal(err)
	}
	settled()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, sent := sender.counts(); sent == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("not sent within 5s of the commit (the poll is an hour)")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// passCounter counts the dispatcher's passes over its queue (calls of Due).
type passCounter struct {
	Queue
	passes atomic.Int32
}

func (q *passCounter) Due(ctx context.Context, now time.Time, limit int) ([]Notification, error) {
	defer q.passes.Add(1)
	return q.Queue.Due(ctx, now, limit)
}
