package httpserver

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meshop/meshop/services/kit/errs"
)

type item struct {
	ProductID string `json:"product_id"`
	Quantity  int    `json:"quantity"`
}

func TestDecodeJSON(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		wantKind errs.Kind
		wantCode string
	}{
		{"ok", `{"product_id":"p1","quantity":2}`, 0, ""},
		{"empty", ``, errs.Invalid, "empty_body"},
		{"malformed", `{"product_id":`, errs.Invalid, "malformed_json"},
		{"syntax", `{"product_id" "p1"}`, errs.Invalid, "malformed_json"},
		{"wrong type", `{"product_id":"p1","quantity":"two"}`, errs.Invalid, "wrong_type"},
		{"unknown field", `{"product_id":"p1","qty":2}`, errs.Invalid, "unknown_field"},
		{"trailing data", `{"product_id":"p1"} {"x":1}`, errs.Invalid, "malformed_json"},
		{"too large", `{"product_id":"` + strings.Repeat("x", MaxBodyBytes) + `"}`, errs.TooLarge, "body_too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got item
			err := DecodeJSON(httptest.NewRequest("POST", "/", strings.NewReader(tt.body)), &got)
			if tt.wantCode == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			e := errs.As(err)
			if err == nil || e.Kind != tt.wantKind || e.Code != tt.wantCode {
				t.Errorf("err = %v, want kind %v code %s", err, tt.wantKind, tt.wantCode)
			}
		})
	}
}

// TestDecodeJSONBuffersAreNotShared decodes bodies one after another, as a
// busy server does with its recycled read buffers: a short body after a
// long one sees none of the long one's bytes.
func TestDecodeJSONBuffersAreNotShared(t *testing.T) {
	long := strings.Repeat("x", 3000)
	for i, tt := range []struct {
		body     string
		want     item
		wantCode string
	}{
		{`{"product_id":"aaaa","quantity":1}`, item{"aaaa", 1}, ""},
		{`{"product_id":"` + long + `","quantity":7}`, item{long, 7}, ""},
		{`{"product_id":"p1"}`, item{"p1", 0}, ""},
		{`  `, item{}, "empty_body"},
		{`{"product_id":"p2"`, item{}, "malformed_json"},
		{`{"quantity":2}`, item{"", 2}, ""},
	} {
		var got item
		err := DecodeJSON(httptest.NewRequest("POST", "/", strings.NewReader(tt.body)), &got)
		switch {
		case tt.wantCode != "":
			if errs.As(err).Code != tt.wantCode {
				t.Errorf("body %d: err %v, want %s", i, err, tt.wantCode)
			}
		case err != nil:
			t.Errorf("body %d: %v", i, err)
		case got != tt.want:
			t.Errorf("body %d: decoded %+v, want %+v", i, got, tt.want)
		}
	}
}
