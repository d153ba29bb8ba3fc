package order

import (
	"context"
	"testing"
	"time"

	"github.com/meshop/meshop/services/kit/errs"
	userclient "github.com/meshop/meshop/services/user/client"
)

func TestUsersOverGRPC(t *testing.T) {
	ctx := context.Background()
	profile := Profile{ID: "u1", Email: "ada@example.com", Name: "Ada", Role: "customer", CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)}
	up := serveFakes(t, fakeUsers{profiles: map[string]Profile{"u1": profile}}, newFakeInventory(), newFakePayments())

	if p, err := up.users.Get(ctx, "u1"); err != nil || p != profile {
		t.Errorf("Get = %+v, %v; want %+v", p, err, profile)
	}
	_, err := up.users.Get(ctx, "u9")
	if e := errs.As(err); e.Kind != errs.NotFound || errs.Reason(err) != userclient.ReasonUserNotFound {
		t.Errorf("missing profile: %v, want NotFound %s", err, userclient.ReasonUserNotFound)
	}
	up.stop()
	if _, err := up.users.Get(ctx, "u1"); !errs.Is(err, errs.Unavailable) {
		t.Errorf("user down: %v, want Unavailable", err)
	}
}
