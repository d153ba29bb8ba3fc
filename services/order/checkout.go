package order

import (
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/events"
	paymentclient "github.com/meshop/meshop/services/payment/client"
	productclient "github.com/meshop/meshop/services/product/client"
)

// Checkout is a saga run by the order service, synchronously, through the
// mesh. Each remote step is idempotent on the order id and each local step
// is recorded, so running checkout again on the same order (a client's
// retry, or the recoverer after a crash) continues it instead of redoing it:
//
//	PENDING/created ──reserve──▶ reserved ──charge──▶ charging ──SUCCEEDED──▶ commit ──▶ CONFIRMED
//	      │ out of stock,              │ DECLINED, FAILED
//	      │ unknown product            ▼
//	      └──────────────────────▶ release ──▶ CANCELLED (reason)
//
// A dependency that cannot be reached leaves the order PENDING at its step:
// the caller gets 503 checkout_pending and the recoverer finishes it.
//
// A run holds the order's claim (a lease in the orders table, taken by
// compare-and-set) from start to end, and every transition is a
// compare-and-set on the step it expects by the claim's holder: with any
// number of order instances, client retries and recoverers, one run at a
// time moves an order, and a run that lost its claim stops.
func (s *service) checkout(ctx context.Context, o Order) (Order, error) {
	return s.claimed(ctx, o, s.runCheckout)
}

// claimed runs f on order o while holding its claim, which it releases
// afterwards. An order another run holds answers checkout_pending at once
// (that run finishes it).
func (s *service) claimed(ctx context.Context, o Order, f func(ctx context.Context, o Order, owner string) (Order, error)) (Order, error) {
	if o.Status != StatusPending {
		return o, outcome(o, nil)
	}
	owner := uuid.NewString()
	now := s.now()
	ok, err := s.Store.Claim(ctx, o.ID, owner, now.Add(s.Lease), now)
	if err != nil {
		return o, err
	}
	if !ok {
		return s.awaitOther(ctx, o)
	}
	defer func() {
		if err := s.Store.Release(context.WithoutCancel(ctx), o.ID, owner); err != nil {
			s.Logger.WarnContext(ctx, "releasing an order's claim failed; it expires with its lease", "order", o.ID, "err", err)
		}
	}()
	return f(ctx, o, owner)
}

// awaitOther waits a little for the run that holds o's claim (a client's
// concurrent retry of the same key, say) and answers its outcome, or
// checkout_pending if it takes longer.
func (s *service) awaitOther(ctx context.Context, o Order) (Order, error) {
	wait, cancel := context.WithTimeout(ctx, awaitOtherRun)
	defer cancel()
	for {
		if cur, err := s.Store.Get(wait, o.ID); err == nil && cur.Status != StatusPending {
			return cur, outcome(cur, nil)
		}
		select {
		case <-wait.Done():
			return o, pending(o, errClaimLost)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// awaitOtherRun bounds how long a run waits for the run holding an
// order's claim.
const awaitOtherRun = 5 * time.Second

// runCheckout is one run of the saga by the holder of o's claim.
func (s *service) runCheckout(ctx context.Context, o Order, owner string) (Order, error) {
	if o.Step == StepRefunding { // a run stopped mid-compensation: finish it
		return s.refundAndCancel(ctx, o, owner, o.PaymentID)
	}
	res, err := s.Inventory.Reserve(ctx, o.ID, lines(o))
	if err != nil {
		if refusedBy(err, reserveRefusals) {
			return s.cancel(ctx, o, owner, errs.As(err).Code, nil, err)
		}
		return o, pending(o, err)
	}
	if o.Step == StepCreated {
		if err := s.price(ctx, &o, owner, res); err != nil {
			if errs.As(err).Code == ReasonMixedCurrencies {
				return s.cancel(ctx, o, owner, ReasonMixedCurrencies, nil, err)
			}
			return o, pendingIfLost(o, err)
		}
		crashAt("reserved")
	}
	if o.Step != StepCharging {
		if err := s.Store.SetStep(ctx, o.ID, owner, o.Step, StepCharging); err != nil {
			return o, pendingIfLost(o, err)
		}
		o.Step = StepCharging
	}
	crashAt("charging")
	p, err := s.Payments.Charge(ctx, Charge{OrderID: o.ID, UserID: o.UserID, AmountCents: o.TotalCents,
		Currency: o.Currency, CardToken: o.CardToken})
	if err != nil {
		if refusedBy(err, chargeRefusals) { // e.g. an unknown card token: nothing was charged
			return s.cancel(ctx, o, owner, errs.As(err).Code, nil, err)
		}
		return o, pending(o, err)
	}
	crashAt("charged")
	switch p.Status {
	case paymentclient.StatusSucceeded:
		if err := s.Inventory.Commit(ctx, o.ID); err != nil {
			if refusedBy(err, commitRefusals) { // charged, but the stock is gone
				return s.refundAndCancel(ctx, o, owner, &p.ID)
			}
			return o, pending(o, err)
		}
		crashAt("committed")
		return s.finish(ctx, o, owner, StatusConfirmed, &p.ID, nil, nil)
	case paymentclient.StatusDeclined:
		return s.cancel(ctx, o, owner, ReasonPaymentDeclined, &p.ID, nil)
	default: // FAILED: the provider could not charge
		return s.cancel(ctx, o, owner, ReasonPaymentFailed, &p.ID, nil)
	}
}

// pendingIfLost answers checkout_pending for a run that lost its claim
// (another run finishes the order), and err otherwise.
func pendingIfLost(o Order, err error) error {
	if errors.Is(err, errClaimLost) {
		return pending(o, err)
	}
	return err
}

// The answers by which product and payment themselves refuse a step for
// good, as their client packages name them: only these cancel an order.
// Anything else, above all what the mesh or the network produced (no
// route, no healthy upstream, a timeout, an RBAC denial: statuses without
// the provider's error reason), leaves the order pending, to be retried.
var (
	reserveRefusals = []string{productclient.ReasonOutOfStock, productclient.ReasonUnknownProduct,
		productclient.ReasonInvalidReservation, productclient.ReasonReservationReleased}
	chargeRefusals = []string{paymentclient.ReasonInvalidCardToken, paymentclient.ReasonInvalidPayment}
	commitRefusals = []string{productclient.ReasonReservationReleased, productclient.ReasonReservationNotFound}
	// nothingToRefund: payment's answers that no charge exists to pay back.
	nothingToRefund = []string{paymentclient.ReasonPaymentNotFound, paymentclient.ReasonNotRefundable}
)

// refusedBy reports whether err is one of the provider's own refusals:
// its error reason (google.rpc.ErrorInfo of Meshop's domain, which only
// a Meshop service writes) is one of reasons.
func refusedBy(err error, reasons []string) bool {
	e := errs.As(err)
	return e.Code != "" && slices.Contains(reasons, errs.Reason(e))
}

func lines(o Order) []ItemRequest {
	out := make([]ItemRequest, len(o.Items))
	for i, it := range o.Items {
		out[i] = ItemRequest{ProductID: it.ProductID, Quantity: it.Quantity}
	}
	return out
}

// price records the reserved prices and the total, in the one currency
// of every item: an order is paid in one currency (a cart of several is
// refused, ReasonMixedCurrencies, and cancelled).
func (s *service) price(ctx context.Context, o *Order, owner string, res Reservation) error {
	prices := map[string]ReservationItem{}
	currencies := map[string]bool{}
	for _, it := range res.Items {
		prices[it.ProductID] = it
		if it.Currency != "" {
			currencies[it.Currency] = true
		}
	}
	if len(currencies) > 1 {
		return errs.Newf(errs.Validation, ReasonMixedCurrencies,
			"an order is paid in one currency; these products are priced in %s", strings.Join(slices.Sorted(maps.Keys(currencies)), " and "))
	}
	var total int64
	for i, it := range o.Items {
		p, ok := prices[it.ProductID]
		if !ok {
			return errs.Newf(errs.Internal, "bad_reservation", "reservation lacks product %s", it.ProductID)
		}
		o.Items[i].UnitPriceCents = p.UnitPriceCents
		total += p.UnitPriceCents * int64(it.Quantity)
		if p.Currency != "" {
			o.Currency = p.Currency
		}
	}
	o.TotalCents = total
	if err := s.Store.SetPriced(ctx, o.ID, owner, o.Items, total, o.Currency); err != nil {
		return err
	}
	o.Step = StepReserved
	return nil
}

// refundAndCancel is the compensation of a charge whose order cannot be
// fulfilled: the order moves to StepRefunding (so a crash resumes the
// refund, never skips it), payment refunds the charge (idempotent on the
// order id; retried while payment cannot say), then the order is
// cancelled, its event saying the customer was refunded.
func (s *service) refundAndCancel(ctx context.Context, o Order, owner string, paymentID *string) (Order, error) {
	if o.Step != StepRefunding {
		if err := s.Store.SetStep(ctx, o.ID, owner, o.Step, StepRefunding); err != nil {
			return o, pendingIfLost(o, err)
		}
		o.Step = StepRefunding
	}
	if err := s.Payments.Refund(ctx, o.ID); err != nil && !refusedBy(err, nothingToRefund) {
		return o, pending(o, err)
	}
	o.Refunded = true
	if err := s.Inventory.Release(ctx, o.ID); err != nil && !refusedBy(err, commitRefusals) {
		return o, pending(o, err)
	}
	reason := ReasonReservationLost
	return s.finish(ctx, o, owner, StatusCancelled, paymentID, &reason, nil)
}

// cancel releases the reservation (a no-op, recorded, if there was none)
// and cancels the order with reason, stored as cancel_reason: one of
// order's Cancel reasons, or the errs Code (lower snake case, as public
// error bodies show it) of cause, the dependency's refusal, if one caused it.
func (s *service) cancel(ctx context.Context, o Order, owner, reason string, paymentID *string, cause error) (Order, error) {
	if err := s.Inventory.Release(ctx, o.ID); err != nil {
		return o, pending(o, err)
	}
	return s.finish(ctx, o, owner, StatusCancelled, paymentID, &reason, cause)
}

// finish records the final status and its event. If another run finished
// the order first, its outcome wins.
func (s *service) finish(ctx context.Context, o Order, owner, status string, paymentID, reason *string, cause error) (Order, error) {
	final := o
	final.Status, final.PaymentID, final.CancelReason, final.Step = status, paymentID, reason, StepDone
	typ := events.OrderConfirmed
	if status == StatusCancelled {
		typ = events.OrderCancelled
	}
	ev, err := orderEvent(typ, final)
	if err != nil {
		return o, err
	}
	done, err := s.Store.Finish(ctx, o.ID, owner, status, paymentID, reason, ev)
	if err != nil {
		return o, err
	}
	crashAt("finished")
	if !done {
		if final, err = s.Store.Get(ctx, o.ID); err != nil {
			return o, err
		}
		if final.Status == StatusPending { // the claim was lost mid-run
			return o, pending(o, errClaimLost)
		}
		cause = nil
	}
	s.Logger.InfoContext(ctx, "checkout finished", "order", o.ID, "status", final.Status, "reason", deref(final.CancelReason))
	return final, outcome(final, cause)
}

// outcome is the error a finished order answers with: nil when CONFIRMED;
// for a CANCELLED one, the refusal that caused it (with the order id), or,
// on a replay, the same kind and code rebuilt from the stored reason.
func outcome(o Order, cause error) error {
	if o.Status != StatusCancelled {
		return nil
	}
	details := map[string]any{"order_id": o.ID}
	if o.PaymentID != nil {
		details["payment_id"] = *o.PaymentID
	}
	if cause != nil {
		return errs.As(cause).WithDetails(details)
	}
	reason := deref(o.CancelReason)
	kind, ok := reasonKinds[reason]
	if !ok {
		kind = errs.Conflict
	}
	return errs.Newf(kind, reason, "the order is cancelled: %s", strings.ReplaceAll(reason, "_", " ")).WithDetails(details)
}

// reasonKinds are the error kinds of the cancel reasons, keyed by the
// stored cancel_reason (lower snake case): order's own reasons, and the
// errs Code of a provider's refusal, which is its client Reason constant
// (upper snake case) lower-cased.
var reasonKinds = map[string]errs.Kind{
	ReasonPaymentDeclined: errs.PaymentDeclined,
	ReasonPaymentFailed:   errs.PaymentDeclined,
	ReasonTimeout:         errs.Unavailable,
	ReasonMixedCurrencies: errs.Validation,
	ReasonReservationLost: errs.Conflict,

	strings.ToLower(productclient.ReasonOutOfStock):       errs.Conflict,
	strings.ToLower(productclient.ReasonUnknownProduct):   errs.Validation,
	strings.ToLower(paymentclient.ReasonInvalidCardToken): errs.Validation,
}

// pending is the answer while a dependency is unreachable mid-checkout.
func pending(o Order, cause error) error {
	return errs.Wrap(errs.Unavailable, "checkout_pending",
		"checkout could not finish now; the order stays PENDING and is completed in the background", cause).
		WithDetails(map[string]any{"order_id": o.ID, "dependency": errs.As(cause).Details["service"]})
}

// orderEvent is the event reporting o's state.
func orderEvent(typ string, o Order) (events.Envelope, error) {
	return events.New("order", typ, o.ID, map[string]any{
		"order_id": o.ID, "user_id": o.UserID, "status": o.Status, "items": o.Items,
		"total_cents": o.TotalCents, "currency": o.Currency, "payment_id": o.PaymentID, "cancel_reason": o.CancelReason,
		"refunded": o.Refunded,
	})
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// Recoverer finishes checkouts that a crash or an unreachable dependency
// left PENDING: every Interval it resumes the orders untouched for Grace
// and due for another attempt, each under its claim (so any number of
// recoverers and order instances may run). An order that never reached
// the charge step and is older than MaxAge is cancelled (stock
// released); one whose charge was requested is never cancelled without
// the payment's outcome. A run that cannot finish schedules the next
// attempt with exponential backoff and jitter (Backoff doubling to
// BackoffMax); after Budget attempts the order is parked for an operator,
// with a log line and Parked counted.
type Recoverer struct {
	Deps       Deps
	Interval   time.Duration
	Grace      time.Duration
	MaxAge     time.Duration
	Budget     int
	Backoff    time.Duration
	BackoffMax time.Duration
	// Parked counts the orders parked (nil: not counted).
	Parked prometheus.Counter
}

// Run resumes pending checkouts until ctx ends. It is an app.Actor.
func (r Recoverer) Run(ctx context.Context) error {
	s := New(r.Deps).(*service)
	tick := time.NewTicker(r.Interval)
	defer tick.Stop()
	for {
		r.resumeAll(ctx, s)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// resumeAll runs checkout again on every due PENDING order.
func (r Recoverer) resumeAll(ctx context.Context, s *service) {
	now := s.now()
	orders, err := s.Store.Pending(ctx, now.Add(-r.Grace), now, 100)
	if err != nil {
		s.Logger.ErrorContext(ctx, "listing pending orders failed", "err", err)
		return
	}
	for _, o := range orders {
		var err error
		if o.Step != StepCharging && s.now().Sub(o.CreatedAt) > r.MaxAge {
			_, err = s.claimed(ctx, o, func(ctx context.Context, o Order, owner string) (Order, error) {
				return s.cancel(ctx, o, owner, ReasonTimeout, nil, nil)
			})
		} else {
			_, err = s.checkout(ctx, o)
		}
		if errs.As(err).Code == "checkout_pending" && !errors.Is(err, errClaimLost) {
			r.retryLater(ctx, s, o, err)
		}
	}
}

// retryLater records a failed attempt of o and when to try again, or
// parks o once its attempts reach the budget.
func (r Recoverer) retryLater(ctx context.Context, s *service, o Order, cause error) {
	attempts := o.Attempts + 1
	if err := s.Store.Retry(ctx, o.ID, s.now().Add(r.backoff(attempts))); err != nil {
		s.Logger.ErrorContext(ctx, "recording a checkout attempt failed", "order", o.ID, "err", err)
		return
	}
	if r.Budget <= 0 || attempts < r.Budget {
		s.Logger.WarnContext(ctx, "pending checkout still blocked", "order", o.ID, "step", o.Step, "attempts", attempts, "err", cause)
		return
	}
	if err := s.Store.Park(ctx, o.ID, s.now()); err != nil {
		s.Logger.ErrorContext(ctx, "parking an order failed", "order", o.ID, "err", err)
		return
	}
	if r.Parked != nil {
		r.Parked.Inc()
	}
	s.Logger.ErrorContext(ctx, "checkout parked for an operator: its attempt budget is spent", "order", o.ID, "step", o.Step,
		"attempts", attempts, "err", cause)
}

// backoff is the wait before attempt attempts+1: Backoff doubled per
// attempt up to BackoffMax, then jittered to between half and one and a
// half of it, so recoverers do not retry in step.
func (r Recoverer) backoff(attempts int) time.Duration {
	d := max(r.Backoff, time.Second)
	for i := 1; i < attempts && (r.BackoffMax <= 0 || d < r.BackoffMax); i++ {
		d *= 2
	}
	if r.BackoffMax > 0 {
		d = min(d, r.BackoffMax)
	}
	return d/2 + time.Duration(rand.Int64N(int64(d)))
}
