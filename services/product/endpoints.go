package product

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/go-kit/kit/endpoint"

	"github.com/meshop/meshop/services/kit/instrument"
	"github.com/meshop/meshop/services/kit/paging"
)

// Endpoints are the product service's methods as go-kit endpoints, each
// wrapped once, here, with logging and metrics.
type Endpoints struct {
	List    endpoint.Endpoint
	Get     endpoint.Endpoint
	Create  endpoint.Endpoint
	Reserve endpoint.Endpoint
	Commit  endpoint.Endpoint
	Release endpoint.Endpoint
}

// NewEndpoints wraps svc.
func NewEndpoints(svc Service, logger *slog.Logger, metrics *instrument.Metrics) Endpoints {
	wrap := func(method string, e endpoint.Endpoint) endpoint.Endpoint {
		return instrument.Endpoint(logger, metrics, method)(e)
	}
	return Endpoints{
		List:    wrap("List", makeListEndpoint(svc)),
		Get:     wrap("Get", makeGetEndpoint(svc)),
		Create:  wrap("Create", makeCreateEndpoint(svc)),
		Reserve: wrap("Reserve", makeReserveEndpoint(svc)),
		Commit:  wrap("Commit", makeCommitEndpoint(svc)),
		Release: wrap("Release", makeReleaseEndpoint(svc)),
	}
}

type getRequest struct{ ID string }

type createRequest struct{ NewProduct }

type reserveRequest struct{ ReserveRequest }

// orderIDRequest names the reservation to commit or release.
type orderIDRequest struct{ OrderID string }

// pageResponse is a page of products or the error that took its place.
type pageResponse struct {
	*paging.Page[Product]
	Err error `json:"-"`
}

// productResponse is a product or the error that took its place.
type productResponse struct {
	*Product
	Err     error `json:"-"`
	created bool
}

// reservationResponse is a reservation or the error that took its place.
type reservationResponse struct {
	*Reservation
	Err error
}

var (
	_ endpoint.Failer = pageResponse{}
	_ endpoint.Failer = productResponse{}
	_ endpoint.Failer = reservationResponse{}
)

func (r pageResponse) Failed() error        { return r.Err }
func (r productResponse) Failed() error     { return r.Err }
func (r reservationResponse) Failed() error { return r.Err }

func (r productResponse) StatusCode() int {
	if r.created {
		return http.StatusCreated
	}
	return http.StatusOK
}

func makeListEndpoint(svc Service) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		p, err := svc.List(ctx, request.(paging.Request))
		if err != nil {
			return pageResponse{Err: err}, nil
		}
		return pageResponse{Page: &p}, nil
	}
}

func makeGetEndpoint(svc Service) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		p, err := svc.Get(ctx, request.(getRequest).ID)
		if err != nil {
			return productResponse{Err: err}, nil
		}
		return productResponse{Product: &p}, nil
	}
}

func makeCreateEndpoint(svc Service) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		p, err := svc.Create(ctx, request.(createRequest).NewProduct)
		if err != nil {
			return productResponse{Err: err}, nil
		}
		return productResponse{Product: &p, created: true}, nil
	}
}

func makeReserveEndpoint(svc Service) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		r, _, err := svc.Reserve(ctx, request.(reserveRequest).ReserveRequest)
		if err != nil {
			return reservationResponse{Err: err}, nil
		}
		return reservationResponse{Reservation: &r}, nil
	}
}

func makeCommitEndpoint(svc Service) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		r, err := svc.Commit(ctx, request.(orderIDRequest).OrderID)
		if err != nil {
			return reservationResponse{Err: err}, nil
		}
		return reservationResponse{Reservation: &r}, nil
	}
}

func makeReleaseEndpoint(svc Service) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		r, err := svc.Release(ctx, request.(orderIDRequest).OrderID)
		if err != nil {
			return reservationResponse{Err: err}, nil
		}
		return reservationResponse{Reservation: &r}, nil
	}
}
