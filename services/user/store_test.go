package user

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/meshop/meshop/localenv"
	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/kittest"
)

func openStore(t *testing.T, databaseURL string) *SQLStore {
	return NewStore(kittest.DB(t, databaseURL, Migrations()))
}

func TestStore(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, databaseURL string) {
		ctx := context.Background()
		s := openStore(t, databaseURL)
		ada := User{ID: "u1", Email: "ada@example.com", Name: "Ada", Role: RoleCustomer,
			CreatedAt: time.Date(2026, 11, 22, 10, 0, 0, 123000, time.UTC)}
		if err := s.Insert(ctx, ada); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, "u1")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(ada, got); diff != "" {
			t.Errorf("Get (-want +got):\n%s", diff)
		}

		tests := []struct {
			name     string
			insert   User
			wantCode string
		}{
			{"same email", User{ID: "u2", Email: "ada@example.com", Name: "Other", Role: RoleCustomer, CreatedAt: ada.CreatedAt}, "email_taken"},
			{"same id", User{ID: "u1", Email: "bob@example.com", Name: "Bob", Role: RoleCustomer, CreatedAt: ada.CreatedAt}, "user_exists"},
		}
		for _, tt := range tests {
			err := s.Insert(ctx, tt.insert)
			if e := errs.As(err); err == nil || e.Kind != errs.Conflict || e.Code != tt.wantCode {
				t.Errorf("%s: err = %v, want conflict %s", tt.name, err, tt.wantCode)
			}
		}
		if _, err := s.Get(ctx, "nobody"); !errs.Is(err, errs.NotFound) {
			t.Errorf("Get(nobody) = %v, want NotFound", err)
		}

		// The operator's grant, by email as typed.
		if err := s.SetRole(ctx, " Ada@Example.com ", RoleAdmin); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Get(ctx, "u1"); err != nil || got.Role != RoleAdmin {
			t.Errorf("after SetRole: %+v, %v", got, err)
		}
		if err := s.SetRole(ctx, "nobody@example.com", RoleAdmin); !errs.Is(err, errs.NotFound) {
			t.Errorf("SetRole(nobody) = %v, want NotFound", err)
		}

		for i := range 2 { // deleting is idempotent
			if err := s.Delete(ctx, "u1"); err != nil {
				t.Fatalf("Delete %d: %v", i+1, err)
			}
		}
		if _, err := s.Get(ctx, "u1"); !errs.Is(err, errs.NotFound) {
			t.Errorf("Get after Delete = %v, want NotFound", err)
		}
	})
}
