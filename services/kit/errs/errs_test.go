package errs

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestToBody(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantStatus int
		want       Body
	}{
		{"kind and code", New(Conflict, "idempotency_mismatch", "key reused"), http.StatusConflict,
			Body{BodyError{Code: "idempotency_mismatch", Message: "key reused"}}},
		{"default code", &Error{Kind: NotFound, Message: "no order"}, http.StatusNotFound,
			Body{BodyError{Code: "not_found", Message: "no order"}}},
		{"details kept", New(PaymentDeclined, "payment_declined", "declined").WithDetails(map[string]any{"order_id": "o1"}),
			http.StatusPaymentRequired, Body{BodyError{Code: "payment_declined", Message: "declined", Details: map[string]any{"order_id": "o1"}}}},
		{"wrapped kit error", fmt.Errorf("store: %w", New(Validation, "bad_quantity", "quantity must be positive")),
			http.StatusUnprocessableEntity, Body{BodyError{Code: "bad_quantity", Message: "quantity must be positive"}}},
		{"foreign error hides its cause", errors.New("pq: password authentication failed"),
			http.StatusInternalServerError, Body{BodyError{Code: "internal", Message: "internal error"}}},
		{"internal kind hides its message", Wrap(Internal, "db", "select failed on orders", errors.New("boom")),
			http.StatusInternalServerError, Body{BodyError{Code: "internal", Message: "internal error"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, got := ToBody(tt.err)
			if status != tt.wantStatus {
				t.Errorf("status = %d, want %d", status, tt.wantStatus)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFromBodyRoundTrip(t *testing.T) {
	for _, kind := range []Kind{Invalid, Unauthenticated, PaymentDeclined, Forbidden, NotFound, Conflict, TooLarge, Validation, TooManyRequests, Unavailable} {
		status, body := ToBody(New(kind, "some_code", "msg"))
		got := FromBody(status, body)
		if got.Kind != kind || got.Code != "some_code" || got.Message != "msg" {
			t.Errorf("%v: round trip gave %+v", kind, got)
		}
	}
	if got := FromBody(http.StatusBadGateway, Body{}); got.Kind != Unavailable {
		t.Errorf("502 without body: kind %v, want Unavailable", got.Kind)
	}
}

func TestIsAndUnwrap(t *testing.T) {
	cause := errors.New("dial tcp: refused")
	err := fmt.Errorf("calling user: %w", Wrap(Unavailable, "upstream_unavailable", "user is unavailable", cause))
	if !Is(err, Unavailable) || Is(err, NotFound) {
		t.Errorf("Is gave the wrong answer for %v", err)
	}
	if !errors.Is(err, cause) {
		t.Errorf("cause lost in %v", err)
	}
}

// A provider builds its refusal from its client package's upper-snake
// Reason constant; the Code (public bodies, stored values) stays lower
// snake case and Reason gives the constant back.
func TestConstructorsStoreTheCodeLowerCased(t *testing.T) {
	const reasonOutOfStock = "OUT_OF_STOCK" // as a client package exports it
	cause := errors.New("boom")
	tests := []struct {
		name string
		err  *Error
	}{
		{"New", New(Conflict, reasonOutOfStock, "only 2 left")},
		{"Newf", Newf(Conflict, reasonOutOfStock, "only %d left", 2)},
		{"Wrap", Wrap(Conflict, reasonOutOfStock, "only 2 left", cause)},
		{"New with a lower-case code", New(Conflict, "out_of_stock", "only 2 left")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err.Code != "out_of_stock" {
				t.Errorf("Code = %q, want out_of_stock", tt.err.Code)
			}
			if got := Reason(fmt.Errorf("reserving: %w", tt.err)); got != reasonOutOfStock {
				t.Errorf("Reason = %q, want %s", got, reasonOutOfStock)
			}
			if _, body := ToBody(tt.err); body.Error.Code != "out_of_stock" {
				t.Errorf("body code = %q, want out_of_stock", body.Error.Code)
			}
			if st := tt.err.GRPCStatus(); Reason(FromGRPC(st.Err())) != reasonOutOfStock {
				t.Errorf("reason after a gRPC round trip = %q, want %s", Reason(FromGRPC(st.Err())), reasonOutOfStock)
			}
		})
	}
}
