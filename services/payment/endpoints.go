package payment

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/go-kit/kit/endpoint"

	"github.com/meshop/meshop/services/kit/instrument"
)

// Endpoints are the payment service's methods as go-kit endpoints, each
// wrapped once, here, with logging and metrics.
type Endpoints struct {
	Charge endpoint.Endpoint
	Get    endpoint.Endpoint
}

// NewEndpoints wraps svc.
func NewEndpoints(svc Service, logger *slog.Logger, metrics *instrument.Metrics) Endpoints {
	return Endpoints{
		Charge: instrument.Endpoint(logger, metrics, "Charge")(makeChargeEndpoint(svc)),
		Get:    instrument.Endpoint(logger, metrics, "Get")(makeGetEndpoint(svc)),
	}
}

type chargeRequest struct{ ChargeRequest }

type getRequest struct{ ID string }

// paymentResponse is a payment or the error that took its place.
type paymentResponse struct {
	*Payment
	Err      error `json:"-"`
	created  bool
	replayed bool
}

var _ endpoint.Failer = paymentResponse{}

func (r paymentResponse) Failed() error { return r.Err }

func (r paymentResponse) StatusCode() int {
	if r.created {
		return http.StatusCreated
	}
	return http.StatusOK
}

// Headers marks an idempotent replay, as the order API does.
func (r paymentResponse) Headers() http.Header {
	if r.replayed {
		return http.Header{"Idempotent-Replayed": {"true"}}
	}
	return nil
}

func makeChargeEndpoint(svc Service) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		p, created, err := svc.Charge(ctx, request.(chargeRequest).ChargeRequest)
		if err != nil {
			return paymentResponse{Err: err}, nil
		}
		return paymentResponse{Payment: &p, created: created, replayed: !created}, nil
	}
}

func makeGetEndpoint(svc Service) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		p, err := svc.Get(ctx, request.(getRequest).ID)
		if err != nil {
			return paymentResponse{Err: err}, nil
		}
		return paymentResponse{Payment: &p}, nil
	}
}
