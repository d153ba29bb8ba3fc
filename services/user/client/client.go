// Package client is how other services call the user service's internal
// API, the gRPC service meshop.user.v1.Users (proto/meshop/user/v1):
//
//	caller ──▶ Client.Lookup ──▶ go-kit gRPC client (kit/rpc) ──▶ mesh ──▶ user's NewGRPCServer
//
// Its types are plain Go, not the generated messages, so callers depend on
// this package only. Every error is an *errs.Error (kit/errs): a refusal of
// the user service keeps its kind and its reason (errs.Reason), one of the
// Reason constants below; a call that got no answer is Unavailable.
package client

import (
	"context"
	"time"

	"github.com/go-kit/kit/endpoint"
	"google.golang.org/grpc"

	"github.com/meshop/meshop/services/kit/rpc"
	userv1 "github.com/meshop/meshop/services/user/proto/meshop/user/v1"
)

// The reasons the user service refuses a call: the google.rpc.ErrorInfo
// reason on the wire, in upper snake case. Match with
// errs.Reason(err) == ReasonX. The error's errs Code, as public HTTP error
// bodies show it, is the same in lower snake case ("user_not_found").
const (
	// ReasonInvalidUser: Create got invalid fields (Validation; the details
	// name them).
	ReasonInvalidUser = "INVALID_USER"
	// ReasonInvalidUserID: Lookup or Delete got no id (Invalid).
	ReasonInvalidUserID = "INVALID_USER_ID"
	// ReasonUserNotFound: no profile has the id (NotFound).
	ReasonUserNotFound = "USER_NOT_FOUND"
	// ReasonEmailTaken: Create's email belongs to another profile (Conflict).
	ReasonEmailTaken = "EMAIL_TAKEN"
	// ReasonUserExists: Create's id belongs to another profile (Conflict).
	ReasonUserExists = "USER_EXISTS"
)

// Profile is a user's profile.
type Profile struct {
	ID        string
	Email     string
	Name      string
	Role      string // "customer" or "admin"
	CreatedAt time.Time
}

// NewProfile is what Create takes. ID may be empty (the user service
// chooses one); Role defaults to "customer".
type NewProfile struct {
	ID    string
	Email string
	Name  string
	Role  string
}

// Client calls the user service over one gRPC connection (from the mesh
// client: meshclient.Client.Conn("user")).
type Client struct {
	create, lookup, delete endpoint.Endpoint
}

// New returns a client over conn.
func New(conn *grpc.ClientConn) *Client {
	svc := userv1.Users_ServiceDesc.ServiceName
	return &Client{
		create: rpc.ClientEndpoint(conn, svc, "Create", encodeCreate, decodeCreate, &userv1.CreateResponse{}),
		lookup: rpc.ClientEndpoint(conn, svc, "Lookup", encodeLookup, decodeLookup, &userv1.LookupResponse{}),
		delete: rpc.ClientEndpoint(conn, svc, "Delete", encodeDelete, decodeDelete, &userv1.DeleteResponse{}),
	}
}

// Create creates a profile and returns it as stored.
func (c *Client) Create(ctx context.Context, p NewProfile) (Profile, error) {
	resp, err := c.create(ctx, p)
	if err != nil {
		return Profile{}, err
	}
	return resp.(Profile), nil
}

// Lookup returns the profile id.
func (c *Client) Lookup(ctx context.Context, id string) (Profile, error) {
	resp, err := c.lookup(ctx, id)
	if err != nil {
		return Profile{}, err
	}
	return resp.(Profile), nil
}

// Delete removes the profile id; a missing profile is no error.
func (c *Client) Delete(ctx context.Context, id string) error {
	_, err := c.delete(ctx, id)
	return err
}

func encodeCreate(_ context.Context, request any) (any, error) {
	p := request.(NewProfile)
	return &userv1.CreateRequest{Id: p.ID, Email: p.Email, Name: p.Name, Role: p.Role}, nil
}

func decodeCreate(_ context.Context, reply any) (any, error) {
	return fromProto(reply.(*userv1.CreateResponse).GetProfile()), nil
}

func encodeLookup(_ context.Context, request any) (any, error) {
	return &userv1.LookupRequest{Id: request.(string)}, nil
}

func decodeLookup(_ context.Context, reply any) (any, error) {
	return fromProto(reply.(*userv1.LookupResponse).GetProfile()), nil
}

func encodeDelete(_ context.Context, request any) (any, error) {
	return &userv1.DeleteRequest{Id: request.(string)}, nil
}

func decodeDelete(context.Context, any) (any, error) { return nil, nil }

func fromProto(p *userv1.Profile) Profile {
	out := Profile{ID: p.GetId(), Email: p.GetEmail(), Name: p.GetName(), Role: p.GetRole()}
	if p.GetCreatedAt() != nil {
		out.CreatedAt = p.GetCreatedAt().AsTime()
	}
	return out
}
