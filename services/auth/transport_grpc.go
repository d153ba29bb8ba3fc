package auth

import (
	"context"

	grpctransport "github.com/go-kit/kit/transport/grpc"

	authv1 "github.com/meshop/meshop/services/auth/proto/meshop/auth/v1"
	"github.com/meshop/meshop/services/kit/rpc"
)

// NewGRPCServer serves the internal API, meshop.auth.v1.Keys
// (proto/meshop/auth/v1/auth.proto): the token-verification keys, for the
// other services' verifiers, over the same endpoint as GET /auth/jwks.
// Register it on the app's gRPC server:
//
//	authv1.RegisterKeysServer(a.GRPC, auth.NewGRPCServer(endpoints))
func NewGRPCServer(e Endpoints) authv1.KeysServer {
	return &grpcServer{
		getKeySet: grpctransport.NewServer(e.JWKS, decodeGRPCGetKeySet, rpc.EncodeResponse(encodeGRPCGetKeySet)),
	}
}

type grpcServer struct {
	authv1.UnimplementedKeysServer
	getKeySet grpctransport.Handler
}

func (s *grpcServer) GetKeySet(ctx context.Context, req *authv1.GetKeySetRequest) (*authv1.GetKeySetResponse, error) {
	_, resp, err := s.getKeySet.ServeGRPC(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.(*authv1.GetKeySetResponse), nil
}

func decodeGRPCGetKeySet(context.Context, any) (any, error) { return jwksRequest{}, nil }

func encodeGRPCGetKeySet(_ context.Context, response any) (any, error) {
	set := response.(jwksResponse).JWKS
	out := &authv1.GetKeySetResponse{Keys: make([]*authv1.Key, len(set.Keys))}
	for i, k := range set.Keys {
		out.Keys[i] = &authv1.Key{Kid: k.Kid, Kty: k.Kty, Crv: k.Crv, X: k.X, Y: k.Y, Use: k.Use, Alg: k.Alg}
	}
	return out, nil
}
