package order

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/go-kit/kit/endpoint"

	"github.com/meshop/meshop/services/kit/instrument"
	"github.com/meshop/meshop/services/kit/paging"
)

// Endpoints are the order service's methods as go-kit endpoints, each
// wrapped once, here, with logging and metrics.
type Endpoints struct {
	Create endpoint.Endpoint
	Get    endpoint.Endpoint
	List   endpoint.Endpoint
}

// NewEndpoints wraps svc.
func NewEndpoints(svc Service, logger *slog.Logger, metrics *instrument.Metrics) Endpoints {
	return Endpoints{
		Create: instrument.Endpoint(logger, metrics, "Create")(makeCreateEndpoint(svc)),
		Get:    instrument.Endpoint(logger, metrics, "Get")(makeGetEndpoint(svc)),
		List:   instrument.Endpoint(logger, metrics, "List")(makeListEndpoint(svc)),
	}
}

type createRequest struct {
	IdempotencyKey string
	Body           CreateRequest
}

type getRequest struct{ ID string }

type listRequest struct{ Page paging.Request }

// listResponse is a page of orders or the error that took its place.
type listResponse struct {
	*paging.Page[Order]
	Err error `json:"-"`
}

var _ endpoint.Failer = listResponse{}

func (r listResponse) Failed() error { return r.Err }

// orderResponse is an order or the error that took its place.
type orderResponse struct {
	*Order
	Err      error `json:"-"`
	created  bool
	replayed bool
}

var _ endpoint.Failer = orderResponse{}

func (r orderResponse) Failed() error { return r.Err }

func (r orderResponse) StatusCode() int {
	if r.created {
		return http.StatusCreated
	}
	return http.StatusOK
}

// Headers marks an idempotent replay, as payment APIs do.
func (r orderResponse) Headers() http.Header {
	if r.replayed {
		return http.Header{"Idempotent-Replayed": {"true"}}
	}
	return nil
}

func makeCreateEndpoint(svc Service) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		req := request.(createRequest)
		o, replayed, err := svc.Create(ctx, req.IdempotencyKey, req.Body)
		if err != nil {
			return orderResponse{Err: err}, nil
		}
		return orderResponse{Order: &o, created: true, replayed: replayed}, nil
	}
}

func makeGetEndpoint(svc Service) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		req := request.(getRequest)
		o, err := svc.Get(ctx, req.ID)
		if err != nil {
			return orderResponse{Err: err}, nil
		}
		return orderResponse{Order: &o}, nil
	}
}

func makeListEndpoint(svc Service) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		req := request.(listRequest)
		page, err := svc.List(ctx, req.Page)
		if err != nil {
			return listResponse{Err: err}, nil
		}
		return listResponse{Page: &page}, nil
	}
}
