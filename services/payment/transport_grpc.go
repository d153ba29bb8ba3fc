package payment

import (
	"context"

	grpctransport "github.com/go-kit/kit/transport/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meshop/meshop/services/kit/rpc"
	paymentv1 "github.com/meshop/meshop/services/payment/proto/meshop/payment/v1"
)

// NewGRPCServer serves the internal API, meshop.payment.v1.Payments
// (proto/meshop/payment/v1/payment.proto), over the same endpoints as the
// HTTP API. It takes no identity: only services inside the mesh reach it.
// Register it on the app's gRPC server:
//
//	paymentv1.RegisterPaymentsServer(a.GRPC, payment.NewGRPCServer(endpoints))
func NewGRPCServer(e Endpoints) paymentv1.PaymentsServer {
	return &grpcServer{
		charge:  grpctransport.NewServer(e.Charge, decodeGRPCCharge, rpc.EncodeResponse(encodeGRPCCharge)),
		byOrder: grpctransport.NewServer(e.GetByOrder, decodeGRPCGetByOrder, rpc.EncodeResponse(encodeGRPCGetByOrder)),
		refund:  grpctransport.NewServer(e.Refund, decodeGRPCRefund, rpc.EncodeResponse(encodeGRPCRefund)),
	}
}

type grpcServer struct {
	paymentv1.UnimplementedPaymentsServer
	charge, byOrder, refund grpctransport.Handler
}

func (s *grpcServer) Charge(ctx context.Context, req *paymentv1.ChargeRequest) (*paymentv1.ChargeResponse, error) {
	_, resp, err := s.charge.ServeGRPC(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.(*paymentv1.ChargeResponse), nil
}

func (s *grpcServer) GetPaymentByOrder(ctx context.Context, req *paymentv1.GetPaymentByOrderRequest) (*paymentv1.GetPaymentByOrderResponse, error) {
	_, resp, err := s.byOrder.ServeGRPC(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.(*paymentv1.GetPaymentByOrderResponse), nil
}

func (s *grpcServer) Refund(ctx context.Context, req *paymentv1.RefundRequest) (*paymentv1.RefundResponse, error) {
	_, resp, err := s.refund.ServeGRPC(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.(*paymentv1.RefundResponse), nil
}

func decodeGRPCCharge(_ context.Context, request any) (any, error) {
	req := request.(*paymentv1.ChargeRequest)
	return chargeRequest{ChargeRequest{OrderID: req.GetOrderId(), UserID: req.GetUserId(), AmountCents: req.GetAmountCents(),
		Currency: req.GetCurrency(), CardToken: req.GetCardToken()}}, nil
}

func encodeGRPCCharge(_ context.Context, response any) (any, error) {
	return &paymentv1.ChargeResponse{Payment: paymentProto(*response.(paymentResponse).Payment)}, nil
}

func decodeGRPCGetByOrder(_ context.Context, request any) (any, error) {
	return getByOrderRequest{OrderID: request.(*paymentv1.GetPaymentByOrderRequest).GetOrderId()}, nil
}

func encodeGRPCGetByOrder(_ context.Context, response any) (any, error) {
	return &paymentv1.GetPaymentByOrderResponse{Payment: paymentProto(*response.(paymentResponse).Payment)}, nil
}

func decodeGRPCRefund(_ context.Context, request any) (any, error) {
	return refundRequest{OrderID: request.(*paymentv1.RefundRequest).GetOrderId()}, nil
}

func encodeGRPCRefund(_ context.Context, response any) (any, error) {
	r := *response.(refundResponse).Refund
	return &paymentv1.RefundResponse{Refund: &paymentv1.Refund{Id: r.ID, PaymentId: r.PaymentID, OrderId: r.OrderID, UserId: r.UserID,
		AmountCents: r.AmountCents, Currency: r.Currency, CreatedAt: timestamppb.New(r.CreatedAt)}}, nil
}

var paymentStatuses = map[string]paymentv1.PaymentStatus{
	StatusPending:   paymentv1.PaymentStatus_PAYMENT_STATUS_PENDING,
	StatusUnknown:   paymentv1.PaymentStatus_PAYMENT_STATUS_UNKNOWN,
	StatusSucceeded: paymentv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED,
	StatusDeclined:  paymentv1.PaymentStatus_PAYMENT_STATUS_DECLINED,
	StatusFailed:    paymentv1.PaymentStatus_PAYMENT_STATUS_FAILED,
}

// paymentProto is p as sent: never the card token or the provider's charge id.
func paymentProto(p Payment) *paymentv1.Payment {
	return &paymentv1.Payment{Id: p.ID, OrderId: p.OrderID, UserId: p.UserID, Status: paymentStatuses[p.Status],
		AmountCents: p.AmountCents, Currency: p.Currency, Reason: p.Reason, CreatedAt: timestamppb.New(p.CreatedAt)}
}
