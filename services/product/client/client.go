// Package client is how other services call the product service's
// internal API, the gRPC service meshop.product.v1.Reservations
// (proto/meshop/product/v1): order reserves stock at checkout, then
// commits the reservation (paid) or releases it (cancelled).
//
//	order ──▶ Client.Reserve ──▶ go-kit gRPC client (kit/rpc) ──▶ mesh ──▶ product's NewGRPCServer
//
// Its types are plain Go, not the generated messages, so callers depend on
// this package only. Every error is an *errs.Error (kit/errs): a refusal of
// the product service keeps its kind and its reason (errs.Reason), one of
// the Reason constants below; a call that got no answer is Unavailable.
package client

import (
	"context"
	"math"

	"github.com/go-kit/kit/endpoint"
	"google.golang.org/grpc"

	"github.com/meshop/meshop/services/kit/rpc"
	productv1 "github.com/meshop/meshop/services/product/proto/meshop/product/v1"
)

// The reasons the product service refuses a reservation call: the
// google.rpc.ErrorInfo reason on the wire, in upper snake case. Match with
// errs.Reason(err) == ReasonX. The error's errs Code, as the public HTTP
// error bodies of the callers that pass it on show it, is the same in lower
// snake case ("out_of_stock").
const (
	// ReasonInvalidReservation: Reserve got invalid fields (Validation;
	// the details name them).
	ReasonInvalidReservation = "INVALID_RESERVATION"
	// ReasonUnknownProduct: an item names no product (Validation; details
	// {product_id}).
	ReasonUnknownProduct = "UNKNOWN_PRODUCT"
	// ReasonOutOfStock: an item wants more than is left (Conflict; details
	// {product_id, requested, available}).
	ReasonOutOfStock = "OUT_OF_STOCK"
	// ReasonIdempotencyMismatch: the order reserved other items before
	// (Conflict).
	ReasonIdempotencyMismatch = "IDEMPOTENCY_MISMATCH"
	// ReasonReservationReleased: the order's reservation was released; it
	// can neither reserve again nor commit (Conflict).
	ReasonReservationReleased = "RESERVATION_RELEASED"
	// ReasonReservationCommitted: the order's reservation was committed; it
	// cannot be released (Conflict).
	ReasonReservationCommitted = "RESERVATION_COMMITTED"
	// ReasonReservationNotFound: Commit found no reservation for the order
	// (NotFound).
	ReasonReservationNotFound = "RESERVATION_NOT_FOUND"
	// ReasonReservationBusy: another call for the same order is in flight;
	// retry (Unavailable).
	ReasonReservationBusy = "RESERVATION_BUSY"
	// ReasonInvalidOrderID: Commit or Release got no valid order id
	// (Invalid or Validation).
	ReasonInvalidOrderID = "INVALID_ORDER_ID"
)

// Reservation statuses.
const (
	StatusReserved  = "RESERVED"
	StatusCommitted = "COMMITTED"
	StatusReleased  = "RELEASED"
)

// Item is one line to reserve.
type Item struct {
	ProductID string
	Quantity  int
}

// Reservation is the stock held for one order.
type Reservation struct {
	OrderID string
	Status  string         // StatusReserved, StatusCommitted or StatusReleased
	Items   []ReservedItem // Reserve's answer only
}

// ReservedItem is one reserved line, priced: the price the order pays.
type ReservedItem struct {
	ProductID      string
	Quantity       int
	UnitPriceCents int64
	Currency       string
}

// Client calls the product service over one gRPC connection (from the
// mesh client: meshclient.Client.Conn("product")).
type Client struct {
	reserve, commit, release endpoint.Endpoint
}

// New returns a client over conn.
func New(conn *grpc.ClientConn) *Client {
	svc := productv1.Reservations_ServiceDesc.ServiceName
	return &Client{
		reserve: rpc.ClientEndpoint(conn, svc, "Reserve", encodeReserve, decodeReserve, &productv1.ReserveResponse{}),
		commit:  rpc.ClientEndpoint(conn, svc, "Commit", encodeCommit, decodeCommit, &productv1.CommitResponse{}),
		release: rpc.ClientEndpoint(conn, svc, "Release", encodeRelease, decodeRelease, &productv1.ReleaseResponse{}),
	}
}

// Reserve reserves all items for orderID, or none, and returns them priced.
// A repeat with the same items returns the first reservation.
func (c *Client) Reserve(ctx context.Context, orderID string, items []Item) (Reservation, error) {
	resp, err := c.reserve(ctx, reserveRequest{orderID: orderID, items: items})
	if err != nil {
		return Reservation{}, err
	}
	return resp.(Reservation), nil
}

// Commit keeps orderID's reserved stock (the order is paid). Idempotent.
func (c *Client) Commit(ctx context.Context, orderID string) (Reservation, error) {
	resp, err := c.commit(ctx, orderID)
	if err != nil {
		return Reservation{}, err
	}
	return resp.(Reservation), nil
}

// Release gives orderID's reserved stock back (the order is cancelled).
// Idempotent; an order that never reserved is recorded as released.
func (c *Client) Release(ctx context.Context, orderID string) (Reservation, error) {
	resp, err := c.release(ctx, orderID)
	if err != nil {
		return Reservation{}, err
	}
	return resp.(Reservation), nil
}

type reserveRequest struct {
	orderID string
	items   []Item
}

func encodeReserve(_ context.Context, request any) (any, error) {
	req := request.(reserveRequest)
	items := make([]*productv1.Item, len(req.items))
	for i, it := range req.items {
		items[i] = &productv1.Item{ProductId: it.ProductID, Quantity: clamp32(it.Quantity)}
	}
	return &productv1.ReserveRequest{OrderId: req.orderID, Items: items}, nil
}

func decodeReserve(_ context.Context, reply any) (any, error) {
	return fromProto(reply.(*productv1.ReserveResponse).GetReservation()), nil
}

func encodeCommit(_ context.Context, request any) (any, error) {
	return &productv1.CommitRequest{OrderId: request.(string)}, nil
}

func decodeCommit(_ context.Context, reply any) (any, error) {
	return fromProto(reply.(*productv1.CommitResponse).GetReservation()), nil
}

func encodeRelease(_ context.Context, request any) (any, error) {
	return &productv1.ReleaseRequest{OrderId: request.(string)}, nil
}

func decodeRelease(_ context.Context, reply any) (any, error) {
	return fromProto(reply.(*productv1.ReleaseResponse).GetReservation()), nil
}

// clamp32 is n as an int32, saturated: a quantity out of range stays out
// of range (and is refused) instead of wrapping around into a valid one.
func clamp32(n int) int32 {
	return int32(max(min(n, math.MaxInt32), math.MinInt32))
}

var statuses = map[productv1.ReservationStatus]string{
	productv1.ReservationStatus_RESERVATION_STATUS_RESERVED:  StatusReserved,
	productv1.ReservationStatus_RESERVATION_STATUS_COMMITTED: StatusCommitted,
	productv1.ReservationStatus_RESERVATION_STATUS_RELEASED:  StatusReleased,
}

func fromProto(r *productv1.Reservation) Reservation {
	out := Reservation{OrderID: r.GetOrderId(), Status: statuses[r.GetStatus()]}
	for _, it := range r.GetItems() {
		out.Items = append(out.Items, ReservedItem{ProductID: it.GetProductId(), Quantity: int(it.GetQuantity()),
			UnitPriceCents: it.GetUnitPriceCents(), Currency: it.GetCurrency()})
	}
	return out
}
