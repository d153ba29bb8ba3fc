package order

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meshop/meshop/services/kit/kittest"
	paymentclient "github.com/meshop/meshop/services/payment/client"
	paymentv1 "github.com/meshop/meshop/services/payment/proto/meshop/payment/v1"
	productclient "github.com/meshop/meshop/services/product/client"
	productv1 "github.com/meshop/meshop/services/product/proto/meshop/product/v1"
	userclient "github.com/meshop/meshop/services/user/client"
	userv1 "github.com/meshop/meshop/services/user/proto/meshop/user/v1"
)

// The fakes, served as the providers' gRPC services: a fake's *errs.Error
// goes over the wire as a gRPC status, as a provider's does, so the
// adapters (NewUsers, NewInventory, NewPayments) are tested with the
// providers' client packages end to end.

type usersServer struct {
	userv1.UnimplementedUsersServer
	fake fakeUsers
}

func (s usersServer) Lookup(ctx context.Context, req *userv1.LookupRequest) (*userv1.LookupResponse, error) {
	p, err := s.fake.Get(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	return &userv1.LookupResponse{Profile: &userv1.Profile{Id: p.ID, Email: p.Email, Name: p.Name, Role: p.Role,
		CreatedAt: timestamppb.New(p.CreatedAt)}}, nil
}

type reservationsServer struct {
	productv1.UnimplementedReservationsServer
	fake *fakeInventory
}

var reservationStatus = map[string]productv1.ReservationStatus{
	productclient.StatusReserved:  productv1.ReservationStatus_RESERVATION_STATUS_RESERVED,
	productclient.StatusCommitted: productv1.ReservationStatus_RESERVATION_STATUS_COMMITTED,
	productclient.StatusReleased:  productv1.ReservationStatus_RESERVATION_STATUS_RELEASED,
}

func (s reservationsServer) Reserve(ctx context.Context, req *productv1.ReserveRequest) (*productv1.ReserveResponse, error) {
	var lines []ItemRequest
	for _, it := range req.GetItems() {
		lines = append(lines, ItemRequest{ProductID: it.GetProductId(), Quantity: int(it.GetQuantity())})
	}
	r, err := s.fake.Reserve(ctx, req.GetOrderId(), lines)
	if err != nil {
		return nil, err
	}
	out := &productv1.Reservation{OrderId: r.OrderID, Status: reservationStatus[r.Status]}
	for _, it := range r.Items {
		out.Items = append(out.Items, &productv1.ReservedItem{ProductId: it.ProductID, Quantity: int32(it.Quantity),
			UnitPriceCents: it.UnitPriceCents, Currency: it.Currency})
	}
	return &productv1.ReserveResponse{Reservation: out}, nil
}

func (s reservationsServer) Commit(ctx context.Context, req *productv1.CommitRequest) (*productv1.CommitResponse, error) {
	if err := s.fake.Commit(ctx, req.GetOrderId()); err != nil {
		return nil, err
	}
	return &productv1.CommitResponse{Reservation: &productv1.Reservation{OrderId: req.GetOrderId(),
		Status: productv1.ReservationStatus_RESERVATION_STATUS_COMMITTED}}, nil
}

func (s reservationsServer) Release(ctx context.Context, req *productv1.ReleaseRequest) (*productv1.ReleaseResponse, error) {
	if err := s.fake.Release(ctx, req.GetOrderId()); err != nil {
		return nil, err
	}
	return &productv1.ReleaseResponse{Reservation: &productv1.Reservation{OrderId: req.GetOrderId(),
		Status: productv1.ReservationStatus_RESERVATION_STATUS_RELEASED}}, nil
}

type paymentsServer struct {
	paymentv1.UnimplementedPaymentsServer
	fake *fakePayments
}

var paymentStatus = map[string]paymentv1.PaymentStatus{
	paymentclient.StatusSucceeded: paymentv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED,
	paymentclient.StatusDeclined:  paymentv1.PaymentStatus_PAYMENT_STATUS_DECLINED,
	paymentclient.StatusFailed:    paymentv1.PaymentStatus_PAYMENT_STATUS_FAILED,
}

func (s paymentsServer) Charge(ctx context.Context, req *paymentv1.ChargeRequest) (*paymentv1.ChargeResponse, error) {
	p, err := s.fake.Charge(ctx, Charge{OrderID: req.GetOrderId(), UserID: req.GetUserId(), AmountCents: req.GetAmountCents(),
		Currency: req.GetCurrency(), CardToken: req.GetCardToken()})
	if err != nil {
		return nil, err
	}
	return &paymentv1.ChargeResponse{Payment: &paymentv1.Payment{Id: p.ID, OrderId: req.GetOrderId(), Status: paymentStatus[p.Status]}}, nil
}

// upstreams are the adapters over a gRPC server that serves the fakes.
type upstreams struct {
	users     Users
	inventory Inventory
	payments  Payments
	stop      func() // stops the server: every later call finds it unreachable
}

func serveFakes(t *testing.T, users fakeUsers, inventory *fakeInventory, payments *fakePayments) upstreams {
	t.Helper()
	conn, stop := kittest.ServeGRPC(t, func(s grpc.ServiceRegistrar) {
		userv1.RegisterUsersServer(s, usersServer{fake: users})
		productv1.RegisterReservationsServer(s, reservationsServer{fake: inventory})
		paymentv1.RegisterPaymentsServer(s, paymentsServer{fake: payments})
	})
	return upstreams{
		users:     NewUsers(userclient.New(conn)),
		inventory: NewInventory(productclient.New(conn)),
		payments:  NewPayments(paymentclient.New(conn)),
		stop:      stop,
	}
}
