package product

import (
	"context"

	grpctransport "github.com/go-kit/kit/transport/grpc"

	"github.com/meshop/meshop/services/kit/rpc"
	productv1 "github.com/meshop/meshop/services/product/proto/meshop/product/v1"
)

// NewGRPCServer serves the internal API, meshop.product.v1.Reservations
// (proto/meshop/product/v1/product.proto), over the same endpoints as the
// HTTP API. It takes no identity: a caller's expiring token must not fail
// a checkout step, and only services inside the mesh reach it. Register it
// on the app's gRPC server:
//
//	productv1.RegisterReservationsServer(a.GRPC, product.NewGRPCServer(endpoints))
func NewGRPCServer(e Endpoints) productv1.ReservationsServer {
	return &grpcServer{
		reserve: grpctransport.NewServer(e.Reserve, decodeGRPCReserve, rpc.EncodeResponse(encodeGRPCReserve)),
		commit:  grpctransport.NewServer(e.Commit, decodeGRPCCommit, rpc.EncodeResponse(encodeGRPCCommit)),
		release: grpctransport.NewServer(e.Release, decodeGRPCRelease, rpc.EncodeResponse(encodeGRPCRelease)),
	}
}

type grpcServer struct {
	productv1.UnimplementedReservationsServer
	reserve, commit, release grpctransport.Handler
}

func (s *grpcServer) Reserve(ctx context.Context, req *productv1.ReserveRequest) (*productv1.ReserveResponse, error) {
	_, resp, err := s.reserve.ServeGRPC(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.(*productv1.ReserveResponse), nil
}

func (s *grpcServer) Commit(ctx context.Context, req *productv1.CommitRequest) (*productv1.CommitResponse, error) {
	_, resp, err := s.commit.ServeGRPC(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.(*productv1.CommitResponse), nil
}

func (s *grpcServer) Release(ctx context.Context, req *productv1.ReleaseRequest) (*productv1.ReleaseResponse, error) {
	_, resp, err := s.release.ServeGRPC(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.(*productv1.ReleaseResponse), nil
}

func decodeGRPCReserve(_ context.Context, request any) (any, error) {
	req := request.(*productv1.ReserveRequest)
	items := make([]ItemRequest, len(req.GetItems()))
	for i, it := range req.GetItems() {
		items[i] = ItemRequest{ProductID: it.GetProductId(), Quantity: int(it.GetQuantity())}
	}
	return reserveRequest{ReserveRequest{OrderID: req.GetOrderId(), Items: items}}, nil
}

func encodeGRPCReserve(_ context.Context, response any) (any, error) {
	return &productv1.ReserveResponse{Reservation: reservationProto(*response.(reservationResponse).Reservation)}, nil
}

func decodeGRPCCommit(_ context.Context, request any) (any, error) {
	return orderIDRequest{OrderID: request.(*productv1.CommitRequest).GetOrderId()}, nil
}

func encodeGRPCCommit(_ context.Context, response any) (any, error) {
	return &productv1.CommitResponse{Reservation: reservationProto(*response.(reservationResponse).Reservation)}, nil
}

func decodeGRPCRelease(_ context.Context, request any) (any, error) {
	return orderIDRequest{OrderID: request.(*productv1.ReleaseRequest).GetOrderId()}, nil
}

func encodeGRPCRelease(_ context.Context, response any) (any, error) {
	return &productv1.ReleaseResponse{Reservation: reservationProto(*response.(reservationResponse).Reservation)}, nil
}

var reservationStatuses = map[string]productv1.ReservationStatus{
	StatusReserved:  productv1.ReservationStatus_RESERVATION_STATUS_RESERVED,
	StatusCommitted: productv1.ReservationStatus_RESERVATION_STATUS_COMMITTED,
	StatusReleased:  productv1.ReservationStatus_RESERVATION_STATUS_RELEASED,
}

func reservationProto(r Reservation) *productv1.Reservation {
	out := &productv1.Reservation{OrderId: r.OrderID, Status: reservationStatuses[r.Status]}
	for _, it := range r.Items {
		out.Items = append(out.Items, &productv1.ReservedItem{ProductId: it.ProductID, Quantity: int32(it.Quantity),
			UnitPriceCents: it.UnitPriceCents, Currency: it.Currency})
	}
	return out
}
