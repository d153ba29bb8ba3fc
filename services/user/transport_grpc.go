package user

import (
	"context"

	grpctransport "github.com/go-kit/kit/transport/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meshop/meshop/services/kit/rpc"
	userv1 "github.com/meshop/meshop/services/user/proto/meshop/user/v1"
)

// NewGRPCServer serves the internal API, meshop.user.v1.Users
// (proto/meshop/user/v1/user.proto), over the same endpoints as the HTTP
// API. It takes no token: only services inside the mesh reach it.
// Register it on the app's gRPC server:
//
//	userv1.RegisterUsersServer(a.GRPC, user.NewGRPCServer(endpoints))
func NewGRPCServer(e Endpoints) userv1.UsersServer {
	return &grpcServer{
		create: grpctransport.NewServer(e.Create, decodeGRPCCreate, rpc.EncodeResponse(encodeGRPCCreate)),
		lookup: grpctransport.NewServer(e.Lookup, decodeGRPCLookup, rpc.EncodeResponse(encodeGRPCLookup)),
		delete: grpctransport.NewServer(e.Delete, decodeGRPCDelete, rpc.EncodeResponse(encodeGRPCDelete)),
	}
}

type grpcServer struct {
	userv1.UnimplementedUsersServer
	create, lookup, delete grpctransport.Handler
}

func (s *grpcServer) Create(ctx context.Context, req *userv1.CreateRequest) (*userv1.CreateResponse, error) {
	_, resp, err := s.create.ServeGRPC(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.(*userv1.CreateResponse), nil
}

func (s *grpcServer) Lookup(ctx context.Context, req *userv1.LookupRequest) (*userv1.LookupResponse, error) {
	_, resp, err := s.lookup.ServeGRPC(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.(*userv1.LookupResponse), nil
}

func (s *grpcServer) Delete(ctx context.Context, req *userv1.DeleteRequest) (*userv1.DeleteResponse, error) {
	_, resp, err := s.delete.ServeGRPC(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.(*userv1.DeleteResponse), nil
}

func decodeGRPCCreate(_ context.Context, request any) (any, error) {
	req := request.(*userv1.CreateRequest)
	return createRequest{NewUser{ID: req.GetId(), Email: req.GetEmail(), Name: req.GetName(), Role: req.GetRole()}}, nil
}

func encodeGRPCCreate(_ context.Context, response any) (any, error) {
	return &userv1.CreateResponse{Profile: profileProto(*response.(userResponse).User)}, nil
}

func decodeGRPCLookup(_ context.Context, request any) (any, error) {
	return lookupRequest{ID: request.(*userv1.LookupRequest).GetId()}, nil
}

func encodeGRPCLookup(_ context.Context, response any) (any, error) {
	return &userv1.LookupResponse{Profile: profileProto(*response.(userResponse).User)}, nil
}

func decodeGRPCDelete(_ context.Context, request any) (any, error) {
	return deleteRequest{ID: request.(*userv1.DeleteRequest).GetId()}, nil
}

func encodeGRPCDelete(context.Context, any) (any, error) { return &userv1.DeleteResponse{}, nil }

func profileProto(u User) *userv1.Profile {
	return &userv1.Profile{Id: u.ID, Email: u.Email, Name: u.Name, Role: u.Role, CreatedAt: timestamppb.New(u.CreatedAt)}
}
