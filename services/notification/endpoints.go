package notification

import (
	"context"
	"log/slog"

	"github.com/go-kit/kit/endpoint"

	"github.com/meshop/meshop/services/kit/instrument"
	"github.com/meshop/meshop/services/kit/paging"
)

// Endpoints are the notification service's methods as go-kit endpoints,
// each wrapped once, here, with logging and metrics.
type Endpoints struct {
	List endpoint.Endpoint
}

// NewEndpoints wraps svc.
func NewEndpoints(svc Service, logger *slog.Logger, metrics *instrument.Metrics) Endpoints {
	return Endpoints{List: instrument.Endpoint(logger, metrics, "List")(makeListEndpoint(svc))}
}

type listRequest struct{ Page paging.Request }

// listResponse is a page of notifications or the error that took its place.
type listResponse struct {
	*paging.Page[Notification]
	Err error `json:"-"`
}

var _ endpoint.Failer = listResponse{}

func (r listResponse) Failed() error { return r.Err }

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
