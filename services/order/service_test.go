package order

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/events"
	"github.com/meshop/meshop/services/kit/kittest"
	"github.com/meshop/meshop/services/kit/paging"
	paymentclient "github.com/meshop/meshop/services/payment/client"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var ada = Profile{ID: "u1", Email: "ada@example.com", Name: "Ada", Role: "customer"}

type harness struct {
	svc       Service
	deps      Deps
	store     *SQLStore
	inventory *fakeInventory
	payments  *fakePayments
}

func newHarness(t *testing.T, users Users) *harness {
	h := &harness{
		store:     openStore(t, "sqlite:"+filepath.Join(t.TempDir(), "order.db")),
		inventory: newFakeInventory(),
		payments:  newFakePayments(),
	}
	h.deps = Deps{Store: h.store, Users: users, Inventory: h.inventory, Payments: h.payments}
	h.svc = New(h.deps)
	return h
}

func withAda(t *testing.T) *harness {
	return newHarness(t, fakeUsers{profiles: map[string]Profile{"u1": ada}})
}

// withAdaOverGRPC is withAda with the fakes served over gRPC and reached
// through the adapters: what the fakes answer crosses the wire as the
// providers' answers do.
func withAdaOverGRPC(t *testing.T) *harness {
	h := withAda(t)
	up := serveFakes(t, fakeUsers{profiles: map[string]Profile{"u1": ada}}, h.inventory, h.payments)
	h.deps.Users, h.deps.Inventory, h.deps.Payments = up.users, up.inventory, up.payments
	h.svc = New(h.deps)
	return h
}

// transports are the two ways the tests reach the fakes.
var transports = []struct {
	name    string
	harness func(*testing.T) *harness
}{{"direct", withAda}, {"over gRPC", withAdaOverGRPC}}

func request(card string, lines ...ItemRequest) CreateRequest {
	if len(lines) == 0 {
		lines = []ItemRequest{{ProductID: "p1", Quantity: 2}}
	}
	return CreateRequest{Items: lines, Payment: PaymentInfo{CardToken: card}}
}

// outboxTypes lists the event types recorded for an order, in order.
func outboxTypes(t *testing.T, s *SQLStore, orderID string) []string {
	var out []string
	for _, ev := range kittest.Outbox[events.Envelope](t, s.db) {
		if ev.SubjectID == orderID {
			out = append(out, ev.Type)
		}
	}
	return out
}

// as is a context whose caller is userID, as the transport passes it on.
func as(userID string) context.Context {
	return auth.WithIdentity(context.Background(), auth.Identity{UserID: userID, Role: auth.RoleCustomer})
}

func TestCheckoutConfirms(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) { testCheckoutConfirms(t, tr.harness(t)) })
	}
}

func testCheckoutConfirms(t *testing.T, h *harness) {
	o, replayed, err := h.svc.Create(as("u1"), "k1", request("tok_visa", ItemRequest{"p1", 2}, ItemRequest{"p2", 1}))
	if err != nil || replayed {
		t.Fatalf("Create = %v, replayed %v", err, replayed)
	}
	if o.Status != StatusConfirmed || o.TotalCents != 2*350+1200 || o.PaymentID == nil || o.User == nil {
		t.Errorf("order = %+v", o)
	}
	if o.Items[0].UnitPriceCents != 350 || o.Items[1].UnitPriceCents != 1200 {
		t.Errorf("items not priced: %+v", o.Items)
	}
	if got := h.inventory.stockOf("p1"); got != 8 {
		t.Errorf("stock p1 = %d, want 8", got)
	}
	stored, _ := h.store.Get(context.Background(), o.ID)
	if stored.Status != StatusConfirmed || stored.TotalCents != o.TotalCents || stored.Step != StepDone {
		t.Errorf("stored = %+v", stored)
	}
	if got := outboxTypes(t, h.store, o.ID); len(got) != 2 || got[0] != "order.created" || got[1] != "order.confirmed" {
		t.Errorf("events = %v", got)
	}
}

func TestCheckoutRefusals(t *testing.T) {
	tests := []struct {
		name       string
		req        CreateRequest
		wantKind   errs.Kind
		wantCode   string
		wantReason string
	}{
		{"declined", request("tok_declined"), errs.PaymentDeclined, "payment_declined", "payment_declined"},
		{"provider error", request("tok_error"), errs.PaymentDeclined, "payment_failed", "payment_failed"},
		{"out of stock", request("tok_visa", ItemRequest{"p2", 5}), errs.Conflict, "out_of_stock", "out_of_stock"},
		{"unknown product", request("tok_visa", ItemRequest{"p-none", 1}), errs.Validation, "unknown_product", "unknown_product"},
		{"unknown card", request("tok_bogus"), errs.Validation, "invalid_card_token", "invalid_card_token"},
		{"two currencies", request("tok_visa", ItemRequest{"p1", 1}, ItemRequest{"p-eur", 1}), errs.Validation, "mixed_currencies", "mixed_currencies"},
	}
	for _, tr := range transports {
		for _, tt := range tests {
			t.Run(tr.name+"/"+tt.name, func(t *testing.T) {
				h := tr.harness(t)
				_, _, err := h.svc.Create(as("u1"), "k1", tt.req)
				e := errs.As(err)
				if e.Kind != tt.wantKind || e.Code != tt.wantCode || e.Details["order_id"] == nil {
					t.Fatalf("err = %+v, want %v %s with details.order_id", e, tt.wantKind, tt.wantCode)
				}
				o, err := h.store.Get(context.Background(), e.Details["order_id"].(string))
				if err != nil || o.Status != StatusCancelled || deref(o.CancelReason) != tt.wantReason {
					t.Errorf("order = %+v (%v), want CANCELLED %s", o, err, tt.wantReason)
				}
				if h.inventory.stockOf("p1") != 10 || h.inventory.stockOf("p2") != 1 {
					t.Errorf("stock not restored: p1=%d p2=%d", h.inventory.stockOf("p1"), h.inventory.stockOf("p2"))
				}
				if got := outboxTypes(t, h.store, o.ID); len(got) != 2 || got[1] != "order.cancelled" {
					t.Errorf("events = %v", got)
				}
				// A replay answers the same outcome.
				_, replayed, err := h.svc.Create(as("u1"), "k1", tt.req)
				if !replayed || errs.As(err).Kind != tt.wantKind {
					t.Errorf("replay: replayed=%v err=%v", replayed, err)
				}
			})
		}
	}
}

func TestPaymentDownThenRetryConfirmsOnce(t *testing.T) {
	h := withAda(t)
	h.payments.setDown(true)
	_, _, err := h.svc.Create(as("u1"), "k1", request("tok_visa"))
	e := errs.As(err)
	if e.Kind != errs.Unavailable || e.Code != "checkout_pending" {
		t.Fatalf("err = %v, want checkout_pending", err)
	}
	pendingOrder, _ := h.store.Get(context.Background(), e.Details["order_id"].(string))
	if pendingOrder.Status != StatusPending || pendingOrder.Step != StepCharging {
		t.Errorf("order = %s/%s, want PENDING/charging", pendingOrder.Status, pendingOrder.Step)
	}
	h.payments.setDown(false)
	o, replayed, err := h.svc.Create(as("u1"), "k1", request("tok_visa"))
	if err != nil || !replayed || o.Status != StatusConfirmed || o.ID != pendingOrder.ID {
		t.Fatalf("retry = %+v replayed=%v err=%v", o, replayed, err)
	}
	if h.payments.count() != 1 || h.inventory.stockOf("p1") != 8 {
		t.Errorf("charges = %d, stock = %d; want 1 and 8", h.payments.count(), h.inventory.stockOf("p1"))
	}
}

func TestRecovererFinishesStalledCheckouts(t *testing.T) {
	h := withAda(t)
	h.payments.setDown(true)
	_, _, err := h.svc.Create(as("u1"), "charge-stalled", request("tok_visa"))
	charging := errs.As(err).Details["order_id"].(string)
	h.inventory.setDown(true)
	_, _, err = h.svc.Create(as("u1"), "reserve-stalled", request("tok_visa", ItemRequest{"p2", 1}))
	created := errs.As(err).Details["order_id"].(string)
	h.payments.setDown(false)
	h.inventory.setDown(false)

	// A restarted instance: a fresh service over the same store, run with
	// no grace and an age limit every order is past.
	r := Recoverer{Deps: h.deps, Interval: time.Hour, Grace: -time.Hour, MaxAge: -time.Hour}
	r.resumeAll(context.Background(), New(h.deps).(*service))

	if o, _ := h.store.Get(context.Background(), charging); o.Status != StatusConfirmed {
		t.Errorf("order stalled at charging = %s, want CONFIRMED (never cancelled without the payment's outcome)", o.Status)
	}
	if o, _ := h.store.Get(context.Background(), created); o.Status != StatusCancelled || deref(o.CancelReason) != ReasonTimeout {
		t.Errorf("order stalled before reserving = %s %s, want CANCELLED checkout_timeout", o.Status, deref(o.CancelReason))
	}
	if h.payments.count() != 1 || h.inventory.stockOf("p2") != 1 {
		t.Errorf("charges = %d, p2 stock = %d; want 1 and 1", h.payments.count(), h.inventory.stockOf("p2"))
	}
}

func TestUserDownDegrades(t *testing.T) {
	h := newHarness(t, fakeUsers{err: errs.New(errs.Unavailable, "upstream_timeout", "user did not answer in time")})
	o, _, err := h.svc.Create(as("u1"), "k1", request("tok_visa"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := h.svc.Get(as("u1"), o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.User != nil || len(got.Degraded) != 1 || got.Degraded[0] != "user" {
		t.Errorf("user = %v, degraded = %v; want nil and [user]", got.User, got.Degraded)
	}
	if _, err := h.svc.Get(as("u2"), o.ID); !errs.Is(err, errs.NotFound) {
		t.Errorf("another user's order: %v, want NotFound", err)
	}
	if _, err := h.svc.Get(context.Background(), o.ID); !errs.Is(err, errs.Unauthenticated) {
		t.Errorf("no caller: %v, want Unauthenticated", err)
	}
}

func TestIdempotencyMismatch(t *testing.T) {
	h := withAda(t)
	if _, _, err := h.svc.Create(as("u1"), "k1", request("tok_visa")); err != nil {
		t.Fatal(err)
	}
	_, _, err := h.svc.Create(as("u1"), "k1", request("tok_visa", ItemRequest{"p1", 3}))
	if e := errs.As(err); e.Kind != errs.Conflict || e.Code != "idempotency_mismatch" {
		t.Errorf("different body, same key: %v", err)
	}
}

// TestConcurrentSameKey sends one checkout 20 times at once: one order, one charge.
func TestConcurrentSameKey(t *testing.T) {
	h := withAda(t)
	var wg sync.WaitGroup
	ids := make(chan string, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o, _, err := h.svc.Create(as("u1"), "same-key", request("tok_visa"))
			if err != nil {
				t.Error(err)
				return
			}
			ids <- o.ID
		}()
	}
	wg.Wait()
	close(ids)
	distinct := map[string]bool{}
	for id := range ids {
		distinct[id] = true
	}
	if len(distinct) != 1 || h.payments.count() != 1 || h.inventory.stockOf("p1") != 8 {
		t.Errorf("orders = %d, charges = %d, stock = %d; want 1, 1, 8", len(distinct), h.payments.count(), h.inventory.stockOf("p1"))
	}
}

func TestListPages(t *testing.T) {
	h := withAda(t)
	for _, key := range []string{"a", "b", "c"} {
		if _, _, err := h.svc.Create(as("u1"), key, request("tok_visa", ItemRequest{"p1", 1})); err != nil {
			t.Fatal(err)
		}
	}
	first, err := h.svc.List(as("u1"), paging.Request{Limit: 2})
	if err != nil || len(first.Items) != 2 || first.NextCursor == "" || first.Items[0].User == nil {
		t.Fatalf("page 1 = %+v, %v", first, err)
	}
	rest, err := h.svc.List(as("u1"), paging.Request{Limit: 2, After: first.Items[1].ID})
	if err != nil || len(rest.Items) != 1 || rest.NextCursor != "" || rest.Items[0].ID == first.Items[1].ID {
		t.Errorf("page 2 = %+v, %v", rest, err)
	}
	if others, _ := h.svc.List(as("u2"), paging.Request{Limit: 10}); len(others.Items) != 0 {
		t.Errorf("u2 sees %d of u1's orders", len(others.Items))
	}
}

func TestValidation(t *testing.T) {
	tests := []struct {
		name  string
		req   CreateRequest
		field string
	}{
		{"no items", CreateRequest{Payment: PaymentInfo{CardToken: "tok_visa"}}, "items"},
		{"negative quantity", request("tok_visa", ItemRequest{"p1", -1}), "items[0].quantity"},
		{"zero quantity", request("tok_visa", ItemRequest{"p1", 0}), "items[0].quantity"},
		{"missing product", request("tok_visa", ItemRequest{"", 1}), "items[0].product_id"},
		{"duplicate product", request("tok_visa", ItemRequest{"p1", 1}, ItemRequest{"p1", 1}), "items[1].product_id"},
		{"no card", request("", ItemRequest{"p1", 1}), "payment.card_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := errs.As(validate(tt.req))
			if e.Kind != errs.Validation || e.Details[tt.field] == nil {
				t.Errorf("validate = %+v, want a problem with %s", e, tt.field)
			}
		})
	}
}

// TestMeshErrorsNeverCancel: what the mesh or the network answers for
// payment (the statuses Envoy and gRPC make themselves: no route, no
// healthy upstream, a timeout, an RBAC denial, a reset) never cancels a
// checkout: the order stays PENDING at the charge, and a retry once
// payment answers again confirms it with one charge.
func TestMeshErrorsNeverCancel(t *testing.T) {
	for _, st := range []*status.Status{
		status.New(codes.Unavailable, "no healthy upstream"),
		status.New(codes.Unimplemented, "route not found"),
		status.New(codes.NotFound, "not found"),
		status.New(codes.DeadlineExceeded, "upstream request timeout"),
		status.New(codes.PermissionDenied, "RBAC: access denied"),
		status.New(codes.Internal, "upstream connect error or disconnect/reset before headers"),
		status.New(codes.InvalidArgument, "malformed request at the proxy"),
	} {
		t.Run(st.Code().String(), func(t *testing.T) {
			h := withAda(t)
			h.payments.mu.Lock()
			h.payments.fail = errs.FromGRPC(st.Err()) // as the client package decodes it
			h.payments.mu.Unlock()
			_, _, err := h.svc.Create(as("u1"), "k1", request("tok_visa"))
			if e := errs.As(err); e.Code != "checkout_pending" {
				t.Fatalf("err = %v, want checkout_pending", err)
			}
			o, _ := h.store.Get(context.Background(), errs.As(err).Details["order_id"].(string))
			if o.Status != StatusPending || o.Step != StepCharging {
				t.Fatalf("order = %s/%s, want PENDING/charging", o.Status, o.Step)
			}
			h.payments.mu.Lock()
			h.payments.fail = nil
			h.payments.mu.Unlock()
			o, _, err = h.svc.Create(as("u1"), "k1", request("tok_visa"))
			if err != nil || o.Status != StatusConfirmed || h.payments.count() != 1 {
				t.Errorf("retry = %s (%v), %d charges; want CONFIRMED with one charge", o.Status, err, h.payments.count())
			}
		})
	}
}

func TestOnlyTheProvidersReasonsRefuse(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{errs.New(errs.Validation, paymentclient.ReasonInvalidCardToken, "unknown card token"), true},
		{errs.New(errs.Validation, paymentclient.ReasonInvalidPayment, "bad amount"), true},
		{errs.New(errs.NotFound, paymentclient.ReasonPaymentNotFound, "no payment"), false},
		{errs.New(errs.Conflict, paymentclient.ReasonIdempotencyMismatch, "other body"), false},
		{errs.New(errs.NotFound, "not_found", "a 404 from somewhere"), false},
		{errs.FromGRPC(status.Error(codes.NotFound, "route not found")), false},
		{errs.FromGRPC(status.Error(codes.InvalidArgument, "bad")), false},
	} {
		if got := refusedBy(tc.err, chargeRefusals); got != tc.want {
			t.Errorf("refusedBy(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestIdempotencyKeysExpire: within the key's TTL a repeat replays the
// order; after it, the same key and body are a new order (and a charge).
func TestIdempotencyKeysExpire(t *testing.T) {
	h := withAda(t)
	svc := h.svc.(*service)
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	svc.now = func() time.Time { return now }
	first, _, err := svc.Create(as("u1"), "k1", request("tok_visa"))
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(DefaultKeyTTL - time.Minute)
	again, replayed, err := svc.Create(as("u1"), "k1", request("tok_visa"))
	if err != nil || !replayed || again.ID != first.ID {
		t.Fatalf("within the TTL: %s replayed=%v %v, want a replay of %s", again.ID, replayed, err, first.ID)
	}
	now = now.Add(2 * time.Minute)
	later, replayed, err := svc.Create(as("u1"), "k1", request("tok_visa"))
	if err != nil || replayed || later.ID == first.ID || later.Status != StatusConfirmed {
		t.Fatalf("after the TTL: %s %s replayed=%v %v, want a new confirmed order", later.ID, later.Status, replayed, err)
	}
	if h.payments.count() != 2 {
		t.Errorf("charges = %d, want 2 (one per order)", h.payments.count())
	}
}

// TestRecoverersAndRetriesRace: three recoverers (three order instances)
// and a client retrying every key, all at once, over 200 checkouts whose
// payment was down: each order ends CONFIRMED with exactly one charge, and
// the stock is taken once per order.
func TestRecoverersAndRetriesRace(t *testing.T) {
	const n = 200
	h := withAda(t)
	h.inventory.mu.Lock()
	h.inventory.stock["p1"] = 1000
	h.inventory.mu.Unlock()
	h.payments.setDown(true)
	for i := range n {
		if _, _, err := h.svc.Create(as("u1"), fmt.Sprint("key-", i), request("tok_visa")); errs.As(err).Code != "checkout_pending" {
			t.Fatalf("checkout %d with payment down: %v", i, err)
		}
	}
	h.payments.setDown(false)

	ctx := context.Background()
	var wg sync.WaitGroup
	for range 3 {
		r := Recoverer{Deps: h.deps, Interval: time.Hour, Grace: -time.Hour, MaxAge: time.Hour, Budget: 100, Backoff: time.Millisecond}
		s := New(h.deps).(*service)
		wg.Go(func() {
			for range 5 {
				r.resumeAll(ctx, s)
			}
		})
	}
	wg.Go(func() {
		for i := range n {
			h.svc.Create(as("u1"), fmt.Sprint("key-", i), request("tok_visa"))
		}
	})
	wg.Wait()
	// Whatever is left (a run that found every order claimed) finishes now.
	r := Recoverer{Deps: h.deps, Interval: time.Hour, Grace: -time.Hour, MaxAge: time.Hour}
	r.resumeAll(ctx, New(h.deps).(*service))

	confirmed := 0
	for i := range n {
		o, _, err := h.svc.Create(as("u1"), fmt.Sprint("key-", i), request("tok_visa"))
		if err == nil && o.Status == StatusConfirmed {
			confirmed++
		}
	}
	if confirmed != n || h.payments.count() != n || h.inventory.stockOf("p1") != 1000-2*n {
		t.Errorf("confirmed %d, charges %d, stock %d; want %d, %d, %d", confirmed, h.payments.count(), h.inventory.stockOf("p1"), n, n, 1000-2*n)
	}
}

// TestAnOrderThatNeverGetsThroughIsParked: after its attempt budget, an
// order whose payment stays unreachable is parked (counted, logged), no
// longer picked by recovery, and never cancelled.
func TestAnOrderThatNeverGetsThroughIsParked(t *testing.T) {
	h := withAda(t)
	h.payments.setDown(true)
	_, _, err := h.svc.Create(as("u1"), "k1", request("tok_visa"))
	id := errs.As(err).Details["order_id"].(string)
	parked := prometheus.NewCounter(prometheus.CounterOpts{Name: "parked"})
	r := Recoverer{Deps: h.deps, Interval: time.Hour, Grace: -time.Hour, MaxAge: -time.Hour, Budget: 3, Backoff: time.Second, Parked: parked}
	s := New(h.deps).(*service)
	now := time.Now()
	for range 3 {
		s.now = func() time.Time { return now }
		r.resumeAll(context.Background(), s)
		now = now.Add(time.Hour) // past any backoff
	}
	if got := testutil.ToFloat64(parked); got != 1 {
		t.Errorf("parked = %v, want 1", got)
	}
	if due, _ := h.store.Pending(context.Background(), now.Add(time.Hour), now.Add(time.Hour), 10); len(due) != 0 {
		t.Errorf("a parked order is still picked: %+v", due)
	}
	if o, _ := h.store.Get(context.Background(), id); o.Status != StatusPending || o.Attempts != 3 {
		t.Errorf("parked order = %s after %d attempts, want PENDING after 3", o.Status, o.Attempts)
	}
}

// TestAChargeWhoseStockIsGoneIsRefundedBeforeTheOrderIsCancelled: the
// charge succeeded but product no longer holds the reservation: payment
// refunds the charge (once, even when the first refund could not reach
// payment), then the order is CANCELLED reservation_lost, its event and
// its answer saying the customer was refunded.
func TestAChargeWhoseStockIsGoneIsRefundedBeforeTheOrderIsCancelled(t *testing.T) {
	h := withAda(t)
	h.inventory.mu.Lock()
	h.inventory.lost = true
	h.inventory.mu.Unlock()
	h.payments.mu.Lock()
	h.payments.refundDown = true
	h.payments.mu.Unlock()
	_, _, err := h.svc.Create(as("u1"), "k1", request("tok_visa"))
	if errs.As(err).Code != "checkout_pending" {
		t.Fatalf("refund unreachable: %v, want checkout_pending", err)
	}
	id := errs.As(err).Details["order_id"].(string)
	if o, _ := h.store.Get(context.Background(), id); o.Status != StatusPending || o.Step != StepRefunding {
		t.Fatalf("order = %s/%s, want PENDING/refunding (a crash resumes the refund)", o.Status, o.Step)
	}
	h.payments.mu.Lock()
	h.payments.refundDown = false
	h.payments.mu.Unlock()
	// The recoverer (or the client's retry) finishes the compensation.
	r := Recoverer{Deps: h.deps, Interval: time.Hour, Grace: -time.Hour, MaxAge: time.Hour}
	r.resumeAll(context.Background(), New(h.deps).(*service))
	o, _, err := h.svc.Create(as("u1"), "k1", request("tok_visa"))
	if errs.As(err).Code != ReasonReservationLost || o.Status != StatusCancelled || !o.Refunded {
		t.Fatalf("order = %s refunded=%v, err %v; want CANCELLED, refunded, reservation_lost", o.Status, o.Refunded, err)
	}
	h.payments.mu.Lock()
	refunds := h.payments.refunds[id]
	h.payments.mu.Unlock()
	if refunds != 1 || h.payments.count() != 1 {
		t.Errorf("charges %d, refunds %d; want 1 and 1", h.payments.count(), refunds)
	}
	if got := outboxTypes(t, h.store, id); len(got) != 2 || got[1] != "order.cancelled" {
		t.Errorf("events = %v", got)
	}
	for _, ev := range kittest.Outbox[events.Envelope](t, h.store.db) {
		if ev.SubjectID == id && ev.Type == "order.cancelled" && !strings.Contains(string(ev.Data), `"refunded":true`) {
			t.Errorf("order.cancelled does not say the customer was refunded: %s", ev.Data)
		}
	}
}
