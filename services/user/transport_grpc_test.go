package user

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/instrument"
	"github.com/meshop/meshop/services/kit/kittest"
	"github.com/meshop/meshop/services/user/client"
	userv1 "github.com/meshop/meshop/services/user/proto/meshop/user/v1"
)

// serveGRPC serves NewGRPCServer over store in process and returns a
// connection to it.
func serveGRPC(t *testing.T, store Store) *grpc.ClientConn {
	t.Helper()
	e := NewEndpoints(New(store), slog.New(slog.DiscardHandler), instrument.NewMetrics(prometheus.NewRegistry(), "user"))
	conn, _ := kittest.ServeGRPC(t, func(s grpc.ServiceRegistrar) { userv1.RegisterUsersServer(s, NewGRPCServer(e)) })
	return conn
}

func TestGRPCProfiles(t *testing.T) {
	ctx := context.Background()
	users := client.New(serveGRPC(t, openStore(t, "sqlite:"+filepath.Join(t.TempDir(), "user.db"))))

	created, err := users.Create(ctx, client.NewProfile{ID: "u-1", Email: " Ada@Example.com ", Name: "Ada Lovelace"})
	if err != nil {
		t.Fatal(err)
	}
	if created.ID != "u-1" || created.Email != "ada@example.com" || created.Role != RoleCustomer || created.CreatedAt.IsZero() {
		t.Errorf("Create = %+v", created)
	}
	got, err := users.Lookup(ctx, "u-1")
	if err != nil || got != created {
		t.Errorf("Lookup = %+v, %v; want %+v", got, err, created)
	}

	_, err = users.Create(ctx, client.NewProfile{Email: "ada@example.com", Name: "Ada again"})
	if e := errs.As(err); e.Kind != errs.Conflict || errs.Reason(err) != client.ReasonEmailTaken {
		t.Errorf("Create with a taken email = %v, want Conflict %s", err, client.ReasonEmailTaken)
	}

	for i := range 2 { // deleting is idempotent
		if err := users.Delete(ctx, "u-1"); err != nil {
			t.Errorf("Delete %d: %v", i+1, err)
		}
	}
	for _, id := range []string{"u-1", "no such id", "nobody"} {
		_, err = users.Lookup(ctx, id)
		if e := errs.As(err); e.Kind != errs.NotFound || errs.Reason(err) != client.ReasonUserNotFound {
			t.Errorf("Lookup(%q) = %v, want NotFound %s", id, err, client.ReasonUserNotFound)
		}
	}
}

// countingStore is fakeStore that counts writes.
type countingStore struct {
	fakeStore
	writes int
}

func (s *countingStore) Insert(ctx context.Context, u User) error {
	s.writes++
	return s.fakeStore.Insert(ctx, u)
}

func (s *countingStore) Delete(ctx context.Context, id string) error {
	s.writes++
	return s.fakeStore.Delete(ctx, id)
}

func TestGRPCInvalidArgument(t *testing.T) {
	store := &countingStore{fakeStore: fakeStore{users: map[string]User{"u1": {ID: "u1", Email: "ada@example.com"}}}}
	conn := serveGRPC(t, store)
	raw := userv1.NewUsersClient(conn)
	tests := []struct {
		name       string
		call       func(ctx context.Context) error
		wantReason string
	}{
		{"create without fields", func(ctx context.Context) error {
			_, err := raw.Create(ctx, &userv1.CreateRequest{})
			return err
		}, client.ReasonInvalidUser},
		{"create with a bad email", func(ctx context.Context) error {
			_, err := raw.Create(ctx, &userv1.CreateRequest{Email: "not-an-email", Name: "A"})
			return err
		}, client.ReasonInvalidUser},
		{"create with an unknown role", func(ctx context.Context) error {
			_, err := raw.Create(ctx, &userv1.CreateRequest{Email: "a@b.co", Name: "A", Role: "root"})
			return err
		}, client.ReasonInvalidUser},
		{"create an admin (only an operator grants it)", func(ctx context.Context) error {
			_, err := raw.Create(ctx, &userv1.CreateRequest{Email: "a@b.co", Name: "A", Role: "admin"})
			return err
		}, client.ReasonInvalidUser},
		{"create with a bad id", func(ctx context.Context) error {
			_, err := raw.Create(ctx, &userv1.CreateRequest{Id: "a b", Email: "a@b.co", Name: "A"})
			return err
		}, client.ReasonInvalidUser},
		{"lookup without id", func(ctx context.Context) error {
			_, err := raw.Lookup(ctx, &userv1.LookupRequest{})
			return err
		}, client.ReasonInvalidUserID},
		{"delete without id", func(ctx context.Context) error {
			_, err := raw.Delete(ctx, &userv1.DeleteRequest{})
			return err
		}, client.ReasonInvalidUserID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, reason := kittest.ErrorInfo(tt.call(context.Background()))
			if code != codes.InvalidArgument || reason != tt.wantReason {
				t.Errorf("got %v %q, want InvalidArgument %q", code, reason, tt.wantReason)
			}
		})
	}
	if store.writes != 0 || len(store.users) != 1 {
		t.Errorf("the store saw %d writes (%d users); want none", store.writes, len(store.users))
	}

	// Through the client, the refusal keeps its kind, code and details.
	_, err := client.New(conn).Create(context.Background(), client.NewProfile{Email: "a@b.co"})
	if e := errs.As(err); e.Kind != errs.Validation || errs.Reason(err) != client.ReasonInvalidUser || e.Details["name"] == nil {
		t.Errorf("client Create = %#v, want Validation %s naming the field", err, client.ReasonInvalidUser)
	}
}
