// Package instrument is go-kit endpoint middleware that logs and measures
// every call of a service method. It is applied once per method in a
// service's endpoint set, so every service reports the same metrics:
//
//	meshop_requests_total{svc,method,outcome}      outcome = "ok" or an error code
//	meshop_request_duration_seconds{svc,method}
package instrument

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshop/meshop/services/kit/errs"
)

// Metrics are the per-method request metrics of one service.
type Metrics struct {
	svc      string
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewMetrics registers the metrics for svc on reg.
func NewMetrics(reg prometheus.Registerer, svc string) *Metrics {
	m := &Metrics{
		svc: svc,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshop_requests_total", Help: "Service method calls by outcome (ok or error code).",
		}, []string{"svc", "method", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "meshop_request_duration_seconds", Help: "Service method latency.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"svc", "method"}),
	}
	reg.MustRegister(m.requests, m.duration)
	return m
}

// Endpoint logs and measures the endpoint it wraps as method.
//
// A successful call is logged at debug level, a failed one at info (error
// for Internal and Unavailable). The method's "ok" counter and its
// duration histogram are looked up once, on the first call, so a call
// costs no label hashing; a method's series still appear only once it has
// been called.
func Endpoint(logger *slog.Logger, m *Metrics, method string) endpoint.Middleware {
	logger = logger.With("method", method)
	ok := sync.OnceValue(func() prometheus.Counter { return m.requests.WithLabelValues(m.svc, method, "ok") })
	duration := sync.OnceValue(func() prometheus.Observer { return m.duration.WithLabelValues(m.svc, method) })
	return func(next endpoint.Endpoint) endpoint.Endpoint {
		return func(ctx context.Context, request any) (response any, err error) {
			start := time.Now()
			defer func() {
				took := time.Since(start)
				failure := err
				if f, isFailer := response.(endpoint.Failer); isFailer && failure == nil {
					failure = f.Failed()
				}
				if failure != nil {
					e := errs.As(failure)
					outcome := e.Code
					if outcome == "" {
						outcome = e.Kind.String()
					}
					level := slog.LevelInfo
					if e.Kind == errs.Internal || e.Kind == errs.Unavailable {
						level = slog.LevelError
					}
					logger.Log(ctx, level, "call failed", "took", took.String(), "err", failure.Error())
					m.requests.WithLabelValues(m.svc, method, outcome).Inc()
				} else {
					if logger.Enabled(ctx, slog.LevelDebug) {
						logger.DebugContext(ctx, "call", "took", took.String())
					}
					ok().Inc()
				}
				duration().Observe(took.Seconds())
			}()
			return next(ctx, request)
		}
	}
}
