// Package meshclient is the one way a Meshop service calls another by
// service name. Two modes, chosen explicitly by configuration (DESIGN §8):
//
//	sidecar: app ──http://127.0.0.1:15001, Host: <service>──▶ Envoy egress ──▶ upstream
//	         (Envoy discovers, balances, retries and traces; we never retry)
//	direct:  app ──Consul passing instances (go-kit sd/consul)──▶ round robin
//	         ──▶ retry (idempotent methods, connection errors only) ──▶ upstream
//
// Every call has a deadline (the shorter of the caller's and the client's
// timeout), carries the trace context (otelhttp transport), and fails with
// an *errs.Error: the upstream's own error body when it answered one,
// Unavailable when it could not be reached in time.
package meshclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	consulsd "github.com/go-kit/kit/sd/consul"
	"github.com/go-kit/kit/sd/lb"
	"github.com/hashicorp/consul/api"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/meshop/meshop/services/kit/errs"
	kitlog "github.com/meshop/meshop/services/kit/log"
	"github.com/meshop/meshop/services/kit/telemetry"
)

// Modes.
const (
	Sidecar = "sidecar"
	Direct  = "direct"
)

// maxResponseBytes caps what is read from an upstream answer.
const maxResponseBytes = 4 << 20

// Config configures a Client.
type Config struct {
	Mode      string      // Sidecar or Direct
	EgressURL string      // sidecar mode: the local Envoy egress listener
	Consul    *api.Client // direct mode: where passing instances are found
	Upstreams []string    // the services this one may call (mesh_upstreams)
	Timeout   time.Duration
	// Retries is how many extra attempts direct mode makes for idempotent
	// requests that could not reach an instance.
	Retries   int
	Telemetry *telemetry.Telemetry
	Logger    *slog.Logger
}

// Client calls upstream services.
type Client struct {
	cfg       Config
	http      *http.Client
	balancers map[string]lb.Balancer // direct mode, one per upstream
	stops     []func()
}

// New returns a client for cfg. In direct mode it starts one Consul watch
// per declared upstream.
func New(cfg Config) (*Client, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	c := &Client{cfg: cfg}
	c.http = &http.Client{Transport: otelhttp.NewTransport(http.DefaultTransport,
		otelhttp.WithTracerProvider(cfg.Telemetry.TracerProvider),
		otelhttp.WithPropagators(cfg.Telemetry.Propagator),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			return r.Method + " " + serviceOf(r.Context())
		}),
	)}
	switch cfg.Mode {
	case Sidecar:
		if cfg.EgressURL == "" {
			return nil, errors.New("meshclient: sidecar mode needs the egress URL")
		}
	case Direct:
		if cfg.Consul == nil {
			return nil, errors.New("meshclient: direct mode needs a Consul client")
		}
		c.balancers = make(map[string]lb.Balancer, len(cfg.Upstreams))
		logger := kitlog.GoKit(cfg.Logger.With("component", "meshclient"))
		sdClient := consulsd.NewClient(cfg.Consul)
		for _, svc := range cfg.Upstreams {
			instancer := consulsd.NewInstancer(sdClient, logger, svc, nil, true)
			endpointer := sd.NewEndpointer(instancer, c.factory, logger)
			c.balancers[svc] = lb.NewRoundRobin(endpointer)
			c.stops = append(c.stops, endpointer.Close, instancer.Stop)
		}
	default:
		return nil, fmt.Errorf("meshclient: unknown mode %q (want %s or %s)", cfg.Mode, Sidecar, Direct)
	}
	return c, nil
}

// Close stops the Consul watches.
func (c *Client) Close() {
	for _, stop := range c.stops {
		stop()
	}
}

// Call sends method path to service. A non-nil body is sent as JSON; a 2xx
// JSON answer is decoded into out when out is non-nil. header adds request
// headers (Idempotency-Key, Authorization).
func (c *Client) Call(ctx context.Context, service, method, path string, header http.Header, body, out any) error {
	if !slices.Contains(c.cfg.Upstreams, service) {
		return errs.Newf(errs.Internal, "undeclared_upstream", "%s is not a declared upstream of this service", service)
	}
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return errs.Wrap(errs.Internal, "encode_request", "could not encode the request", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	ctx = context.WithValue(ctx, serviceKey{}, service)
	call := call{method: method, path: path, header: header, body: payload}

	var resp *response
	var err error
	if c.cfg.Mode == Sidecar {
		resp, err = c.send(ctx, c.cfg.EgressURL, service, call)
	} else {
		resp, err = c.sendDirect(ctx, service, call)
	}
	if err != nil {
		return c.unreachable(ctx, service, err)
	}
	if resp.status >= 300 {
		var b errs.Body
		_ = json.Unmarshal(resp.body, &b)
		return errs.FromBody(resp.status, b)
	}
	if out != nil {
		if err := json.Unmarshal(resp.body, out); err != nil {
			return errs.Wrap(errs.Internal, "bad_upstream_response", service+" answered with a body that is not the expected JSON", err)
		}
	}
	return nil
}

// unreachable turns a failure to get an answer into an Unavailable error.
func (c *Client) unreachable(ctx context.Context, service string, err error) error {
	var retryErr lb.RetryError
	if errors.As(err, &retryErr) && retryErr.Final != nil {
		err = retryErr.Final
	}
	details := map[string]any{"service": service}
	switch {
	case errors.Is(err, lb.ErrNoEndpoints):
		return errs.Wrap(errs.Unavailable, "no_healthy_upstream", service+" has no passing instance", err).WithDetails(details)
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		return errs.Wrap(errs.Unavailable, "upstream_timeout", service+" did not answer in time", err).WithDetails(details)
	default:
		return errs.Wrap(errs.Unavailable, "upstream_unavailable", service+" could not be reached", err).WithDetails(details)
	}
}

// call is one request, kept as data so direct mode can resend it.
type call struct {
	method, path string
	header       http.Header
	body         []byte
}

func (r call) idempotent() bool {
	return r.method == http.MethodGet || r.method == http.MethodHead
}

// response is an upstream answer read in full: retries cancel the attempt's
// context as soon as they return, so bodies cannot be streamed past that.
type response struct {
	status int
	body   []byte
}

// send sends r to baseURL with Host: service.
func (c *Client) send(ctx context.Context, baseURL, service string, r call) (*response, error) {
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, baseURL+r.path, body)
	if err != nil {
		return nil, err
	}
	for k, vs := range r.header {
		req.Header[k] = vs
	}
	req.Host = service
	req.Header.Set("Accept", "application/json")
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, err
	}
	return &response{status: resp.StatusCode, body: b}, nil
}

// sendDirect picks a passing instance round robin; idempotent requests that
// fail to get an answer are retried on the next instance.
func (c *Client) sendDirect(ctx context.Context, service string, r call) (*response, error) {
	attempts := 1
	if r.idempotent() {
		attempts += c.cfg.Retries
	}
	deadline, _ := ctx.Deadline()
	retry := lb.RetryWithCallback(time.Until(deadline), c.balancers[service], func(n int, err error) (bool, error) {
		return n < attempts && !errors.Is(err, lb.ErrNoEndpoints), nil
	})
	resp, err := retry(ctx, r)
	if err != nil {
		return nil, err
	}
	return resp.(*response), nil
}

// factory makes the endpoint for one instance ("host:port") of a service.
func (c *Client) factory(instance string) (endpoint.Endpoint, io.Closer, error) {
	return func(ctx context.Context, request any) (any, error) {
		return c.send(ctx, "http://"+instance, serviceOf(ctx), request.(call))
	}, nil, nil
}

type serviceKey struct{}

func serviceOf(ctx context.Context) string {
	s, _ := ctx.Value(serviceKey{}).(string)
	return s
}
