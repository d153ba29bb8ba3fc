package user

import (
	"context"
	"log/slog"

	"github.com/go-kit/kit/endpoint"

	"github.com/meshop/meshop/services/kit/instrument"
)

// Endpoints are the user service's methods as go-kit endpoints, each
// wrapped once, here, with logging and metrics.
type Endpoints struct {
	Create endpoint.Endpoint
	Get    endpoint.Endpoint
	Me     endpoint.Endpoint
	Lookup endpoint.Endpoint
	Delete endpoint.Endpoint
}

// NewEndpoints wraps svc.
func NewEndpoints(svc Service, logger *slog.Logger, metrics *instrument.Metrics) Endpoints {
	return Endpoints{
		Create: instrument.Endpoint(logger, metrics, "Create")(makeCreateEndpoint(svc)),
		Get:    instrument.Endpoint(logger, metrics, "Get")(makeGetEndpoint(svc)),
		Me:     instrument.Endpoint(logger, metrics, "Me")(makeMeEndpoint(svc)),
		Lookup: instrument.Endpoint(logger, metrics, "Lookup")(makeLookupEndpoint(svc)),
		Delete: instrument.Endpoint(logger, metrics, "Delete")(makeDeleteEndpoint(svc)),
	}
}

type createRequest struct{ NewUser }

type getRequest struct{ ID string }

type meRequest struct{}

type lookupRequest struct{ ID string }

type deleteRequest struct{ ID string }

// userResponse is a user or the error that took its place.
type userResponse struct {
	*User
	Err error `json:"-"`
}

// deleteResponse is empty, or the error that took its place.
type deleteResponse struct {
	Err error
}

var (
	_ endpoint.Failer = userResponse{}
	_ endpoint.Failer = deleteResponse{}
)

func (r userResponse) Failed() error   { return r.Err }
func (r deleteResponse) Failed() error { return r.Err }

func respond(u User, err error) userResponse {
	if err != nil {
		return userResponse{Err: err}
	}
	return userResponse{User: &u}
}

func makeCreateEndpoint(svc Service) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		return respond(svc.Create(ctx, request.(createRequest).NewUser)), nil
	}
}

func makeGetEndpoint(svc Service) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		req := request.(getRequest)
		return respond(svc.Get(ctx, req.ID)), nil
	}
}

func makeMeEndpoint(svc Service) endpoint.Endpoint {
	return func(ctx context.Context, _ any) (any, error) {
		return respond(svc.Me(ctx)), nil
	}
}

func makeLookupEndpoint(svc Service) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		return respond(svc.Lookup(ctx, request.(lookupRequest).ID)), nil
	}
}

func makeDeleteEndpoint(svc Service) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		return deleteResponse{Err: svc.Delete(ctx, request.(deleteRequest).ID)}, nil
	}
}
