package user

import (
	"context"
	"testing"

	"github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/errs"
)

// fakeStore holds profiles in a map.
type fakeStore struct{ users map[string]User }

func (f *fakeStore) Insert(_ context.Context, u User) error { f.users[u.ID] = u; return nil }
func (f *fakeStore) Delete(_ context.Context, id string) error {
	delete(f.users, id)
	return nil
}
func (f *fakeStore) Get(_ context.Context, id string) (User, error) {
	u, ok := f.users[id]
	if !ok {
		return User{}, errs.New(errs.NotFound, "user_not_found", "no user")
	}
	return u, nil
}

func TestGetAuthorization(t *testing.T) {
	svc := New(&fakeStore{users: map[string]User{
		"u1": {ID: "u1", Email: "ada@example.com", Role: RoleCustomer},
		"u2": {ID: "u2", Email: "bob@example.com", Role: RoleCustomer},
	}})
	tests := []struct {
		name   string
		caller auth.Identity
		id     string
		want   errs.Kind // -1: allowed
	}{
		{"owner", auth.Identity{UserID: "u1", Role: auth.RoleCustomer}, "u1", -1},
		{"admin", auth.Identity{UserID: "a", Role: auth.RoleAdmin}, "u1", -1},
		{"another customer: hidden as missing", auth.Identity{UserID: "u2", Role: auth.RoleCustomer}, "u1", errs.NotFound},
		{"another customer, missing id: the same answer", auth.Identity{UserID: "u2", Role: auth.RoleCustomer}, "u9", errs.NotFound},
		{"admin, missing id", auth.Identity{UserID: "a", Role: auth.RoleAdmin}, "u9", errs.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := svc.Get(auth.WithIdentity(context.Background(), tt.caller), tt.id)
			if tt.want == -1 {
				if err != nil || u.ID != tt.id {
					t.Errorf("Get = %+v, %v", u, err)
				}
				return
			}
			if e := errs.As(err); err == nil || e.Kind != tt.want || e.Code != "user_not_found" {
				t.Errorf("Get = %v, want %v user_not_found", err, tt.want)
			}
		})
	}
	if u, err := svc.Me(auth.WithIdentity(context.Background(), auth.Identity{UserID: "u2", Role: auth.RoleCustomer})); err != nil || u.ID != "u2" {
		t.Errorf("Me = %+v, %v", u, err)
	}
	if _, err := svc.Me(context.Background()); !errs.Is(err, errs.Unauthenticated) {
		t.Errorf("Me without a caller = %v, want Unauthenticated", err)
	}
}
