// Package client is how other services call the auth service's internal
// API, the gRPC service meshop.auth.v1.Keys (proto/meshop/auth/v1): the
// public keys that verify access tokens. A *Client is the kit/auth
// KeySource of every verifier but auth's own:
//
//	kit/auth Verifier ──▶ Client.JWKS ──▶ go-kit gRPC client (kit/rpc) ──▶ mesh ──▶ auth's NewGRPCServer
//
// Errors are *errs.Error (kit/errs); GetKeySet refuses nothing, so an error
// means auth could not be reached (Unavailable).
package client

import (
	"context"

	"github.com/go-kit/kit/endpoint"
	"google.golang.org/grpc"

	authv1 "github.com/meshop/meshop/services/auth/proto/meshop/auth/v1"
	kitauth "github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/rpc"
)

// Client calls the auth service over one gRPC connection (from the mesh
// client: meshclient.Client.Conn("auth")).
type Client struct {
	getKeySet endpoint.Endpoint
}

var _ kitauth.KeySource = (*Client)(nil)

// New returns a client over conn.
func New(conn *grpc.ClientConn) *Client {
	return &Client{
		getKeySet: rpc.ClientEndpoint(conn, authv1.Keys_ServiceDesc.ServiceName, "GetKeySet",
			encodeGetKeySet, decodeGetKeySet, &authv1.GetKeySetResponse{}),
	}
}

// JWKS returns the current key set: every key a valid token may be signed
// with. It makes *Client a kit/auth KeySource:
//
//	verifier := kitauth.NewVerifier(client.New(conn), kitauth.VerifierConfig{...})
func (c *Client) JWKS(ctx context.Context) (kitauth.JWKS, error) {
	resp, err := c.getKeySet(ctx, nil)
	if err != nil {
		return kitauth.JWKS{}, err
	}
	return resp.(kitauth.JWKS), nil
}

func encodeGetKeySet(context.Context, any) (any, error) { return &authv1.GetKeySetRequest{}, nil }

func decodeGetKeySet(_ context.Context, reply any) (any, error) {
	keys := reply.(*authv1.GetKeySetResponse).GetKeys()
	set := kitauth.JWKS{Keys: make([]kitauth.JWK, len(keys))}
	for i, k := range keys {
		set.Keys[i] = kitauth.JWK{Kty: k.GetKty(), Crv: k.GetCrv(), X: k.GetX(), Y: k.GetY(), Kid: k.GetKid(), Use: k.GetUse(), Alg: k.GetAlg()}
	}
	return set, nil
}
