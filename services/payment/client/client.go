// Package client is how other services call the payment service's
// internal API, the gRPC service meshop.payment.v1.Payments
// (proto/meshop/payment/v1): order charges an order at checkout, once,
// and refunds it, once, when it will not be fulfilled.
//
//	order ──▶ Client.Charge / Client.Refund ──▶ go-kit gRPC client (kit/rpc) ──▶ mesh ──▶ payment's NewGRPCServer
//
// Its types are plain Go, not the generated messages, so callers depend on
// this package only. A declined or failed charge is an answer (its
// Status), not an error. Every error is an *errs.Error (kit/errs): a
// refusal of the payment service keeps its kind and its reason
// (errs.Reason), one of the Reason constants below; a call that got no
// answer is Unavailable.
package client

import (
	"context"
	"time"

	"github.com/go-kit/kit/endpoint"
	"google.golang.org/grpc"

	"github.com/meshop/meshop/services/kit/rpc"
	paymentv1 "github.com/meshop/meshop/services/payment/proto/meshop/payment/v1"
)

// The reasons the payment service refuses a call: the google.rpc.ErrorInfo
// reason on the wire, in upper snake case. Match with
// errs.Reason(err) == ReasonX. The error's errs Code, as the public HTTP
// error bodies of the callers that pass it on show it, is the same in lower
// snake case ("invalid_payment").
const (
	// ReasonInvalidPayment: Charge got invalid fields (Validation; the
	// details name them).
	ReasonInvalidPayment = "INVALID_PAYMENT"
	// ReasonInvalidCardToken: the card token is malformed or unknown to
	// the provider (Validation; when the provider refused it, the details
	// name the FAILED payment: {payment_id, order_id}).
	ReasonInvalidCardToken = "INVALID_CARD_TOKEN"
	// ReasonIdempotencyMismatch: the order was charged with another amount,
	// currency, user or card (Conflict; details {payment_id, order_id}).
	ReasonIdempotencyMismatch = "IDEMPOTENCY_MISMATCH"
	// ReasonPaymentPending: the charge's outcome is not known yet; retry
	// the same request (Unavailable; details {payment_id, order_id}).
	ReasonPaymentPending = "PAYMENT_PENDING"
	// ReasonPaymentNotFound: the order has no payment (NotFound): for
	// Refund, nothing was charged, so there is nothing to refund.
	ReasonPaymentNotFound = "PAYMENT_NOT_FOUND"
	// ReasonInvalidOrderID: GetPaymentByOrder or Refund got no order id
	// (Invalid).
	ReasonInvalidOrderID = "INVALID_ORDER_ID"
	// ReasonNotRefundable: Refund of an order whose payment is DECLINED or
	// FAILED: nothing was charged, so there is nothing to refund (Conflict;
	// details {payment_id, order_id, status}).
	ReasonNotRefundable = "NOT_REFUNDABLE"
	// ReasonRefundPending: the refund's outcome is not known yet; retry the
	// same request (Unavailable; details {refund_id, payment_id,
	// order_id}). (Refund of a payment whose own outcome is not known yet
	// answers ReasonPaymentPending, also Unavailable.)
	ReasonRefundPending = "REFUND_PENDING"
)

// Payment statuses. SUCCEEDED, DECLINED and FAILED are final.
const (
	StatusPending   = "PENDING"
	StatusUnknown   = "UNKNOWN"
	StatusSucceeded = "SUCCEEDED"
	StatusDeclined  = "DECLINED"
	StatusFailed    = "FAILED"
)

// Charge asks to pay for an order.
type Charge struct {
	OrderID     string
	UserID      string
	AmountCents int64
	Currency    string // ISO 4217, e.g. USD
	CardToken   string
}

// Payment is one order's payment.
type Payment struct {
	ID          string
	OrderID     string
	UserID      string
	Status      string // one of the Status constants
	AmountCents int64
	Currency    string
	Reason      string // why it did not succeed: card_declined, provider_error, invalid_card_token
	CreatedAt   time.Time
}

// Refund is an order's refund: its payment's whole amount, paid back. A
// Refund answered is done; one in flight is an error (ReasonRefundPending).
type Refund struct {
	ID          string
	PaymentID   string
	OrderID     string
	UserID      string
	AmountCents int64
	Currency    string
	CreatedAt   time.Time
}

// Client calls the payment service over one gRPC connection (from the
// mesh client: meshclient.Client.Conn("payment")).
type Client struct {
	charge, byOrder, refund endpoint.Endpoint
}

// New returns a client over conn.
func New(conn *grpc.ClientConn) *Client {
	svc := paymentv1.Payments_ServiceDesc.ServiceName
	return &Client{
		charge:  rpc.ClientEndpoint(conn, svc, "Charge", encodeCharge, decodeCharge, &paymentv1.ChargeResponse{}),
		byOrder: rpc.ClientEndpoint(conn, svc, "GetPaymentByOrder", encodeByOrder, decodeByOrder, &paymentv1.GetPaymentByOrderResponse{}),
		refund:  rpc.ClientEndpoint(conn, svc, "Refund", encodeRefund, decodeRefund, &paymentv1.RefundResponse{}),
	}
}

// Charge pays for c.OrderID, once: a repeat returns the first payment.
func (c *Client) Charge(ctx context.Context, ch Charge) (Payment, error) {
	resp, err := c.charge(ctx, ch)
	if err != nil {
		return Payment{}, err
	}
	return resp.(Payment), nil
}

// GetPaymentByOrder returns the payment of orderID, whatever its status.
func (c *Client) GetPaymentByOrder(ctx context.Context, orderID string) (Payment, error) {
	resp, err := c.byOrder(ctx, orderID)
	if err != nil {
		return Payment{}, err
	}
	return resp.(Payment), nil
}

// Refund pays back the SUCCEEDED payment of orderID in full, once: a
// repeat returns the same refund. Nothing to refund is a refusal:
// ReasonPaymentNotFound (no payment) or ReasonNotRefundable (DECLINED or
// FAILED). While the charge's or the refund's outcome is unknown it is
// Unavailable (ReasonPaymentPending, ReasonRefundPending): call again.
func (c *Client) Refund(ctx context.Context, orderID string) (Refund, error) {
	resp, err := c.refund(ctx, orderID)
	if err != nil {
		return Refund{}, err
	}
	return resp.(Refund), nil
}

func encodeCharge(_ context.Context, request any) (any, error) {
	c := request.(Charge)
	return &paymentv1.ChargeRequest{OrderId: c.OrderID, UserId: c.UserID, AmountCents: c.AmountCents,
		Currency: c.Currency, CardToken: c.CardToken}, nil
}

func decodeCharge(_ context.Context, reply any) (any, error) {
	return fromProto(reply.(*paymentv1.ChargeResponse).GetPayment()), nil
}

func encodeByOrder(_ context.Context, request any) (any, error) {
	return &paymentv1.GetPaymentByOrderRequest{OrderId: request.(string)}, nil
}

func decodeByOrder(_ context.Context, reply any) (any, error) {
	return fromProto(reply.(*paymentv1.GetPaymentByOrderResponse).GetPayment()), nil
}

func encodeRefund(_ context.Context, request any) (any, error) {
	return &paymentv1.RefundRequest{OrderId: request.(string)}, nil
}

func decodeRefund(_ context.Context, reply any) (any, error) {
	r := reply.(*paymentv1.RefundResponse).GetRefund()
	out := Refund{ID: r.GetId(), PaymentID: r.GetPaymentId(), OrderID: r.GetOrderId(), UserID: r.GetUserId(),
		AmountCents: r.GetAmountCents(), Currency: r.GetCurrency()}
	if r.GetCreatedAt() != nil {
		out.CreatedAt = r.GetCreatedAt().AsTime()
	}
	return out, nil
}

var statuses = map[paymentv1.PaymentStatus]string{
	paymentv1.PaymentStatus_PAYMENT_STATUS_PENDING:   StatusPending,
	paymentv1.PaymentStatus_PAYMENT_STATUS_UNKNOWN:   StatusUnknown,
	paymentv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED: StatusSucceeded,
	paymentv1.PaymentStatus_PAYMENT_STATUS_DECLINED:  StatusDeclined,
	paymentv1.PaymentStatus_PAYMENT_STATUS_FAILED:    StatusFailed,
}

func fromProto(p *paymentv1.Payment) Payment {
	out := Payment{ID: p.GetId(), OrderID: p.GetOrderId(), UserID: p.GetUserId(), Status: statuses[p.GetStatus()],
		AmountCents: p.GetAmountCents(), Currency: p.GetCurrency(), Reason: p.GetReason()}
	if p.GetCreatedAt() != nil {
		out.CreatedAt = p.GetCreatedAt().AsTime()
	}
	return out
}
