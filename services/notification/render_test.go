package notification

import (
	"strings"
	"testing"

	"github.com/meshop/meshop/services/kit/events"
)

// TestACancellationSaysWhetherTheCustomerWasRefunded: an order cancelled
// before any charge says nothing was charged; one cancelled after its
// charge says the payment was refunded (issue 12).
func TestACancellationSaysWhetherTheCustomerWasRefunded(t *testing.T) {
	for _, tc := range []struct {
		data map[string]any
		want string
	}{
		{map[string]any{"user_id": "u1", "order_id": "o1", "cancel_reason": "payment_declined"}, "You have not been charged."},
		{map[string]any{"user_id": "u1", "order_id": "o1", "cancel_reason": "reservation_lost", "refunded": true,
			"total_cents": 4800, "currency": "USD"}, "Its payment of 48.00 USD has been refunded."},
	} {
		_, _, body, err := render(mustEvent(t, events.OrderCancelled, tc.data))
		if err != nil || !strings.Contains(body, tc.want) {
			t.Errorf("body = %q (%v), want it to say %q", body, err, tc.want)
		}
	}
}
