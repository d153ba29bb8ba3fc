package payment

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Provider is the card provider, as the service needs it. Both calls are
// idempotent on the order id: Charge for an order already charged returns
// that charge and charges nothing; Lookup only reads.
//
// An error other than ErrInvalidToken and ErrNoCharge (a timeout, a
// network failure) means the provider's answer is unknown.
type Provider interface {
	Charge(ctx context.Context, req ProviderCharge) (Charge, error)
	Lookup(ctx context.Context, orderID string) (Charge, error)
}

// ProviderCharge asks the provider to charge a card for an order.
type ProviderCharge struct {
	OrderID     string
	AmountCents int64
	Currency    string
	CardToken   string
}

// Charge is the provider's record of an order's charge: a definite outcome.
type Charge struct {
	ID      string
	Outcome string // OutcomeApproved, OutcomeDeclined or OutcomeFailed
	Reason  string // why it was not approved
}

// Outcomes of a charge.
const (
	OutcomeApproved = "approved"
	OutcomeDeclined = "declined"
	OutcomeFailed   = "failed" // the provider could not process it; nothing was charged
)

// Definite provider answers that are not a charge.
var (
	// ErrInvalidToken: the provider knows no such card token; nothing was
	// charged.
	ErrInvalidToken = errors.New("provider: unknown card token")
	// ErrNoCharge: Lookup found no charge for the order.
	ErrNoCharge = errors.New("provider: no charge for this order")
)

// Test cards of the simulated provider.
const (
	CardVisa     = "tok_visa"     // approved
	CardDeclined = "tok_declined" // declined
	CardError    = "tok_error"    // the provider fails to process it
	// CardTimeout is charged (approved) but the answer to Charge never
	// comes: the caller times out, and learns the outcome from Lookup.
	CardTimeout = "tok_timeout"
)

// Simulator is an in-memory card provider with the test cards. It is
// idempotent on the order id, as real providers are on an idempotency key.
type Simulator struct {
	// Latency delays every answer (within the caller's deadline).
	Latency time.Duration

	mu      sync.Mutex
	charges map[string]Charge // by order id
}

// NewSimulator returns a provider simulator answering after latency.
func NewSimulator(latency time.Duration) *Simulator {
	return &Simulator{Latency: latency, charges: map[string]Charge{}}
}

// Charge charges req's card once per order.
func (s *Simulator) Charge(ctx context.Context, req ProviderCharge) (Charge, error) {
	c, first, err := s.charge(req)
	if err != nil {
		return Charge{}, err
	}
	if first && req.CardToken == CardTimeout {
		<-ctx.Done() // charged, but the answer is lost
		return Charge{}, ctx.Err()
	}
	return c, s.wait(ctx)
}

func (s *Simulator) charge(req ProviderCharge) (Charge, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.charges[req.OrderID]; ok {
		return c, false, nil
	}
	c := Charge{ID: "ch_" + uuid.Must(uuid.NewV7()).String()}
	switch req.CardToken {
	case CardVisa, CardTimeout:
		c.Outcome = OutcomeApproved
	case CardDeclined:
		c.Outcome, c.Reason = OutcomeDeclined, ReasonDeclined
	case CardError:
		c.Outcome, c.Reason = OutcomeFailed, ReasonProviderErr
	default:
		return Charge{}, false, ErrInvalidToken
	}
	s.charges[req.OrderID] = c
	return c, true, nil
}

// Lookup returns the charge of orderID.
func (s *Simulator) Lookup(ctx context.Context, orderID string) (Charge, error) {
	s.mu.Lock()
	c, ok := s.charges[orderID]
	s.mu.Unlock()
	if err := s.wait(ctx); err != nil {
		return Charge{}, err
	}
	if !ok {
		return Charge{}, ErrNoCharge
	}
	return c, nil
}

func (s *Simulator) wait(ctx context.Context) error {
	if s.Latency <= 0 {
		return ctx.Err()
	}
	select {
	case <-time.After(s.Latency):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
