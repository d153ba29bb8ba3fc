package payment

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/google/uuid"

	"github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/events"
	"github.com/meshop/meshop/services/payment/client"
)

// Service charges orders and shows payments to their owners.
type Service interface {
	// Charge pays for an order, once. The first call charges (created =
	// true); a repeat with the same request returns the first payment,
	// settling it first if its outcome is still unknown. While the
	// provider's answer is unknown it fails with Unavailable
	// payment_pending, so the caller retries.
	Charge(ctx context.Context, req ChargeRequest) (p Payment, created bool, err error)
	// Get returns a payment of the caller's.
	Get(ctx context.Context, id string) (Payment, error)
	// GetByOrder returns the payment of an order, whatever its status, to
	// another service (no caller identity): NotFound when it has none.
	GetByOrder(ctx context.Context, orderID string) (Payment, error)
	// Refund pays an order's SUCCEEDED payment back in full, once: the
	// first call refunds, a repeat returns the same refund. It refuses
	// with NotFound payment_not_found when the order has no payment,
	// Conflict not_refundable when its payment is DECLINED or FAILED, and
	// Unavailable payment_pending (the charge's outcome is not known yet)
	// or refund_pending (the refund's is not): the caller retries.
	Refund(ctx context.Context, orderID string) (Refund, error)
	// SettleUnknown asks the provider about every payment and refund whose
	// outcome is unknown and records its answers; it returns how many it
	// settled.
	SettleUnknown(ctx context.Context) (int, error)
}

// Store keeps payments (see SQLStore for the semantics).
type Store interface {
	Insert(ctx context.Context, p Payment) error
	Get(ctx context.Context, id string) (Payment, error)
	GetByOrder(ctx context.Context, orderID string) (Payment, error)
	Settle(ctx context.Context, p Payment, ev events.Envelope) (bool, error)
	MarkUnknown(ctx context.Context, id string, at time.Time) error
	Unsettled(ctx context.Context, staleBefore time.Time, limit int) ([]Payment, error)
	InsertRefund(ctx context.Context, r Refund) error
	GetRefund(ctx context.Context, id string) (Refund, error)
	GetRefundByOrder(ctx context.Context, orderID string) (Refund, error)
	SettleRefund(ctx context.Context, r Refund, ev events.Envelope) (bool, error)
	MarkRefundUnknown(ctx context.Context, id string, at time.Time) error
	UnsettledRefunds(ctx context.Context, staleBefore time.Time, limit int) ([]Refund, error)
}

// Config tunes the service; zero values take the defaults in brackets.
type Config struct {
	// ProviderTimeout [1s] bounds each provider call. Keep it under the
	// callers' deadline (MESH_CALL_TIMEOUT of order), so an answer, even
	// payment_pending, gets back in time.
	ProviderTimeout time.Duration
	// WaitInFlight [ProviderTimeout] is how long a repeat waits for the
	// first request's charge to finish before answering payment_pending.
	WaitInFlight time.Duration
	// StaleAfter [ProviderTimeout + 10s]: a PENDING payment untouched this
	// long lost its charging request (a crash) and is settled like an
	// UNKNOWN one.
	StaleAfter time.Duration
	Now        func() time.Time // [time.Now]
}

type service struct {
	store    Store
	provider Provider
	cfg      Config
}

// New returns the payment service.
func New(store Store, provider Provider, cfg Config) Service {
	if cfg.ProviderTimeout <= 0 {
		cfg.ProviderTimeout = time.Second
	}
	if cfg.WaitInFlight <= 0 {
		cfg.WaitInFlight = cfg.ProviderTimeout
	}
	if cfg.StaleAfter <= 0 {
		cfg.StaleAfter = cfg.ProviderTimeout + 10*time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &service{store: store, provider: provider, cfg: cfg}
}

// Limits.
const maxAmountCents = 100_000_000_00 // 100 million in major units

// pollInFlight is how often a repeat looks whether the first charge ended.
const pollInFlight = 20 * time.Millisecond

var (
	idPattern       = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	currencyPattern = regexp.MustCompile(`^[A-Z]{3}$`)
	tokenPattern    = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)
)

func (s *service) now() time.Time { return s.cfg.Now().UTC().Truncate(time.Microsecond) }

func (s *service) Charge(ctx context.Context, req ChargeRequest) (Payment, bool, error) {
	if err := validate(req); err != nil {
		return Payment{}, false, err
	}
	now := s.now()
	p := Payment{
		ID: uuid.Must(uuid.NewV7()).String(), OrderID: req.OrderID, UserID: req.UserID, Status: StatusPending,
		AmountCents: req.AmountCents, Currency: req.Currency, CardToken: req.CardToken, CreatedAt: now, UpdatedAt: now,
	}
	err := s.store.Insert(ctx, p)
	if e := errs.As(err); err != nil && e.Code == codePaymentExists {
		p, err := s.replay(ctx, req)
		return p, false, err
	}
	if err != nil {
		return Payment{}, false, err
	}
	// This request owns the order's one charge. The client going away must
	// not strand it half-done: the charge and its record run on.
	detached := context.WithoutCancel(ctx)
	charge, err := s.call(detached, func(ctx context.Context) (Charge, error) {
		return s.provider.Charge(ctx, ProviderCharge{OrderID: p.OrderID, AmountCents: p.AmountCents, Currency: p.Currency, CardToken: p.CardToken})
	})
	if err != nil {
		if mErr := s.store.MarkUnknown(detached, p.ID, s.now()); mErr != nil {
			return Payment{}, false, mErr
		}
		return Payment{}, false, pending(p, err)
	}
	failAt(ctx, "charged") // failpoint builds only: the provider charged, nothing recorded yet
	p, err = s.settle(detached, p, charge)
	if err != nil {
		return Payment{}, false, err
	}
	return p, true, answer(p)
}

// replay answers a charge for an order that already has a payment.
func (s *service) replay(ctx context.Context, req ChargeRequest) (Payment, error) {
	p, err := s.store.GetByOrder(ctx, req.OrderID)
	if err != nil {
		return Payment{}, err
	}
	if p.AmountCents != req.AmountCents || p.Currency != req.Currency || p.UserID != req.UserID || p.CardToken != req.CardToken {
		return Payment{}, errs.Newf(errs.Conflict, client.ReasonIdempotencyMismatch,
			"order %s was already charged with a different request", req.OrderID).
			WithDetails(map[string]any{"payment_id": p.ID, "order_id": p.OrderID})
	}
	if p.Status == StatusPending {
		if p, err = s.waitInFlight(ctx, p); err != nil {
			return Payment{}, err
		}
	}
	if !p.Final() {
		if p, err = s.resolve(ctx, p); err != nil {
			return Payment{}, err
		}
	}
	return p, answer(p)
}

// waitInFlight waits, a bounded time, for the request that charges p to
// record its outcome, and returns p as it then stands.
func (s *service) waitInFlight(ctx context.Context, p Payment) (Payment, error) {
	deadline := time.After(s.cfg.WaitInFlight)
	for p.Status == StatusPending && s.now().Sub(p.UpdatedAt) < s.cfg.StaleAfter {
		select {
		case <-deadline:
			return Payment{}, pending(p, errors.New("the first charge of this order is still in flight"))
		case <-ctx.Done():
			return Payment{}, pending(p, ctx.Err())
		case <-time.After(pollInFlight):
		}
		var err error
		if p, err = s.store.Get(ctx, p.ID); err != nil {
			return Payment{}, err
		}
	}
	return p, nil
}

// resolve settles an UNKNOWN (or stale PENDING) payment with the
// provider's own answer: the charge it holds for the order, or, if it holds
// none, the result of charging now. The provider is idempotent on the
// order id, so neither can charge twice. No answer leaves p unsettled and
// is payment_pending.
func (s *service) resolve(ctx context.Context, p Payment) (Payment, error) {
	detached := context.WithoutCancel(ctx)
	charge, err := s.call(detached, func(ctx context.Context) (Charge, error) {
		c, err := s.provider.Lookup(ctx, p.OrderID)
		if errors.Is(err, ErrNoCharge) {
			return s.provider.Charge(ctx, ProviderCharge{OrderID: p.OrderID, AmountCents: p.AmountCents, Currency: p.Currency, CardToken: p.CardToken})
		}
		return c, err
	})
	if err != nil {
		return Payment{}, pending(p, err)
	}
	return s.settle(detached, p, charge)
}

// call runs one provider exchange within ProviderTimeout. ErrInvalidToken
// is a definite answer and comes back as a failed charge.
func (s *service) call(ctx context.Context, f func(context.Context) (Charge, error)) (Charge, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ProviderTimeout)
	defer cancel()
	c, err := f(ctx)
	if errors.Is(err, ErrInvalidToken) {
		return Charge{Outcome: OutcomeFailed, Reason: ReasonInvalidToken}, nil
	}
	return c, err
}

// settle records charge as p's outcome with its event, and returns the
// payment as recorded (by this call or by whoever settled it first).
func (s *service) settle(ctx context.Context, p Payment, c Charge) (Payment, error) {
	p.ChargeID, p.Reason, p.UpdatedAt = c.ID, c.Reason, s.now()
	typ := events.PaymentFailed
	switch c.Outcome {
	case OutcomeApproved:
		p.Status, p.Reason, typ = StatusSucceeded, "", events.PaymentSucceeded
	case OutcomeDeclined:
		p.Status = StatusDeclined
	case OutcomeFailed:
		p.Status = StatusFailed
	default:
		return Payment{}, errs.Newf(errs.Internal, "provider", "provider answered outcome %q", c.Outcome)
	}
	ev, err := events.New(Name, typ, p.ID, Event{
		PaymentID: p.ID, OrderID: p.OrderID, UserID: p.UserID, AmountCents: p.AmountCents,
		Currency: p.Currency, Status: p.Status, Reason: p.Reason,
	})
	if err != nil {
		return Payment{}, errs.Wrap(errs.Internal, "event", "build "+typ, err)
	}
	settled, err := s.store.Settle(ctx, p, ev)
	if err != nil {
		return Payment{}, err
	}
	if !settled {
		return s.store.Get(ctx, p.ID)
	}
	return p, nil
}

// answer is the error a settled payment is answered with: none, except
// for a card token the provider does not know (a 422, whose details name
// the failed payment).
func answer(p Payment) error {
	if p.Status == StatusFailed && p.Reason == ReasonInvalidToken {
		return errs.New(errs.Validation, client.ReasonInvalidCardToken, "the card token is not valid").
			WithDetails(map[string]any{"payment_id": p.ID, "order_id": p.OrderID})
	}
	return nil
}

// pending is the answer while p's outcome is unknown: retry later.
func pending(p Payment, cause error) error {
	return errs.Wrap(errs.Unavailable, client.ReasonPaymentPending,
		"the payment's outcome is not known yet; retry the same request", cause).
		WithDetails(map[string]any{"payment_id": p.ID, "order_id": p.OrderID})
}

func (s *service) Get(ctx context.Context, id string) (Payment, error) {
	caller, err := auth.Require(ctx)
	if err != nil {
		return Payment{}, err
	}
	notFound := errs.Newf(errs.NotFound, client.ReasonPaymentNotFound, "no payment %q", id)
	if !idPattern.MatchString(id) {
		return Payment{}, notFound
	}
	p, err := s.store.Get(ctx, id)
	if errs.Is(err, errs.NotFound) {
		return Payment{}, notFound
	}
	if err != nil {
		return Payment{}, err
	}
	if p.UserID != caller.UserID {
		return Payment{}, notFound // not "forbidden": do not reveal that it exists
	}
	return p, nil
}

func (s *service) GetByOrder(ctx context.Context, orderID string) (Payment, error) {
	if orderID == "" {
		return Payment{}, errs.New(errs.Invalid, client.ReasonInvalidOrderID, "the order id is required")
	}
	notFound := errs.Newf(errs.NotFound, client.ReasonPaymentNotFound, "order %q has no payment", orderID)
	if !idPattern.MatchString(orderID) {
		return Payment{}, notFound // no order can have it
	}
	p, err := s.store.GetByOrder(ctx, orderID)
	if errs.Is(err, errs.NotFound) {
		return Payment{}, notFound
	}
	return p, err
}

func (s *service) Refund(ctx context.Context, orderID string) (Refund, error) {
	p, err := s.GetByOrder(ctx, orderID)
	if err != nil {
		return Refund{}, err
	}
	if p.Status == StatusPending {
		if p, err = s.waitInFlight(ctx, p); err != nil {
			return Refund{}, err
		}
	}
	if !p.Final() {
		// Only the provider's answer says whether there is anything to
		// refund: ask it, as a repeated Charge would.
		if p, err = s.resolve(ctx, p); err != nil {
			return Refund{}, err
		}
	}
	if p.Status != StatusSucceeded {
		return Refund{}, errs.Newf(errs.Conflict, client.ReasonNotRefundable,
			"the payment of order %s is %s: nothing was charged", p.OrderID, p.Status).
			WithDetails(map[string]any{"payment_id": p.ID, "order_id": p.OrderID, "status": p.Status})
	}
	now := s.now()
	r := Refund{
		ID: uuid.Must(uuid.NewV7()).String(), PaymentID: p.ID, OrderID: p.OrderID, UserID: p.UserID, Status: RefundPending,
		AmountCents: p.AmountCents, Currency: p.Currency, CreatedAt: now, UpdatedAt: now,
	}
	err = s.store.InsertRefund(ctx, r)
	if e := errs.As(err); err != nil && e.Code == codeRefundExists {
		return s.replayRefund(ctx, orderID)
	}
	if err != nil {
		return Refund{}, err
	}
	return s.refundAtProvider(ctx, r)
}

// replayRefund answers a refund for an order that already has one.
func (s *service) replayRefund(ctx context.Context, orderID string) (Refund, error) {
	r, err := s.store.GetRefundByOrder(ctx, orderID)
	if err != nil {
		return Refund{}, err
	}
	deadline := time.After(s.cfg.WaitInFlight)
	for r.Status == RefundPending && s.now().Sub(r.UpdatedAt) < s.cfg.StaleAfter {
		select {
		case <-deadline:
			return Refund{}, refundPending(r, errors.New("the first refund of this order is still in flight"))
		case <-ctx.Done():
			return Refund{}, refundPending(r, ctx.Err())
		case <-time.After(pollInFlight):
		}
		if r, err = s.store.GetRefund(ctx, r.ID); err != nil {
			return Refund{}, err
		}
	}
	if r.Status == RefundSucceeded {
		return r, nil
	}
	return s.refundAtProvider(ctx, r)
}

// refundAtProvider asks the provider to refund r and records its answer.
// The provider is idempotent on the order id, so asking again for an
// UNKNOWN refund returns the one it made, if any, and never refunds twice.
// No answer leaves r unsettled and is refund_pending.
func (s *service) refundAtProvider(ctx context.Context, r Refund) (Refund, error) {
	p, err := s.store.Get(ctx, r.PaymentID)
	if err != nil {
		return Refund{}, err
	}
	// The client going away must not strand the refund half-recorded.
	detached := context.WithoutCancel(ctx)
	callCtx, cancel := context.WithTimeout(detached, s.cfg.ProviderTimeout)
	receipt, err := s.provider.Refund(callCtx, ProviderRefund{OrderID: r.OrderID, ChargeID: p.ChargeID, AmountCents: r.AmountCents, Currency: r.Currency})
	cancel()
	if err != nil {
		if mErr := s.store.MarkRefundUnknown(detached, r.ID, s.now()); mErr != nil {
			return Refund{}, mErr
		}
		if errors.Is(err, ErrNoCharge) || errors.Is(err, ErrNotRefundable) {
			// The provider's records contradict the payment's: an operator's
			// matter, retried by the resolver meanwhile.
			return Refund{}, errs.Wrap(errs.Internal, "provider", "the provider refused the refund of a succeeded payment", err)
		}
		return Refund{}, refundPending(r, err)
	}
	r.Status, r.ProviderRefundID, r.UpdatedAt = RefundSucceeded, receipt.ID, s.now()
	ev, err := events.New(Name, events.PaymentRefunded, r.PaymentID, RefundEvent{
		RefundID: r.ID, PaymentID: r.PaymentID, OrderID: r.OrderID, UserID: r.UserID, AmountCents: r.AmountCents, Currency: r.Currency,
	})
	if err != nil {
		return Refund{}, errs.Wrap(errs.Internal, "event", "build "+events.PaymentRefunded, err)
	}
	settled, err := s.store.SettleRefund(detached, r, ev)
	if err != nil {
		return Refund{}, err
	}
	if !settled {
		return s.store.GetRefund(detached, r.ID)
	}
	return r, nil
}

// refundPending is the answer while r's outcome is unknown: retry later.
func refundPending(r Refund, cause error) error {
	return errs.Wrap(errs.Unavailable, client.ReasonRefundPending,
		"the refund's outcome is not known yet; retry the same request", cause).
		WithDetails(map[string]any{"refund_id": r.ID, "payment_id": r.PaymentID, "order_id": r.OrderID})
}

// settleBatch bounds one SettleUnknown pass.
const settleBatch = 100

func (s *service) SettleUnknown(ctx context.Context) (int, error) {
	staleBefore := s.now().Add(-s.cfg.StaleAfter)
	ps, err := s.store.Unsettled(ctx, staleBefore, settleBatch)
	if err != nil {
		return 0, err
	}
	settled := 0
	var failures []error
	for _, p := range ps {
		if ctx.Err() != nil {
			break
		}
		if _, err := s.resolve(ctx, p); err != nil {
			failures = append(failures, fmt.Errorf("payment %s: %w", p.ID, err))
			continue
		}
		settled++
	}
	rs, err := s.store.UnsettledRefunds(ctx, staleBefore, settleBatch)
	if err != nil {
		return settled, errors.Join(append(failures, err)...)
	}
	for _, r := range rs {
		if ctx.Err() != nil {
			break
		}
		if _, err := s.refundAtProvider(ctx, r); err != nil {
			failures = append(failures, fmt.Errorf("refund %s: %w", r.ID, err))
			continue
		}
		settled++
	}
	return settled, errors.Join(failures...)
}

// validate returns every problem of req as one 422.
func validate(req ChargeRequest) error {
	problems := map[string]any{}
	if !idPattern.MatchString(req.OrderID) {
		problems["order_id"] = "must be 1-64 letters, digits, '-' or '_'"
	}
	if !idPattern.MatchString(req.UserID) {
		problems["user_id"] = "must be 1-64 letters, digits, '-' or '_'"
	}
	if req.AmountCents < 1 || req.AmountCents > maxAmountCents {
		problems["amount_cents"] = fmt.Sprintf("must be between 1 and %d", int64(maxAmountCents))
	}
	if !currencyPattern.MatchString(req.Currency) {
		problems["currency"] = "must be a three-letter ISO 4217 code like USD"
	}
	if req.CardToken == "" {
		problems["card_token"] = "is required (e.g. tok_visa)"
	}
	if len(problems) > 0 {
		return errs.New(errs.Validation, client.ReasonInvalidPayment, "the payment has invalid fields").WithDetails(problems)
	}
	if !tokenPattern.MatchString(req.CardToken) {
		return errs.New(errs.Validation, client.ReasonInvalidCardToken, "the card token is not valid")
	}
	return nil
}
