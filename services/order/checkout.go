package order

import (
	"context"
	"maps"
	"slices"
	"strings"
	"time"

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
func (s *service) checkout(ctx context.Context, o Order) (Order, error) {
	if o.Status != StatusPending {
		return o, outcome(o, nil)
	}
	res, err := s.Inventory.Reserve(ctx, o.ID, lines(o))
	if err != nil {
		if refusedBy(err, reserveRefusals) {
			return s.cancel(ctx, o, errs.As(err).Code, nil, err)
		}
		return o, pending(o, err)
	}
	if o.Step == StepCreated {
		if err := s.price(ctx, &o, res); err != nil {
			if errs.As(err).Code == ReasonMixedCurrencies {
				return s.cancel(ctx, o, ReasonMixedCurrencies, nil, err)
			}
			return o, err
		}
	}
	if err := s.Store.SetStep(ctx, o.ID, StepCharging); err != nil {
		return o, err
	}
	o.Step = StepCharging
	p, err := s.Payments.Charge(ctx, Charge{OrderID: o.ID, UserID: o.UserID, AmountCents: o.TotalCents,
		Currency: o.Currency, CardToken: o.CardToken})
	if err != nil {
		if refusedBy(err, chargeRefusals) { // e.g. an unknown card token: nothing was charged
			return s.cancel(ctx, o, errs.As(err).Code, nil, err)
		}
		return o, pending(o, err)
	}
	switch p.Status {
	case paymentclient.StatusSucceeded:
		if err := s.Inventory.Commit(ctx, o.ID); err != nil {
			return o, pending(o, err)
		}
		return s.finish(ctx, o, StatusConfirmed, &p.ID, nil, nil)
	case paymentclient.StatusDeclined:
		return s.cancel(ctx, o, ReasonPaymentDeclined, &p.ID, nil)
	default: // FAILED: the provider could not charge
		return s.cancel(ctx, o, ReasonPaymentFailed, &p.ID, nil)
	}
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
func (s *service) price(ctx context.Context, o *Order, res Reservation) error {
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
	if err := s.Store.SetPriced(ctx, o.ID, o.Items, total, o.Currency); err != nil {
		return err
	}
	o.Step = StepReserved
	return nil
}

// cancel releases the reservation (a no-op, recorded, if there was none)
// and cancels the order with reason, stored as cancel_reason: one of
// order's Cancel reasons, or the errs Code (lower snake case, as public
// error bodies show it) of cause, the dependency's refusal, if one caused it.
func (s *service) cancel(ctx context.Context, o Order, reason string, paymentID *string, cause error) (Order, error) {
	if err := s.Inventory.Release(ctx, o.ID); err != nil {
		return o, pending(o, err)
	}
	return s.finish(ctx, o, StatusCancelled, paymentID, &reason, cause)
}

// finish records the final status and its event. If another run finished
// the order first, its outcome wins.
func (s *service) finish(ctx context.Context, o Order, status string, paymentID, reason *string, cause error) (Order, error) {
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
	done, err := s.Store.Finish(ctx, o.ID, status, paymentID, reason, ev)
	if err != nil {
		return o, err
	}
	if !done {
		if final, err = s.Store.Get(ctx, o.ID); err != nil {
			return o, err
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
	})
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// Recoverer finishes checkouts that a crash or an unreachable dependency
// left PENDING: every Interval it resumes orders untouched for Grace. An
// order that never reached the charge step and is older than MaxAge is
// cancelled (stock released); one whose charge was requested is never
// cancelled without the payment's outcome.
type Recoverer struct {
	Deps     Deps
	Interval time.Duration
	Grace    time.Duration
	MaxAge   time.Duration
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

// resumeAll runs checkout again on every stale PENDING order.
func (r Recoverer) resumeAll(ctx context.Context, s *service) {
	orders, err := s.Store.Pending(ctx, s.now().Add(-r.Grace), 100)
	if err != nil {
		s.Logger.ErrorContext(ctx, "listing pending orders failed", "err", err)
		return
	}
	for _, o := range orders {
		var err error
		if o.Step != StepCharging && s.now().Sub(o.CreatedAt) > r.MaxAge {
			_, err = s.cancel(ctx, o, ReasonTimeout, nil, nil)
		} else {
			_, err = s.checkout(ctx, o)
		}
		if errs.Is(err, errs.Unavailable) {
			s.Logger.WarnContext(ctx, "pending checkout still blocked", "order", o.ID, "step", o.Step, "err", err)
		}
	}
}
