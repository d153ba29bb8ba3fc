package paging

import (
	"net/url"
	"testing"

	"github.com/meshop/meshop/services/kit/errs"
)

func TestFromQuery(t *testing.T) {
	tests := []struct {
		query    string
		want     Request
		wantCode string
	}{
		{"", Request{Limit: DefaultLimit}, ""},
		{"limit=5", Request{Limit: 5}, ""},
		{"limit=100&cursor=" + encodeCursor("p-espresso"), Request{Limit: 100, After: "p-espresso"}, ""},
		{"limit=0", Request{}, "invalid_limit"},
		{"limit=101", Request{}, "invalid_limit"},
		{"limit=ten", Request{}, "invalid_limit"},
		{"cursor=", Request{}, "invalid_cursor"},
		{"cursor=p-espresso", Request{}, "invalid_cursor"},
		{"cursor=" + encodeCursor("../etc"), Request{}, "invalid_cursor"},
	}
	for _, tt := range tests {
		q, _ := url.ParseQuery(tt.query)
		got, err := FromQuery(q)
		if tt.wantCode != "" {
			if e := errs.As(err); err == nil || e.Kind != errs.Invalid || e.Code != tt.wantCode {
				t.Errorf("%q: err = %v, want %s", tt.query, err, tt.wantCode)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%q = %+v, %v; want %+v", tt.query, got, err, tt.want)
		}
	}
}

func TestBuild(t *testing.T) {
	id := func(s string) string { return s }
	last := Build([]string{"a", "b"}, Request{Limit: 2}, id)
	if len(last.Items) != 2 || last.NextCursor != "" {
		t.Errorf("last page = %+v", last)
	}
	more := Build([]string{"a", "b", "c"}, Request{Limit: 2}, id)
	after, ok := decodeCursor(more.NextCursor)
	if len(more.Items) != 2 || !ok || after != "b" {
		t.Errorf("page with more = %+v (cursor → %q)", more, after)
	}
	if empty := Build[string](nil, Request{Limit: 2}, id); empty.Items == nil {
		t.Error("an empty page must encode items as [], not null")
	}
}
