package auth

import (
	"context"
	"log/slog"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/meshop/meshop/services/auth/client"
	authv1 "github.com/meshop/meshop/services/auth/proto/meshop/auth/v1"
	kitauth "github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/instrument"
	"github.com/meshop/meshop/services/kit/kittest"
	userclient "github.com/meshop/meshop/services/user/client"
	userv1 "github.com/meshop/meshop/services/user/proto/meshop/user/v1"
)

// TestGRPCKeySet checks that the client is a KeySource: a verifier that
// fetches the keys over gRPC verifies auth's tokens.
func TestGRPCKeySet(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, Config{})
	e := NewEndpoints(f.svc, slog.New(slog.DiscardHandler), instrument.NewMetrics(prometheus.NewRegistry(), "auth"))
	conn, stop := kittest.ServeGRPC(t, func(s grpc.ServiceRegistrar) { authv1.RegisterKeysServer(s, NewGRPCServer(e)) })
	keys := client.New(conn)

	got, err := keys.JWKS(ctx)
	if diff := cmp.Diff(f.keys.JWKS(ctx), got); err != nil || diff != "" || len(got.Keys) != 1 {
		t.Fatalf("JWKS: %v (-served +got):\n%s", err, diff)
	}

	id, err := f.svc.Register(ctx, RegisterRequest{Email: "ada@example.com", Password: "correct horse", Name: "Ada"})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := f.svc.Login(ctx, LoginRequest{Email: "ada@example.com", Password: "correct horse"}, "10.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	verifier := kitauth.NewVerifier(keys, kitauth.VerifierConfig{Now: f.clock.Now})
	if who, err := verifier.Verify(ctx, tok.AccessToken); err != nil || who.UserID != id {
		t.Errorf("Verify = %+v, %v", who, err)
	}

	stop()
	if _, err := keys.JWKS(ctx); !errs.Is(err, errs.Unavailable) {
		t.Errorf("auth down: %v, want Unavailable", err)
	}
}

// usersServer serves a fakeUsers as the user service's gRPC API.
type usersServer struct {
	userv1.UnimplementedUsersServer
	fake *fakeUsers
}

func (s usersServer) Create(ctx context.Context, req *userv1.CreateRequest) (*userv1.CreateResponse, error) {
	p := Profile{ID: req.GetId(), Email: req.GetEmail(), Name: req.GetName(), Role: req.GetRole()}
	if err := s.fake.Create(ctx, p); err != nil {
		return nil, err
	}
	return &userv1.CreateResponse{Profile: &userv1.Profile{Id: p.ID, Email: p.Email, Name: p.Name, Role: p.Role}}, nil
}

func (s usersServer) Lookup(ctx context.Context, req *userv1.LookupRequest) (*userv1.LookupResponse, error) {
	p, err := s.fake.Get(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	return &userv1.LookupResponse{Profile: &userv1.Profile{Id: p.ID, Email: p.Email, Name: p.Name, Role: p.Role}}, nil
}

func (s usersServer) Delete(ctx context.Context, req *userv1.DeleteRequest) (*userv1.DeleteResponse, error) {
	if err := s.fake.Delete(ctx, req.GetId()); err != nil {
		return nil, err
	}
	return &userv1.DeleteResponse{}, nil
}

// TestUsersOverGRPC runs registration and login with the user service
// reached over gRPC, through NewUsers.
func TestUsersOverGRPC(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, Config{})
	conn, stop := kittest.ServeGRPC(t, func(s grpc.ServiceRegistrar) { userv1.RegisterUsersServer(s, usersServer{fake: f.users}) })
	svc := New(f.store, NewUsers(userclient.New(conn)), f.keys, Config{Hasher: testHasher, Now: f.clock.Now})

	id, err := svc.Register(ctx, RegisterRequest{Email: "root@example.com", Password: "correct horse", Name: "Root"})
	if err != nil {
		t.Fatal(err)
	}
	if p := f.users.profiles[id]; p.Email != "root@example.com" || p.Name != "Root" || p.Role != kitauth.RoleCustomer {
		t.Errorf("profile created = %+v", p)
	}
	// An operator makes root an admin in user; the next login carries it.
	f.users.profiles[id] = Profile{ID: id, Email: "root@example.com", Name: "Root", Role: kitauth.RoleAdmin}
	_, err = svc.Register(ctx, RegisterRequest{Email: "root@example.com", Password: "other horse", Name: "Root 2"})
	if e := errs.As(err); e.Kind != errs.Conflict || e.Code != "email_taken" {
		t.Errorf("second registration: %v, want 409 email_taken", err)
	}

	tok, err := svc.Login(ctx, LoginRequest{Email: "root@example.com", Password: "correct horse"}, "10.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if who, err := f.verifier().Verify(ctx, tok.AccessToken); err != nil || who.Role != kitauth.RoleAdmin {
		t.Errorf("the role read over gRPC: %+v, %v", who, err)
	}

	// Undo: a profile deleted over gRPC is gone.
	if err := NewUsers(userclient.New(conn)).Delete(ctx, id); err != nil || f.users.count() != 0 {
		t.Errorf("Delete: %v, %d profiles left", err, f.users.count())
	}

	stop()
	_, err = svc.Login(ctx, LoginRequest{Email: "root@example.com", Password: "correct horse"}, "10.0.0.2")
	if !errs.Is(err, errs.Unavailable) {
		t.Errorf("login with user down: %v, want Unavailable", err)
	}
}
