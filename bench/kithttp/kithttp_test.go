// Package kithttp compares the HTTP stack every Meshop service is built
// from (services/kit: httpserver with otelhttp outermost, a go-kit
// endpoint with the instrument middleware's slog logging and Prometheus
// metrics, JSON decode and encode) with a bare net/http handler doing the
// same JSON work, both served over loopback TCP.
//
//	go test -run '^$' -bench . -count 6 ./bench/kithttp > kit.txt
//	benchstat -col /stack kit.txt
package kithttp

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	httptransport "github.com/go-kit/kit/transport/http"
	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/meshop/meshop/services/kit/httpserver"
	"github.com/meshop/meshop/services/kit/instrument"
	kitlog "github.com/meshop/meshop/services/kit/log"
	"github.com/meshop/meshop/services/kit/telemetry"
)

type echoRequest struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
}

type echoResponse struct {
	Greeting string `json:"greeting"`
	Count    int    `json:"count"`
}

func (echoResponse) Failed() error { return nil }

var _ endpoint.Failer = echoResponse{}

func greet(req echoRequest) echoResponse {
	return echoResponse{Greeting: "hello " + req.Name, Count: req.Count + 1}
}

// bare is the baseline: ServeMux, decode, work, encode.
func bare() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		var req echoRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(greet(req))
	})
	return mux
}

// discard is a span exporter that drops spans: the batching and span
// work is measured, not a collector's network.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// kit is the same handler built the way every Meshop service builds its
// transport: go-kit endpoint + instrument middleware (the kit's slog JSON logger,
// Prometheus metrics) + httptransport with the kit's JSON codec, served by
// httpserver (otelhttp outermost, /health, /ready, /metrics beside).
func kit(tb testing.TB, sample float64) http.Handler {
	tel, err := telemetry.New(context.Background(), telemetry.Config{Service: "bench", Version: "v1", InstanceID: "bench-1",
		SampleRate: sample, Exporter: discard{}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	reg := prometheus.NewRegistry()
	logger := kitlog.New(io.Discard, "bench", slog.LevelInfo)
	var ep endpoint.Endpoint = func(_ context.Context, request any) (any, error) {
		return greet(request.(echoRequest)), nil
	}
	ep = instrument.Endpoint(logger, instrument.NewMetrics(reg, "bench"), "Echo")(ep)
	decode := func(_ context.Context, r *http.Request) (any, error) {
		var req echoRequest
		err := httpserver.DecodeJSON(r, &req)
		return req, err
	}
	routes := http.NewServeMux()
	routes.Handle("POST /echo", httptransport.NewServer(ep, decode, httpserver.EncodeJSON,
		httptransport.ServerErrorEncoder(httpserver.EncodeError)))
	return httpserver.New(httpserver.Config{Service: "bench", Routes: routes, Metrics: reg, Telemetry: tel, Logger: logger}).Handler()
}

// serve serves h on a loopback port and returns its URL.
func serve(tb testing.TB, h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	tb.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String() + "/echo"
}

// BenchmarkHTTP is one POST /echo round trip over loopback with keep-alive
// connections, from parallel clients (GOMAXPROCS goroutines); ns/op is the
// inverse of throughput. stack=bare is the baseline. cpu-ns/op is the
// process's CPU time (user and system, clients' and server's) per round
// trip: what a stack costs, which other processes on the machine change
// far less than they change throughput.
func BenchmarkHTTP(b *testing.B) {
	stacks := []struct {
		name string
		h    func(testing.TB) http.Handler
	}{
		{"bare", func(testing.TB) http.Handler { return bare() }},
		{"kit-sample-1pct", func(tb testing.TB) http.Handler { return kit(tb, 0.01) }},
		{"kit-sample-100pct", func(tb testing.TB) http.Handler { return kit(tb, 1) }},
	}
	for _, s := range stacks {
		b.Run("stack="+s.name, func(b *testing.B) {
			url := serve(b, s.h(b))
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}
			b.ReportAllocs()
			cpu := processCPU(b)
			defer func() { b.ReportMetric(float64(processCPU(b)-cpu)/float64(b.N), "cpu-ns/op") }()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					i++
					body := `{"name":"grace","count":` + strconv.Itoa(i) + `}`
					resp, err := client.Post(url, "application/json", bytes.NewBufferString(body))
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
		})
	}
}

// processCPU is the CPU time the process has used, in nanoseconds.
func processCPU(tb testing.TB) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// TestStacksAnswerAlike checks that both stacks answer the benchmark's
// request the same way, so the benchmark compares like with like.
func TestStacksAnswerAlike(t *testing.T) {
	for name, h := range map[string]http.Handler{"bare": bare(), "kit": kit(t, 1)} {
		resp, err := http.Post(serve(t, h), "application/json", bytes.NewBufferString(`{"name":"grace","count":1}`))
		if err != nil {
			t.Fatal(err)
		}
		var got echoResponse
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || got != (echoResponse{Greeting: "hello grace", Count: 2}) {
			t.Errorf("%s: status %d, %+v, %v", name, resp.StatusCode, got, err)
		}
	}
}
