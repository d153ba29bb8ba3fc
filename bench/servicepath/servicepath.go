// Package servicepath measures checkouts through the whole local system
// (e2e/system: Consul, Jaeger, NATS, the control plane and the six
// services, each a real process) at a fixed offered rate. Its plan is
// system.FreePlan's, which names no Envoy, so the services run proxyless:
// each app's grpc-go xDS client is configured by the control plane and
// calls its upstreams directly, with no sidecar in the path.
//
//	register + log in (auth) ──▶ a product with ample stock (product, admin)
//	──▶ POST /orders at Rate per second for Duration (order → user,
//	    product, payment over gRPC; events through NATS to notification)
//
// Latency is measured from each request's scheduled start, so a slow
// system is charged for the requests that queued behind a slow one
// (no coordinated omission).
package servicepath

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/meshop/meshop/e2e/system"
)

// Options configure one run.
type Options struct {
	Dir      string
	Rate     float64       // checkouts offered per second
	Duration time.Duration // how long they are offered
	Sampling float64       // OTEL_TRACES_SAMPLER_ARG of every service
	// Plaintext turns mutual TLS and the intentions off between the apps
	// (system.Plan.Plaintext): the baseline of what zero trust costs.
	Plaintext bool
	// MaxInFlight bounds concurrent requests (default 256).
	MaxInFlight int
}

// Result is what one run measured.
type Result struct {
	Sampling    float64        `json:"sampling"`
	Plaintext   bool           `json:"plaintext,omitempty"`
	OfferedRate float64        `json:"offered_per_sec"`
	DurationSec float64        `json:"duration_sec"`
	Sent        int            `json:"sent"`
	OK          int            `json:"ok"`
	Failed      map[string]int `json:"failed,omitempty"` // by status or error
	Throughput  float64        `json:"ok_per_sec"`
	P50Ms       float64        `json:"p50_ms"`
	P99Ms       float64        `json:"p99_ms"`
	MaxMs       float64        `json:"max_ms"`
}

const admin = "bench-admin@meshop.example"

// Run starts the system (proxyless), drives checkouts and stops it.
func Run(ctx context.Context, o Options) (Result, error) {
	if o.MaxInFlight == 0 {
		o.MaxInFlight = 256
	}
	res := Result{Sampling: o.Sampling, Plaintext: o.Plaintext, OfferedRate: o.Rate, Failed: map[string]int{}}
	plan, err := system.FreePlan(o.Dir)
	if err != nil {
		return res, err
	}
	plan.Env = []string{"OTEL_TRACES_SAMPLER_ARG=" + strconv.FormatFloat(o.Sampling, 'f', -1, 64)}
	plan.Plaintext = o.Plaintext
	sys, err := system.Start(ctx, plan, o.Dir)
	if err != nil {
		return res, err
	}
	defer sys.Stop()
	url := func(svc, path string) string { return sys.Instance(svc).URL() + path }
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: o.MaxInFlight}}

	// A buyer who is also the admin, and a product that cannot run out.
	if _, err := call(ctx, client, "POST", url("auth", "/auth/register"), "",
		`{"email":"`+admin+`","password":"correct horse battery","name":"Bench"}`, http.StatusCreated); err != nil {
		return res, err
	}
	if err := sys.GrantAdmin(ctx, admin); err != nil {
		return res, err
	}
	login, err := call(ctx, client, "POST", url("auth", "/auth/login"), "",
		`{"email":"`+admin+`","password":"correct horse battery"}`, http.StatusOK)
	if err != nil {
		return res, err
	}
	token, _ := login["access_token"].(string)
	bearer := "Bearer " + token
	prod, err := call(ctx, client, "POST", url("product", "/products"), bearer,
		`{"name":"Bench Beans","description":"for the benchmark","price_cents":100,"currency":"USD","stock":100000000}`, http.StatusCreated)
	if err != nil {
		return res, err
	}
	productID, _ := prod["id"].(string)
	body := `{"items":[{"product_id":"` + productID + `","quantity":1}],"payment":{"card_token":"tok_visa"}}`
	checkout := func(key string) (int, error) {
		req, _ := http.NewRequestWithContext(ctx, "POST", url("order", "/orders"), bytes.NewBufferString(body))
		req.Header.Set("Authorization", bearer)
		req.Header.Set("Idempotency-Key", key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	// Warm up (connections, prepared statements, caches) with 20
	// checkouts in a row that succeed. The control plane pushes the last
	// instances' endpoints within its debounce after they pass their
	// checks, so the first checkouts may find an upstream not yet routed.
	deadline := time.Now().Add(30 * time.Second)
	for i, ok := 0, 0; ok < 20; i++ {
		st, err := checkout(fmt.Sprintf("warm-%d", i))
		switch {
		case err == nil && st == http.StatusCreated:
			ok++
		case time.Now().After(deadline):
			return res, fmt.Errorf("warm-up checkout: status %d, %v (still failing after 30s)", st, err)
		default:
			ok = 0
			time.Sleep(100 * time.Millisecond)
		}
	}

	n := int(o.Rate * o.Duration.Seconds())
	interval := time.Duration(float64(time.Second) / o.Rate)
	lat := make([]time.Duration, n)
	status := make([]string, n)
	sem := make(chan struct{}, o.MaxInFlight)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		at := start.Add(time.Duration(i) * interval)
		time.Sleep(time.Until(at))
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			st, err := checkout(fmt.Sprintf("bench-%d-%d", start.UnixNano(), i))
			lat[i] = time.Since(at)
			switch {
			case err != nil:
				status[i] = "error"
			case st != http.StatusCreated:
				status[i] = strconv.Itoa(st)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	res.Sent, res.DurationSec = n, elapsed.Seconds()
	var ok []float64
	for i := range n {
		if status[i] != "" {
			res.Failed[status[i]]++
			continue
		}
		ok = append(ok, float64(lat[i].Microseconds())/1000)
	}
	res.OK = len(ok)
	res.Throughput = float64(res.OK) / elapsed.Seconds()
	slices.Sort(ok)
	if len(ok) > 0 {
		res.P50Ms, res.P99Ms, res.MaxMs = quantile(ok, 0.5), quantile(ok, 0.99), ok[len(ok)-1]
	}
	return res, nil
}

func quantile(xs []float64, q float64) float64 {
	i := int(float64(len(xs))*q+0.999999) - 1
	return xs[max(0, min(i, len(xs)-1))]
}

func call(ctx context.Context, c *http.Client, method, url, bearer, body string, want int) (map[string]any, error) {
	req, _ := http.NewRequestWithContext(ctx, method, url, bytes.NewBufferString(body))
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", bearer)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		return nil, fmt.Errorf("%s %s: status %d, want %d: %s", method, url, resp.StatusCode, want, b)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	return out, nil
}
