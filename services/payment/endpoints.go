package payment

import (
	"context"
	"log/slog"

	"github.com/go-kit/kit/endpoint"

	"github.com/meshop/meshop/services/kit/instrument"
)

// Endpoints are the payment service's methods as go-kit endpoints, each
// wrapped once, here, with logging and metrics.
type Endpoints struct {
	Charge     endpoint.Endpoint
	Get        endpoint.Endpoint
	GetByOrder endpoint.Endpoint
	Refund     endpoint.Endpoint
}

// NewEndpoints wraps svc.
func NewEndpoints(svc Service, logger *slog.Logger, metrics *instrument.Metrics) Endpoints {
	return Endpoints{
		Charge:     instrument.Endpoint(logger, metrics, "Charge")(makeChargeEndpoint(svc)),
		Get:        instrument.Endpoint(logger, metrics, "Get")(makeGetEndpoint(svc)),
		GetByOrder: instrument.Endpoint(logger, metrics, "GetByOrder")(makeGetByOrderEndpoint(svc)),
		Refund:     instrument.Endpoint(logger, metrics, "Refund")(makeRefundEndpoint(svc)),
	}
}

type chargeRequest struct{ ChargeRequest }

type getRequest struct{ ID string }

type getByOrderRequest struct{ OrderID string }

type refundRequest struct{ OrderID string }

// paymentResponse is a payment or the error that took its place.
type paymentResponse struct {
	*Payment
	Err error `json:"-"`
}

var _ endpoint.Failer = paymentResponse{}

func (r paymentResponse) Failed() error { return r.Err }

func respond(p Payment, err error) paymentResponse {
	if err != nil {
		return paymentResponse{Err: err}
	}
	return paymentResponse{Payment: &p}
}

func makeChargeEndpoint(svc Service) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		p, _, err := svc.Charge(ctx, request.(chargeRequest).ChargeRequest)
		return respond(p, err), nil
	}
}

func makeGetEndpoint(svc Service) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		return respond(svc.Get(ctx, request.(getRequest).ID)), nil
	}
}

func makeGetByOrderEndpoint(svc Service) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		return respond(svc.GetByOrder(ctx, request.(getByOrderRequest).OrderID)), nil
	}
}

// refundResponse is a refund or the error that took its place.
type refundResponse struct {
	*Refund
	Err error `json:"-"`
}

var _ endpoint.Failer = refundResponse{}

func (r refundResponse) Failed() error { return r.Err }

func makeRefundEndpoint(svc Service) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		r, err := svc.Refund(ctx, request.(refundRequest).OrderID)
		if err != nil {
			return refundResponse{Err: err}, nil
		}
		return refundResponse{Refund: &r}, nil
	}
}
