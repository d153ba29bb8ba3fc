package rpc

import (
	"context"

	"github.com/go-kit/kit/endpoint"
	grpctransport "github.com/go-kit/kit/transport/grpc"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/meshop/meshop/services/kit/errs"
)

// EncodeResponse wraps a go-kit gRPC server's response encoder: a response
// that carries a domain error (an endpoint.Failer) becomes that error, so
// the caller gets its gRPC status (see errs.Error.GRPCStatus); any other
// response is encoded by enc.
func EncodeResponse(enc grpctransport.EncodeResponseFunc) grpctransport.EncodeResponseFunc {
	return func(ctx context.Context, response any) (any, error) {
		if f, ok := response.(endpoint.Failer); ok && f.Failed() != nil {
			return nil, f.Failed()
		}
		return enc(ctx, response)
	}
}

// ClientEndpoint is the go-kit endpoint calling method of the gRPC service
// (its full proto name, e.g. "meshop.user.v1.Users") on conn. Its errors
// are *errs.Error (see errs.FromGRPC): a provider's refusal keeps its kind
// and reason, anything else is Unavailable.
func ClientEndpoint(conn *grpc.ClientConn, service, method string, enc grpctransport.EncodeRequestFunc, dec grpctransport.DecodeResponseFunc, reply proto.Message) endpoint.Endpoint {
	call := grpctransport.NewClient(conn, service, method, enc, dec, reply).Endpoint()
	return func(ctx context.Context, request any) (any, error) {
		response, err := call(ctx, request)
		if err != nil {
			return nil, errs.FromGRPC(err)
		}
		return response, nil
	}
}
