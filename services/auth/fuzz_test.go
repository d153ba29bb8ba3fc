package auth

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meshop/meshop/services/kit/errs"
)

// The decoders face the internet: whatever the body, they must not panic,
// and must either decode it or answer 400/413, never something else.
// Seeds live in testdata/fuzz; run e.g.
//
//	go test -run='^$' -fuzz=FuzzDecodeRegister -fuzztime=30s ./services/auth

func FuzzDecodeRegister(f *testing.F) {
	f.Add([]byte(`{"email":"ada@example.com","password":"correct horse","name":"Ada"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeRegister(context.Background(), httptest.NewRequest("POST", "/auth/register", strings.NewReader(string(body))))
		checkDecoded(t, err)
		if err == nil {
			// A decoded request is safe to validate.
			_, _ = validateRegistration(req.(registerRequest).RegisterRequest)
		}
	})
}

func FuzzDecodeLogin(f *testing.F) {
	f.Add([]byte(`{"email":"ada@example.com","password":"correct horse"}`))
	decode := decodeLogin(ClientAddr(1))
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest("POST", "/auth/login", strings.NewReader(string(body)))
		r.Header.Set("X-Forwarded-For", string(body[:min(len(body), 64)]))
		req, err := decode(context.Background(), r)
		checkDecoded(t, err)
		if err == nil && req.(loginRequest).ClientAddr == "" {
			t.Error("no client address")
		}
	})
}

func checkDecoded(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if k := errs.KindOf(err); k != errs.Invalid && k != errs.TooLarge {
		t.Fatalf("decode error of kind %v (%v), want 400 or 413", k, err)
	}
}
