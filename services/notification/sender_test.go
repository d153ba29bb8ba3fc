package notification

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/meshop/meshop/services/kit/errs"
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
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	userv1.RegisterUsersServer(srv, usersServer{emails: map[string]string{"u1": "ada@example.com"}})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	conn, err := grpc.NewClient("passthrough:///user",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	recipients := NewRecipients(userclient.New(conn))

	ctx := context.Background()
	if email, err := recipients.Email(ctx, "u1"); err != nil || email != "ada@example.com" {
		t.Errorf("Email(u1) = %q, %v", email, err)
	}
	_, err = recipients.Email(ctx, "u9")
	if e := errs.As(err); e.Kind != errs.NotFound || errs.Reason(err) != userclient.ReasonUserNotFound {
		t.Errorf("Email(u9) = %v, want NotFound %s", err, userclient.ReasonUserNotFound)
	}
}
