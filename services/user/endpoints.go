package user

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/go-kit/kit/endpoint"

	"github.com/meshop/meshop/services/kit/instrument"
)

// Endpoints are the user service's methods as go-kit endpoints, each
// wrapped once, here, with logging and metrics.
type Endpoints struct {
	Create endpoint.Endpoint
	Get    endpoint.Endpoint
}

// NewEndpoints wraps svc.
func NewEndpoints(svc Service, logger *slog.Logger, metrics *instrument.Metrics) Endpoints {
	return Endpoints{
		Create: instrument.Endpoint(logger, metrics, "Create")(makeCreateEndpoint(svc)),
		Get:    instrument.Endpoint(logger, metrics, "Get")(makeGetEndpoint(svc)),
	}
}

type createRequest struct{ NewUser }

type getRequest struct{ ID string }

// userResponse is a user or the error that took its place.
type userResponse struct {
	*User
	Err     error `json:"-"`
	created bool
}

var _ endpoint.Failer = userResponse{}

func (r userResponse) Failed() error { return r.Err }

func (r userResponse) StatusCode() int {
	if r.created {
		return http.StatusCreated
	}
	return http.StatusOK
}

func makeCreateEndpoint(svc Service) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		u, err := svc.Create(ctx, request.(createRequest).NewUser)
		if err != nil {
			return userResponse{Err: err}, nil
		}
		return userResponse{User: &u, created: true}, nil
	}
}

func makeGetEndpoint(svc Service) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		u, err := svc.Get(ctx, request.(getRequest).ID)
		if err != nil {
			return userResponse{Err: err}, nil
		}
		return userResponse{User: &u}, nil
	}
}
