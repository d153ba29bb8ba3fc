package payment

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/propagation"

	"github.com/meshop/meshop/localenv"
	"github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/events"
)

// fakeProvider is the Simulator behind a switch: while down, every call
// hangs until its deadline without reaching the simulator (a provider or
// network outage). It counts the calls that reach the simulator.
type fakeProvider struct {
	sim                       *Simulator
	down                      atomic.Bool
	charges, lookups, refunds atomic.Int32
}

func newFakeProvider(db *sqlx.DB, latency time.Duration) *fakeProvider {
	return &fakeProvider{sim: NewSimulator(db, latency)}
}

func (f *fakeProvider) Refund(ctx context.Context, req ProviderRefund) (RefundReceipt, error) {
	if f.down.Load() {
		<-ctx.Done()
		return RefundReceipt{}, ctx.Err()
	}
	f.refunds.Add(1)
	return f.sim.Refund(ctx, req)
}

func (f *fakeProvider) Charge(ctx context.Context, req ProviderCharge) (Charge, error) {
	if f.down.Load() {
		<-ctx.Done()
		return Charge{}, ctx.Err()
	}
	f.charges.Add(1)
	return f.sim.Charge(ctx, req)
}

func (f *fakeProvider) Lookup(ctx context.Context, orderID string) (Charge, error) {
	if f.down.Load() {
		<-ctx.Done()
		return Charge{}, ctx.Err()
	}
	f.lookups.Add(1)
	return f.sim.Lookup(ctx, orderID)
}

// fixture is a service over a real store and a fake provider.
type fixture struct {
	svc      Service
	store    *SQLStore
	db       *sqlx.DB
	provider *fakeProvider
}

func newFixture(t *testing.T, databaseURL string, cfg Config) fixture {
	t.Helper()
	_, db := openStore(t, databaseURL)
	return newFixtureOver(db, cfg)
}

// newFixtureOver is a fresh process's service, simulator included, over
// db: what a restart of payment finds.
func newFixtureOver(db *sqlx.DB, cfg Config) fixture {
	store := NewStore(db, events.NewOutbox(propagation.TraceContext{}, nil))
	provider := newFakeProvider(db, 0)
	if cfg.ProviderTimeout == 0 {
		cfg.ProviderTimeout = 2 * time.Second
	}
	return fixture{svc: New(store, provider, cfg), store: store, db: db, provider: provider}
}

func chargeReq(orderID, token string) ChargeRequest {
	return ChargeRequest{OrderID: orderID, UserID: "u1", AmountCents: 4800, Currency: "USD", CardToken: token}
}

func TestChargeOutcomes(t *testing.T) {
	f := newFixture(t, sqliteURL(t), Config{})
	ctx := context.Background()
	tests := []struct {
		token      string
		wantStatus string
		wantReason string
		wantEvent  string
		wantCode   string
	}{
		{"tok_visa", StatusSucceeded, "", events.PaymentSucceeded, ""},
		{"tok_declined", StatusDeclined, ReasonDeclined, events.PaymentFailed, ""},
		{"tok_error", StatusFailed, ReasonProviderErr, events.PaymentFailed, ""},
		{"tok_stolen", StatusFailed, ReasonInvalidToken, events.PaymentFailed, "invalid_card_token"},
	}
	var want []recordedEvent
	for _, tt := range tests {
		t.Run(tt.token, func(t *testing.T) {
			orderID := "o-" + tt.token
			p, created, err := f.svc.Charge(ctx, chargeReq(orderID, tt.token))
			if tt.wantCode != "" {
				e := errs.As(err)
				if e.Kind != errs.Validation || e.Code != tt.wantCode || e.Details["payment_id"] == nil {
					t.Fatalf("Charge = %v, want 422 %s naming the payment", err, tt.wantCode)
				}
				p, _ = f.store.Get(ctx, e.Details["payment_id"].(string))
			} else if err != nil || !created {
				t.Fatalf("Charge = %v, created %v", err, created)
			}
			if p.Status != tt.wantStatus || p.Reason != tt.wantReason || p.OrderID != orderID || p.AmountCents != 4800 {
				t.Errorf("payment = %+v", p)
			}
			want = append(want, recordedEvent{Type: tt.wantEvent, SubjectID: p.ID, Data: Event{
				PaymentID: p.ID, OrderID: orderID, UserID: "u1", AmountCents: 4800, Currency: "USD",
				Status: tt.wantStatus, Reason: tt.wantReason,
			}})
			// The same request again: the same answer, no second charge.
			again, created, err := f.svc.Charge(ctx, chargeReq(orderID, tt.token))
			if errs.As(err).Code != errs.As(errOrNil(tt.wantCode)).Code || created || (err == nil && again.ID != p.ID) {
				t.Errorf("repeat = %+v created=%v err=%v", again, created, err)
			}
		})
	}
	if n := f.provider.charges.Load(); n != 4 {
		t.Errorf("provider charged %d times, want 4", n)
	}
	if diff := cmp.Diff(want, outboxEvents(t, f.db)); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

func errOrNil(code string) error {
	if code == "" {
		return nil
	}
	return errs.New(errs.Validation, code, "")
}

func TestChargeMismatchAndValidation(t *testing.T) {
	f := newFixture(t, sqliteURL(t), Config{})
	ctx := context.Background()
	if _, _, err := f.svc.Charge(ctx, chargeReq("o1", "tok_visa")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		edit     func(*ChargeRequest)
		wantKind errs.Kind
		wantCode string
	}{
		{"other amount", func(r *ChargeRequest) { r.AmountCents = 4900 }, errs.Conflict, "idempotency_mismatch"},
		{"other currency", func(r *ChargeRequest) { r.Currency = "EUR" }, errs.Conflict, "idempotency_mismatch"},
		{"other user", func(r *ChargeRequest) { r.UserID = "u2" }, errs.Conflict, "idempotency_mismatch"},
		{"other card", func(r *ChargeRequest) { r.CardToken = "tok_declined" }, errs.Conflict, "idempotency_mismatch"},
		{"zero amount", func(r *ChargeRequest) { r.OrderID, r.AmountCents = "o2", 0 }, errs.Validation, "invalid_payment"},
		{"negative amount", func(r *ChargeRequest) { r.OrderID, r.AmountCents = "o2", -5 }, errs.Validation, "invalid_payment"},
		{"no order", func(r *ChargeRequest) { r.OrderID = "" }, errs.Validation, "invalid_payment"},
		{"no user", func(r *ChargeRequest) { r.OrderID, r.UserID = "o2", "" }, errs.Validation, "invalid_payment"},
		{"bad currency", func(r *ChargeRequest) { r.OrderID, r.Currency = "o2", "usd" }, errs.Validation, "invalid_payment"},
		{"no card", func(r *ChargeRequest) { r.OrderID, r.CardToken = "o2", "" }, errs.Validation, "invalid_payment"},
		{"malformed card", func(r *ChargeRequest) { r.OrderID, r.CardToken = "o2", "tok visa" }, errs.Validation, "invalid_card_token"},
	}
	for _, tt := range tests {
		req := chargeReq("o1", "tok_visa")
		tt.edit(&req)
		_, _, err := f.svc.Charge(ctx, req)
		if e := errs.As(err); e.Kind != tt.wantKind || e.Code != tt.wantCode {
			t.Errorf("%s: %v, want %s", tt.name, err, tt.wantCode)
		}
	}
	if _, err := f.store.GetByOrder(ctx, "o2"); !errs.Is(err, errs.NotFound) {
		t.Errorf("a refused request wrote a payment: %v", err)
	}
	if n := f.provider.charges.Load(); n != 1 {
		t.Errorf("provider charged %d times, want 1", n)
	}
}

// TestConcurrentCharges sends one charge 20 times at once: the provider is
// asked once, every caller gets the same payment, one event is recorded.
func TestConcurrentCharges(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, databaseURL string) {
		f := newFixture(t, databaseURL, Config{})
		f.provider.sim.Latency = 50 * time.Millisecond // the others arrive while it charges
		var wg sync.WaitGroup
		var created atomic.Int32
		ids := make(chan string, 20)
		for range 20 {
			wg.Go(func() {
				p, c, err := f.svc.Charge(context.Background(), chargeReq("o-same", "tok_visa"))
				if err != nil || p.Status != StatusSucceeded {
					t.Errorf("Charge = %+v, %v", p, err)
					return
				}
				if c {
					created.Add(1)
				}
				ids <- p.ID
			})
		}
		wg.Wait()
		close(ids)
		distinct := map[string]bool{}
		for id := range ids {
			distinct[id] = true
		}
		if len(distinct) != 1 || created.Load() != 1 || f.provider.charges.Load() != 1 {
			t.Errorf("%d payments, %d created, %d provider charges; want 1, 1, 1", len(distinct), created.Load(), f.provider.charges.Load())
		}
		if ev := outboxEvents(t, f.db); len(ev) != 1 || ev[0].Type != events.PaymentSucceeded {
			t.Errorf("events = %+v", ev)
		}
	})
}

// TestTimeoutIsUnknownThenResolvedOnRetry: the provider charges but its
// answer is lost. The payment is UNKNOWN (no event, no guess) and answered
// payment_pending; the retry asks the provider and gets SUCCEEDED.
func TestTimeoutIsUnknownThenResolvedOnRetry(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, databaseURL string) {
		f := newFixture(t, databaseURL, Config{ProviderTimeout: 100 * time.Millisecond})
		ctx := context.Background()
		_, _, err := f.svc.Charge(ctx, chargeReq("o1", CardTimeout))
		e := errs.As(err)
		if e.Kind != errs.Unavailable || e.Code != "payment_pending" || e.Details["payment_id"] == nil {
			t.Fatalf("Charge = %v, want 503 payment_pending naming the payment", err)
		}
		id := e.Details["payment_id"].(string)
		if p, _ := f.store.Get(ctx, id); p.Status != StatusUnknown {
			t.Errorf("after timeout: %+v, want UNKNOWN", p)
		}
		if ev := outboxEvents(t, f.db); len(ev) != 0 {
			t.Errorf("events before the outcome is known: %+v", ev)
		}

		p, created, err := f.svc.Charge(ctx, chargeReq("o1", CardTimeout))
		if err != nil || created || p.ID != id || p.Status != StatusSucceeded {
			t.Fatalf("retry = %+v created=%v err=%v", p, created, err)
		}
		if f.provider.charges.Load() != 1 || f.provider.lookups.Load() != 1 {
			t.Errorf("provider: %d charges, %d lookups; want 1 and 1", f.provider.charges.Load(), f.provider.lookups.Load())
		}
		if ev := outboxEvents(t, f.db); len(ev) != 1 || ev[0].Type != events.PaymentSucceeded || ev[0].Data.PaymentID != id {
			t.Errorf("events = %+v", ev)
		}
	})
}

// TestUnknownStaysUnknownWhileProviderDown: no answer is no outcome; once
// the provider is back, the charge it never received is made, once.
func TestUnknownStaysUnknownWhileProviderDown(t *testing.T) {
	f := newFixture(t, sqliteURL(t), Config{ProviderTimeout: 50 * time.Millisecond})
	ctx := context.Background()
	f.provider.down.Store(true)
	for range 2 {
		if _, _, err := f.svc.Charge(ctx, chargeReq("o1", "tok_declined")); errs.As(err).Code != "payment_pending" {
			t.Fatalf("provider down: %v, want payment_pending", err)
		}
	}
	if n, err := f.svc.SettleUnknown(ctx); n != 0 || err == nil {
		t.Errorf("SettleUnknown while down = %d, %v; want 0 and an error", n, err)
	}
	p, _ := f.store.GetByOrder(ctx, "o1")
	if p.Status != StatusUnknown {
		t.Errorf("status while down = %s, want UNKNOWN", p.Status)
	}

	f.provider.down.Store(false)
	got, _, err := f.svc.Charge(ctx, chargeReq("o1", "tok_declined"))
	if err != nil || got.Status != StatusDeclined || got.ID != p.ID {
		t.Errorf("after recovery = %+v, %v", got, err)
	}
	// Lookup found nothing, so the charge was made now: once.
	if f.provider.charges.Load() != 1 {
		t.Errorf("provider charges = %d, want 1", f.provider.charges.Load())
	}
}

// TestStalePendingIsSettled: a PENDING payment whose process died before
// the charge's outcome was recorded is settled by the resolver pass.
func TestStalePendingIsSettled(t *testing.T) {
	f := newFixture(t, sqliteURL(t), Config{StaleAfter: time.Minute})
	ctx := context.Background()
	old := time.Now().UTC().Add(-time.Hour).Truncate(time.Microsecond)
	crashed := Payment{ID: "pay-crashed", OrderID: "o-crashed", UserID: "u1", Status: StatusPending, AmountCents: 100,
		Currency: "USD", CardToken: "tok_visa", CreatedAt: old, UpdatedAt: old}
	fresh := crashed
	fresh.ID, fresh.OrderID, fresh.CreatedAt, fresh.UpdatedAt = "pay-fresh", "o-fresh", time.Now().UTC(), time.Now().UTC()
	for _, p := range []Payment{crashed, fresh} {
		if err := f.store.Insert(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := f.svc.SettleUnknown(ctx); n != 1 || err != nil {
		t.Fatalf("SettleUnknown = %d, %v; want 1", n, err)
	}
	if p, _ := f.store.Get(ctx, "pay-crashed"); p.Status != StatusSucceeded {
		t.Errorf("crashed payment = %+v", p)
	}
	if p, _ := f.store.Get(ctx, "pay-fresh"); p.Status != StatusPending {
		t.Errorf("in-flight payment was touched: %+v", p)
	}
}

func TestGetOwnerOnly(t *testing.T) {
	f := newFixture(t, sqliteURL(t), Config{})
	ctx := context.Background()
	p, _, err := f.svc.Charge(ctx, chargeReq("o1", "tok_visa"))
	if err != nil {
		t.Fatal(err)
	}
	owner := auth.WithIdentity(ctx, auth.Identity{UserID: "u1", Role: auth.RoleCustomer})
	other := auth.WithIdentity(ctx, auth.Identity{UserID: "u2", Role: auth.RoleCustomer})
	if got, err := f.svc.Get(owner, p.ID); err != nil || got.ID != p.ID {
		t.Errorf("owner: %+v, %v", got, err)
	}
	tests := []struct {
		name string
		ctx  context.Context
		id   string
		want errs.Kind
	}{
		{"no identity", ctx, p.ID, errs.Unauthenticated},
		{"another user", other, p.ID, errs.NotFound},
		{"unknown id", owner, "nope", errs.NotFound},
		{"bad id", owner, "../x", errs.NotFound},
	}
	for _, tt := range tests {
		_, err := f.svc.Get(tt.ctx, tt.id)
		if e := errs.As(err); e.Kind != tt.want || (tt.want == errs.NotFound && e.Code != "payment_not_found") {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
}
