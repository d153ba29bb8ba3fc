package instrument

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshop/meshop/services/kit/errs"
)

// failedResponse is a response that carries its error (endpoint.Failer).
type failedResponse struct{ err error }

func (r failedResponse) Failed() error { return r.err }

// records keeps what a logger logged, the logger's own attributes
// (logger.With) added to each record.
type records struct {
	level slog.Level
	with  []slog.Attr
	mu    *sync.Mutex
	got   *[]slog.Record
}

func newRecords(level slog.Level) *records {
	return &records{level: level, mu: new(sync.Mutex), got: new([]slog.Record)}
}

func (h *records) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }
func (h *records) Handle(_ context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(h.with...)
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.got = append(*h.got, r)
	return nil
}
func (h *records) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.with = append(append([]slog.Attr(nil), h.with...), as...)
	return &c
}
func (h *records) WithGroup(string) slog.Handler { return h }

// series is metric name → "label=value,..." → counter value or histogram
// sample count.
func series(t *testing.T, reg *prometheus.Registry) map[string]map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]float64{}
	for _, f := range families {
		out[f.GetName()] = map[string]float64{}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			v := m.GetCounter().GetValue()
			if h := m.GetHistogram(); h != nil {
				v = float64(h.GetSampleCount())
			}
			out[f.GetName()][strings.Join(labels, ",")] = v
		}
	}
	return out
}

func TestEndpointMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg, "order")
	logger := slog.New(newRecords(slog.LevelInfo))
	var answer func() (any, error)
	call := Endpoint(logger, m, "Create")(func(context.Context, any) (any, error) { return answer() })
	get := Endpoint(logger, m, "Get")(func(context.Context, any) (any, error) { return "found", nil })

	if got := series(t, reg); len(got) != 0 {
		t.Fatalf("series before any call: %v", got)
	}
	answer = func() (any, error) { return "created", nil }
	for range 2 {
		_, _ = call(context.Background(), nil)
	}
	answer = func() (any, error) { return failedResponse{errs.New(errs.Conflict, "out_of_stock", "no")}, nil }
	_, _ = call(context.Background(), nil)
	answer = func() (any, error) { return nil, errs.New(errs.NotFound, "", "no such order") }
	_, _ = call(context.Background(), nil)
	answer = func() (any, error) { return nil, errors.New("disk on fire") }
	_, _ = call(context.Background(), nil)
	if got := series(t, reg); len(got["meshop_request_duration_seconds"]) != 1 {
		t.Errorf("Get is measured before it is called: %v", got)
	}
	_, _ = get(context.Background(), nil)

	got := series(t, reg)
	wantRequests := map[string]float64{
		"method=Create,outcome=ok,svc=order":           2,
		"method=Create,outcome=out_of_stock,svc=order": 1,
		"method=Create,outcome=not_found,svc=order":    1,
		"method=Create,outcome=internal,svc=order":     1,
		"method=Get,outcome=ok,svc=order":              1,
	}
	if !equal(got["meshop_requests_total"], wantRequests) {
		t.Errorf("meshop_requests_total = %v, want %v", got["meshop_requests_total"], wantRequests)
	}
	wantDurations := map[string]float64{"method=Create,svc=order": 5, "method=Get,svc=order": 1}
	if !equal(got["meshop_request_duration_seconds"], wantDurations) {
		t.Errorf("meshop_request_duration_seconds counts = %v, want %v", got["meshop_request_duration_seconds"], wantDurations)
	}
}

func TestEndpointLogs(t *testing.T) {
	for _, tt := range []struct {
		name    string
		level   slog.Level // the logger's
		resp    any
		err     error
		want    string // "" for no record, else level and message
		wantErr string
	}{
		{"ok at info", slog.LevelInfo, "fine", nil, "", ""},
		{"ok at debug", slog.LevelDebug, "fine", nil, "DEBUG call", ""},
		{"client error", slog.LevelInfo, nil, errs.New(errs.Invalid, "bad", "bad input"), "INFO call failed", "bad: bad input"},
		{"failed response", slog.LevelInfo, failedResponse{errs.New(errs.Conflict, "dup", "again")}, nil, "INFO call failed", "dup: again"},
		{"internal", slog.LevelInfo, nil, errors.New("boom"), "ERROR call failed", "boom"},
		{"unavailable", slog.LevelInfo, nil, errs.New(errs.Unavailable, "", "down"), "ERROR call failed", "unavailable: down"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newRecords(tt.level)
			ep := Endpoint(slog.New(h), NewMetrics(prometheus.NewRegistry(), "order"), "Create")(
				func(context.Context, any) (any, error) { return tt.resp, tt.err })
			_, _ = ep(context.Background(), nil)
			if tt.want == "" {
				if len(*h.got) != 0 {
					t.Fatalf("logged %v", *h.got)
				}
				return
			}
			if len(*h.got) != 1 {
				t.Fatalf("want one record, got %v", *h.got)
			}
			r := (*h.got)[0]
			if got := r.Level.String() + " " + r.Message; got != tt.want {
				t.Errorf("record %q, want %q", got, tt.want)
			}
			attrs := map[string]string{}
			r.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value.String(); return true })
			if attrs["method"] != "Create" || attrs["took"] == "" || attrs["err"] != tt.wantErr {
				t.Errorf("attrs %v, want method Create, took and err %q", attrs, tt.wantErr)
			}
		})
	}
}

func equal(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
