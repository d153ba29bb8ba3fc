package notification

import (
	"context"
	"testing"

	"google.golang.org/grpc"

	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/kittest"
	userclient "github.com/meshop/meshop/services/user/client"
	userv1 "github.com/meshop/meshop/services/user/proto/meshop/user/v1"
)

// usersServer answers Lookup from a map of emails, as the user service.
type usersServer struct {
	userv1.UnimplementedUsersServer
	emails map[string]string
}

func (s usersServer) Lookup(_ context.Context, req *userv1.LookupRequest) (*userv1.LookupResponse, error) {
	email, ok := s.emails[req.GetId()]
	if !ok {
		return nil, errs.New(errs.NotFound, userclient.ReasonUserNotFound, "no user")
	}
	return &userv1.LookupResponse{Profile: &userv1.Profile{Id: req.GetId(), Email: email}}, nil
}

func TestRecipientsOverGRPC(t *testing.T) {
	conn, _ := kittest.ServeGRPC(t, func(s grpc.ServiceRegistrar) {
		userv1.RegisterUsersServer(s, usersServer{emails: map[string]string{"u1": "ada@example.com"}})
	})
	recipients := NewRecipients(userclient.New(conn))

	ctx := context.Background()
	if email, err := recipients.Email(ctx, "u1"); err != nil || email != "ada@example.com" {
		t.Errorf("Email(u1) = %q, %v", email, err)
	}
	_, err := recipients.Email(ctx, "u9")
	if e := errs.As(err); e.Kind != errs.NotFound || errs.Reason(err) != userclient.ReasonUserNotFound {
		t.Errorf("Email(u9) = %v, want NotFound %s", err, userclient.ReasonUserNotFound)
	}
}
