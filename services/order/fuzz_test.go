package order

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/errs"
)

// FuzzDecodeCreate feeds arbitrary bodies to the checkout decoder: it must
// either decode a request or fail with a client error (4xx), never panic
// and never answer 5xx. Seed corpus: testdata/fuzz/FuzzDecodeCreate.
func FuzzDecodeCreate(f *testing.F) {
	for _, seed := range []string{
		goodBody,
		`{}`, `[]`, `null`, ``, `{"items":[`, `{"items":[{"product_id":"p1","quantity":-1}]}`,
		`{"items":[{"product_id":"p1","quantity":1e400}]}`, `{"items":"p1"}`, `{"payment":{"card_token":7}}`,
		`{"items":[],"items":[]}`, "\xff\xfe", `{"items":[{"product_id":"\u0000","quantity":1}]}`,
	} {
		f.Add(seed, "key-1")
	}
	ctx := auth.WithIdentity(context.Background(), auth.Identity{UserID: "u1", Role: auth.RoleCustomer})
	f.Fuzz(func(t *testing.T, body, key string) {
		r := httptest.NewRequest("POST", "/orders", strings.NewReader(body)).WithContext(ctx)
		r.Header.Set("Idempotency-Key", key)
		req, err := decodeCreate(ctx, r)
		if err != nil {
			if status := errs.As(err).Kind.Status(); status < 400 || status > 499 {
				t.Fatalf("body %q: status %d for %v", body, status, err)
			}
			return
		}
		// A decoded request is validated, never trusted: validation must
		// not panic either.
		_ = validate(req.(createRequest).Body)
	})
}
