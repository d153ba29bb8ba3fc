package payment

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/events"
	"github.com/meshop/meshop/services/kit/instrument"
	"github.com/meshop/meshop/services/kit/kittest"
	"github.com/meshop/meshop/services/payment/client"
	paymentv1 "github.com/meshop/meshop/services/payment/proto/meshop/payment/v1"
)

// serveGRPC serves NewGRPCServer over svc in process and returns a
// connection to it.
func serveGRPC(t *testing.T, svc Service) *grpc.ClientConn {
	t.Helper()
	e := NewEndpoints(svc, slog.New(slog.DiscardHandler), instrument.NewMetrics(prometheus.NewRegistry(), "payment"))
	conn, _ := kittest.ServeGRPC(t, func(s grpc.ServiceRegistrar) { paymentv1.RegisterPaymentsServer(s, NewGRPCServer(e)) })
	return conn
}

func chargeOf(orderID, token string) client.Charge {
	return client.Charge{OrderID: orderID, UserID: "u1", AmountCents: 4800, Currency: "USD", CardToken: token}
}

func TestGRPCCharge(t *testing.T) {
	ctx := context.Background()
	store, db := openStore(t, sqliteURL(t))
	payments := client.New(serveGRPC(t, New(store, NewSimulator(db, 0), Config{ProviderTimeout: 100 * time.Millisecond})))

	paid, err := payments.Charge(ctx, chargeOf("o1", "tok_visa"))
	if err != nil || paid.Status != client.StatusSucceeded || paid.OrderID != "o1" || paid.UserID != "u1" ||
		paid.AmountCents != 4800 || paid.Currency != "USD" || paid.Reason != "" || paid.ID == "" || paid.CreatedAt.IsZero() {
		t.Fatalf("Charge = %+v, %v", paid, err)
	}
	if again, err := payments.Charge(ctx, chargeOf("o1", "tok_visa")); err != nil || again != paid {
		t.Errorf("repeat = %+v, %v; want the first payment %+v", again, err, paid)
	}
	if got, err := payments.GetPaymentByOrder(ctx, "o1"); err != nil || got != paid {
		t.Errorf("GetPaymentByOrder = %+v, %v; want %+v", got, err, paid)
	}
	// A decline or a provider failure is an answer, not an error.
	if p, err := payments.Charge(ctx, chargeOf("o2", "tok_declined")); err != nil || p.Status != client.StatusDeclined || p.Reason != "card_declined" {
		t.Errorf("declined = %+v, %v", p, err)
	}
	if p, err := payments.Charge(ctx, chargeOf("o3", "tok_error")); err != nil || p.Status != client.StatusFailed || p.Reason != "provider_error" {
		t.Errorf("provider error = %+v, %v", p, err)
	}

	// The lost answer: pending, then settled by the retry.
	_, err = payments.Charge(ctx, chargeOf("o4", "tok_timeout"))
	pending := errs.As(err)
	if pending.Kind != errs.Unavailable || errs.Reason(err) != client.ReasonPaymentPending || pending.Details["payment_id"] == nil {
		t.Fatalf("timed-out charge = %v, want Unavailable %s with the payment id", err, client.ReasonPaymentPending)
	}
	if p, err := payments.Charge(ctx, chargeOf("o4", "tok_timeout")); err != nil || p.Status != client.StatusSucceeded || p.ID != pending.Details["payment_id"] {
		t.Errorf("retry = %+v, %v", p, err)
	}

	tests := []struct {
		name       string
		call       func() error
		wantKind   errs.Kind
		wantReason string
	}{
		{"unknown card", func() error { _, err := payments.Charge(ctx, chargeOf("o5", "tok_stolen")); return err },
			errs.Validation, client.ReasonInvalidCardToken},
		{"other amount, same order", func() error {
			c := chargeOf("o1", "tok_visa")
			c.AmountCents = 4900
			_, err := payments.Charge(ctx, c)
			return err
		}, errs.Conflict, client.ReasonIdempotencyMismatch},
		{"no payment for the order", func() error { _, err := payments.GetPaymentByOrder(ctx, "o-none"); return err },
			errs.NotFound, client.ReasonPaymentNotFound},
		{"an order id no order has", func() error { _, err := payments.GetPaymentByOrder(ctx, "a b"); return err },
			errs.NotFound, client.ReasonPaymentNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if errs.KindOf(err) != tt.wantKind || errs.Reason(err) != tt.wantReason {
				t.Errorf("err = %v, want %v %s", err, tt.wantKind, tt.wantReason)
			}
		})
	}
	// The refused token left a FAILED payment, named in the details.
	if p, err := payments.GetPaymentByOrder(ctx, "o5"); err != nil || p.Status != client.StatusFailed || p.Reason != ReasonInvalidToken {
		t.Errorf("payment of o5 = %+v, %v", p, err)
	}
}

func TestGRPCRefund(t *testing.T) {
	ctx := context.Background()
	store, db := openStore(t, sqliteURL(t))
	payments := client.New(serveGRPC(t, New(store, NewSimulator(db, 0), Config{ProviderTimeout: 100 * time.Millisecond})))
	paid, err := payments.Charge(ctx, chargeOf("o1", "tok_visa"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := payments.Refund(ctx, "o1")
	if err != nil || r.ID == "" || r.PaymentID != paid.ID || r.OrderID != "o1" || r.UserID != "u1" ||
		r.AmountCents != 4800 || r.Currency != "USD" || r.CreatedAt.IsZero() {
		t.Fatalf("Refund = %+v, %v", r, err)
	}
	if again, err := payments.Refund(ctx, "o1"); err != nil || again != r {
		t.Errorf("repeat = %+v, %v; want %+v", again, err, r)
	}
	if p, err := payments.GetPaymentByOrder(ctx, "o1"); err != nil || p.Status != client.StatusSucceeded {
		t.Errorf("refunded payment = %+v, %v; want it SUCCEEDED still", p, err)
	}

	payments.Charge(ctx, chargeOf("o2", "tok_declined"))
	payments.Charge(ctx, chargeOf("o3", "tok_timeout"))
	payments.Charge(ctx, chargeOf("o3", "tok_timeout")) // settled: SUCCEEDED
	tests := []struct {
		name       string
		orderID    string
		wantCode   codes.Code
		wantReason string
	}{
		{"no payment", "o-none", codes.NotFound, client.ReasonPaymentNotFound},
		{"declined", "o2", codes.Aborted, client.ReasonNotRefundable},
		{"answer lost", "o3", codes.Unavailable, client.ReasonRefundPending},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := payments.Refund(ctx, tt.orderID)
			if errs.Reason(err) != tt.wantReason || errs.As(err).Kind.GRPCCode() != tt.wantCode {
				t.Errorf("err = %v, want %v %s", err, tt.wantCode, tt.wantReason)
			}
		})
	}
	if r, err := payments.Refund(ctx, "o3"); err != nil || r.OrderID != "o3" {
		t.Errorf("refund asked again = %+v, %v", r, err)
	}
}

// countingStore counts the calls that write.
type countingStore struct {
	Store
	writes int
}

func (s *countingStore) Insert(ctx context.Context, p Payment) error {
	s.writes++
	return s.Store.Insert(ctx, p)
}

func (s *countingStore) Settle(ctx context.Context, p Payment, ev events.Envelope) (bool, error) {
	s.writes++
	return s.Store.Settle(ctx, p, ev)
}

func (s *countingStore) MarkUnknown(ctx context.Context, id string, at time.Time) error {
	s.writes++
	return s.Store.MarkUnknown(ctx, id, at)
}

func TestGRPCInvalidArgument(t *testing.T) {
	sql, db := openStore(t, sqliteURL(t))
	store := &countingStore{Store: sql}
	provider := newFakeProvider(db, 0)
	raw := paymentv1.NewPaymentsClient(serveGRPC(t, New(store, provider, Config{})))
	charge := func(edit func(*paymentv1.ChargeRequest)) func(context.Context) error {
		req := &paymentv1.ChargeRequest{OrderId: "o1", UserId: "u1", AmountCents: 4800, Currency: "USD", CardToken: "tok_visa"}
		edit(req)
		return func(ctx context.Context) error { _, err := raw.Charge(ctx, req); return err }
	}
	tests := []struct {
		name       string
		call       func(context.Context) error
		wantReason string
	}{
		{"no fields", charge(func(r *paymentv1.ChargeRequest) { *r = paymentv1.ChargeRequest{} }), client.ReasonInvalidPayment},
		{"no order id", charge(func(r *paymentv1.ChargeRequest) { r.OrderId = "" }), client.ReasonInvalidPayment},
		{"no user id", charge(func(r *paymentv1.ChargeRequest) { r.UserId = "" }), client.ReasonInvalidPayment},
		{"zero amount", charge(func(r *paymentv1.ChargeRequest) { r.AmountCents = 0 }), client.ReasonInvalidPayment},
		{"negative amount", charge(func(r *paymentv1.ChargeRequest) { r.AmountCents = -5 }), client.ReasonInvalidPayment},
		{"amount over the limit", charge(func(r *paymentv1.ChargeRequest) { r.AmountCents = 100_000_000_01 }), client.ReasonInvalidPayment},
		{"no currency", charge(func(r *paymentv1.ChargeRequest) { r.Currency = "" }), client.ReasonInvalidPayment},
		{"not a currency code", charge(func(r *paymentv1.ChargeRequest) { r.Currency = "usd" }), client.ReasonInvalidPayment},
		{"no card token", charge(func(r *paymentv1.ChargeRequest) { r.CardToken = "" }), client.ReasonInvalidPayment},
		{"malformed card token", charge(func(r *paymentv1.ChargeRequest) { r.CardToken = "tok visa" }), client.ReasonInvalidCardToken},
		{"payment of no order", func(ctx context.Context) error {
			_, err := raw.GetPaymentByOrder(ctx, &paymentv1.GetPaymentByOrderRequest{})
			return err
		}, client.ReasonInvalidOrderID},
		{"refund of no order", func(ctx context.Context) error {
			_, err := raw.Refund(ctx, &paymentv1.RefundRequest{})
			return err
		}, client.ReasonInvalidOrderID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, reason := kittest.ErrorInfo(tt.call(context.Background()))
			if code != codes.InvalidArgument || reason != tt.wantReason {
				t.Errorf("got %v %q, want InvalidArgument %q", code, reason, tt.wantReason)
			}
		})
	}
	if store.writes != 0 || provider.charges.Load() != 0 {
		t.Errorf("the store saw %d writes and the provider %d charges; want none", store.writes, provider.charges.Load())
	}
}
