package notification

import (
	"context"
	"log/slog"

	"github.com/go-kit/kit/endpoint"

	"github.com/meshop/meshop/services/kit/instrument"
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

type listRequest struct {
	UserID string
	Limit  int
	Cursor string
}

// listResponse is a page of notifications (DESIGN §2 list shape).
type listResponse struct {
	Items      []Notification `json:"items"`
	NextCursor string         `json:"next_cursor,omitempty"`
	Err        error          `json:"-"`
}

var _ endpoint.Failer = listResponse{}

func (r listResponse) Failed() error { return r.Err }

func makeListEndpoint(svc Service) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		req := request.(listRequest)
		items, next, err := svc.List(ctx, req.UserID, req.Limit, req.Cursor)
		if err != nil {
			return listResponse{Err: err}, nil
		}
		if items == nil {
			items = []Notification{}
		}
		return listResponse{Items: items, NextCursor: next}, nil
	}
}
