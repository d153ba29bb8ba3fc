package order

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshop/meshop/services/kit/errs"
	paymentclient "github.com/meshop/meshop/services/payment/client"
)

// Reconciler compares every finished order with its payment, as payment
// records it, and repairs or reports what disagrees (issue 12):
//
//	CANCELLED, payment SUCCEEDED  → refund (idempotent: a refund made
//	                                before is answered again)
//	CONFIRMED, payment not SUCCEEDED, or none → reported (log, metric):
//	                                a shipped order nobody paid for is an
//	                                operator's decision
//
// It walks the orders by their last change, a batch every Interval, and
// starts Window back at each start.
type Reconciler struct {
	Deps     Deps
	Interval time.Duration
	Window   time.Duration
	// Found counts the disagreements by kind (charged_not_confirmed,
	// confirmed_not_charged); nil: not counted.
	Found *prometheus.CounterVec
}

// Reconcile kinds.
const (
	ChargedNotConfirmed = "charged_not_confirmed"
	ConfirmedNotCharged = "confirmed_not_charged"
)

// Run reconciles until ctx ends. It is an app.Actor.
func (r Reconciler) Run(ctx context.Context) error {
	s := New(r.Deps).(*service)
	since := s.now().Add(-r.Window)
	tick := time.NewTicker(r.Interval)
	defer tick.Stop()
	for {
		since = r.pass(ctx, s, since)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// pass reconciles the orders finished after since, a batch at most, and
// returns where the next pass starts. An order whose payment cannot be
// asked now stops the pass there, to be asked again next time.
func (r Reconciler) pass(ctx context.Context, s *service, since time.Time) time.Time {
	orders, err := s.Store.Finished(ctx, since, 100)
	if err != nil {
		s.Logger.ErrorContext(ctx, "reconciliation: listing finished orders failed", "err", err)
		return since
	}
	for _, o := range orders {
		if err := r.check(ctx, s, o); err != nil {
			s.Logger.WarnContext(ctx, "reconciliation: payment cannot say now; asked again next pass", "order", o.ID, "err", err)
			return since
		}
		since = o.UpdatedAt
	}
	return since
}

// check compares one finished order with its payment.
func (r Reconciler) check(ctx context.Context, s *service, o Order) error {
	p, err := s.Payments.ByOrder(ctx, o.ID)
	charged := err == nil && p.Status == paymentclient.StatusSucceeded
	if err != nil && !refusedBy(err, nothingToRefund) {
		return err
	}
	switch {
	case o.Status == StatusCancelled && charged:
		if err := s.Payments.Refund(ctx, o.ID); err != nil && !refusedBy(err, nothingToRefund) {
			return err
		}
		if !o.Refunded { // a cancellation that did not refund: repaired now
			r.found(ChargedNotConfirmed)
			s.Logger.ErrorContext(ctx, "reconciliation: a cancelled order was charged; refunded", "order", o.ID, "payment", p.ID)
		}
	case o.Status == StatusConfirmed && !charged:
		r.found(ConfirmedNotCharged)
		s.Logger.ErrorContext(ctx, "reconciliation: a confirmed order has no successful payment; an operator must decide",
			"order", o.ID, "payment_status", p.Status, "err", errs.As(err).Code)
	}
	return nil
}

func (r Reconciler) found(kind string) {
	if r.Found != nil {
		r.Found.WithLabelValues(kind).Inc()
	}
}
