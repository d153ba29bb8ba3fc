package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestRun(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ready" {
			http.Error(w, "draining", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close() // nothing listens on its address any more

	tests := []struct {
		name    string
		args    []string
		wantErr bool
	}{
		{"2xx passes", []string{srv.URL + "/ready"}, false},
		{"every URL must pass", []string{srv.URL + "/ready", srv.URL + "/other"}, true},
		{"503 fails", []string{srv.URL + "/other"}, true},
		{"no URL is a usage error", nil, true},
		{"unreachable fails", []string{"-timeout", "200ms", closed.URL + "/ready"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := run(tt.args); (err != nil) != tt.wantErr {
				t.Errorf("run(%q) = %v, want error: %v", tt.args, err, tt.wantErr)
			}
		})
	}
}
