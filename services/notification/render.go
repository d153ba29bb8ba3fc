package notification

import (
	"encoding/json"
	"fmt"

	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/events"
)

// Consumed are the event types that notify a user.
var Consumed = []string{events.UserRegistered, events.OrderConfirmed, events.OrderCancelled, events.PaymentFailed}

// eventData is the union of the fields the consumed events carry.
type eventData struct {
	UserID       string  `json:"user_id"`
	Name         string  `json:"name"`
	Email        string  `json:"email"`
	OrderID      string  `json:"order_id"`
	TotalCents   int64   `json:"total_cents"`
	AmountCents  int64   `json:"amount_cents"`
	Currency     string  `json:"currency"`
	CancelReason *string `json:"cancel_reason"`
	Reason       string  `json:"reason"`
	// Refunded: the order was cancelled after its charge, which payment
	// refunded (issue 12).
	Refunded bool `json:"refunded"`
}

// render turns an event into the notification's user, subject and body.
// An event without a user, or of a type not consumed, is Invalid: it can
// never be rendered, so retrying it is pointless.
func render(ev events.Envelope) (userID, subject, body string, err error) {
	var d eventData
	if err := json.Unmarshal(ev.Data, &d); err != nil {
		return "", "", "", errs.Wrap(errs.Invalid, "bad_event_data", "event data is not the expected JSON", err)
	}
	if d.UserID == "" {
		return "", "", "", errs.Newf(errs.Invalid, "bad_event_data", "%s event %s has no user_id", ev.Type, ev.ID)
	}
	switch ev.Type {
	case events.UserRegistered:
		subject = "Welcome to Meshop"
		body = fmt.Sprintf("Hello %s, your Meshop account %s is ready.", nonEmpty(d.Name, "there"), d.Email)
	case events.OrderConfirmed:
		subject = "Your order is confirmed"
		body = fmt.Sprintf("Order %s is confirmed. Total: %s.", d.OrderID, money(d.TotalCents, d.Currency))
	case events.OrderCancelled:
		reason := "it could not be completed"
		if d.CancelReason != nil {
			reason = *d.CancelReason
		}
		subject = "Your order was cancelled"
		body = fmt.Sprintf("Order %s was cancelled (%s). You have not been charged.", d.OrderID, reason)
		if d.Refunded {
			body = fmt.Sprintf("Order %s was cancelled (%s). Its payment of %s has been refunded.", d.OrderID, reason, money(d.TotalCents, d.Currency))
		}
	case events.PaymentFailed:
		subject = "Your payment did not go through"
		body = fmt.Sprintf("The payment of %s for order %s failed (%s).", money(d.AmountCents, d.Currency), d.OrderID, nonEmpty(d.Reason, "declined"))
	default:
		return "", "", "", errs.Newf(errs.Invalid, "unexpected_event", "notification does not handle %s events", ev.Type)
	}
	return d.UserID, subject, body, nil
}

func money(cents int64, currency string) string {
	return fmt.Sprintf("%d.%02d %s", cents/100, cents%100, nonEmpty(currency, "USD"))
}

func nonEmpty(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
