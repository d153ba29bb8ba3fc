package order

import (
	"context"
	"path/filepath"
	"sync"
	"testing"

	"github.com/meshop/meshop/services/kit/errs"
)

// fakeUsers answers from a map, or fails with err.
type fakeUsers struct {
	profiles map[string]Profile
	err      error
}

func (f fakeUsers) Get(_ context.Context, id string) (Profile, error) {
	if f.err != nil {
		return Profile{}, f.err
	}
	p, ok := f.profiles[id]
	if !ok {
		return Profile{}, errs.New(errs.NotFound, "user_not_found", "no user")
	}
	return p, nil
}

var ada = Profile{ID: "u1", Email: "ada@example.com", Name: "Ada", Role: "customer"}

func newTestService(t *testing.T, users Users) Service {
	return New(openStore(t, "sqlite:"+filepath.Join(t.TempDir(), "order.db")), users)
}

func validRequest() CreateRequest {
	return CreateRequest{Items: []ItemRequest{{ProductID: "p1", Quantity: 2}}, Payment: PaymentInfo{CardToken: "tok_visa"}}
}

func TestCreateAndGetEmbedsUser(t *testing.T) {
	svc := newTestService(t, fakeUsers{profiles: map[string]Profile{"u1": ada}})
	ctx := context.Background()
	created, replayed, err := svc.Create(ctx, "u1", "k1", validRequest())
	if err != nil || replayed {
		t.Fatalf("Create = %v, replayed %v", err, replayed)
	}
	if created.Status != StatusPending || created.User == nil || created.User.Name != "Ada" || len(created.Degraded) != 0 {
		t.Errorf("created = %+v", created)
	}
	got, err := svc.Get(ctx, "u1", created.ID)
	if err != nil || got.User == nil || got.User.Email != ada.Email {
		t.Errorf("Get = %+v, %v", got, err)
	}
	if _, err := svc.Get(ctx, "u2", created.ID); !errs.Is(err, errs.NotFound) {
		t.Errorf("another user's order: %v, want NotFound", err)
	}
}

func TestUserDownDegrades(t *testing.T) {
	svc := newTestService(t, fakeUsers{err: errs.New(errs.Unavailable, "upstream_timeout", "user did not answer in time")})
	o, _, err := svc.Create(context.Background(), "u1", "k1", validRequest())
	if err != nil {
		t.Fatal(err)
	}
	got, err := svc.Get(context.Background(), "u1", o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.User != nil || len(got.Degraded) != 1 || got.Degraded[0] != "user" {
		t.Errorf("user = %v, degraded = %v; want nil and [user]", got.User, got.Degraded)
	}
}

func TestIdempotency(t *testing.T) {
	svc := newTestService(t, fakeUsers{profiles: map[string]Profile{"u1": ada}})
	ctx := context.Background()
	first, _, err := svc.Create(ctx, "u1", "k1", validRequest())
	if err != nil {
		t.Fatal(err)
	}
	again, replayed, err := svc.Create(ctx, "u1", "k1", validRequest())
	if err != nil || !replayed || again.ID != first.ID {
		t.Errorf("replay = %s replayed=%v err=%v, want %s", again.ID, replayed, err, first.ID)
	}
	different := validRequest()
	different.Items[0].Quantity = 3
	_, _, err = svc.Create(ctx, "u1", "k1", different)
	if e := errs.As(err); e.Kind != errs.Conflict || e.Code != "idempotency_mismatch" {
		t.Errorf("different body, same key: %v", err)
	}
}

// TestConcurrentSameKey sends one request 20 times at once: one order.
func TestConcurrentSameKey(t *testing.T) {
	svc := newTestService(t, fakeUsers{profiles: map[string]Profile{"u1": ada}})
	var wg sync.WaitGroup
	ids := make(chan string, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o, _, err := svc.Create(context.Background(), "u1", "same-key", validRequest())
			if err != nil {
				t.Error(err)
				return
			}
			ids <- o.ID
		}()
	}
	wg.Wait()
	close(ids)
	distinct := map[string]bool{}
	for id := range ids {
		distinct[id] = true
	}
	if len(distinct) != 1 {
		t.Errorf("20 concurrent requests with one key made %d orders", len(distinct))
	}
}

func TestValidation(t *testing.T) {
	tests := []struct {
		name  string
		req   CreateRequest
		field string
	}{
		{"no items", CreateRequest{Payment: PaymentInfo{CardToken: "tok_visa"}}, "items"},
		{"negative quantity", CreateRequest{Items: []ItemRequest{{ProductID: "p1", Quantity: -1}}, Payment: PaymentInfo{CardToken: "tok_visa"}}, "items[0].quantity"},
		{"zero quantity", CreateRequest{Items: []ItemRequest{{ProductID: "p1"}}, Payment: PaymentInfo{CardToken: "tok_visa"}}, "items[0].quantity"},
		{"missing product", CreateRequest{Items: []ItemRequest{{Quantity: 1}}, Payment: PaymentInfo{CardToken: "tok_visa"}}, "items[0].product_id"},
		{"duplicate product", CreateRequest{Items: []ItemRequest{{ProductID: "p1", Quantity: 1}, {ProductID: "p1", Quantity: 1}}, Payment: PaymentInfo{CardToken: "tok_visa"}}, "items[1].product_id"},
		{"no card", CreateRequest{Items: []ItemRequest{{ProductID: "p1", Quantity: 1}}}, "payment.card_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := errs.As(validate(tt.req))
			if e.Kind != errs.Validation || e.Details[tt.field] == nil {
				t.Errorf("validate = %+v, want a problem with %s", e, tt.field)
			}
		})
	}
}
