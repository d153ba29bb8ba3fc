// Package consulreg registers a service instance in Consul the way DESIGN §5
// says, and takes it out again on shutdown:
//
//	Register ──(Consul down? back off, retry, log once per state change)──▶ registered
//	Deregister ◀── after /ready turned 503 and in-flight requests drained
//
// Every call to the agent is bounded by CallTimeout (5 s): a Consul that
// accepts connections and never answers fails an attempt, it does not
// hang the start or the shutdown.
//
// The registration carries the mesh meta the control plane reads
// (mesh_protocol, mesh_upstreams, mesh_public_prefixes, mesh_app_port,
// version, and mesh_grpc_port when the app serves gRPC), an HTTP check on
// /health and, for an app serving gRPC, a gRPC health check
// (grpc.health.v1).
package consulreg

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// Meta keys of DESIGN §5.
const (
	MetaProtocol       = "mesh_protocol"
	MetaUpstreams      = "mesh_upstreams"
	MetaPublicPrefixes = "mesh_public_prefixes"
	MetaAppPort        = "mesh_app_port"
	MetaGRPCPort       = "mesh_grpc_port"
	MetaVersion        = "version"
)

// Instance describes one instance of a service for Consul.
type Instance struct {
	ID             string   // <service>-<suffix>; also the Envoy node id
	Service        string   // Consul service name
	Version        string   // "v1"
	Address        string   // where the sidecar's inbound listener (proxyless mode: the app) accepts
	Port           int      //   "
	AppPort        int      // the app's own port
	GRPCPort       int      // the app's gRPC port; 0: no gRPC
	Upstreams      []string // services this one calls
	PublicPrefixes []string // app paths exposed at the edge, e.g. "/orders"
	// CheckURL is the /health URL Consul polls; empty means
	// http://Address:Port/health.
	CheckURL string
	// ReadyURL is the app's /ready, which Consul polls as well: it
	// follows the gRPC server's serving state (a proxyless server serves
	// only once the control plane sent its listener). Consul's checker
	// has no mesh certificate, so both checks are plain HTTP (in sidecar
	// mode through the sidecar's expose listener). Empty: no such check.
	ReadyURL        string
	CheckInterval   time.Duration
	CheckTimeout    time.Duration
	DeregisterAfter time.Duration // DeregisterCriticalServiceAfter
}

// Registration is the Consul agent registration for in.
func (in Instance) Registration() *api.AgentServiceRegistration {
	checkURL := in.CheckURL
	if checkURL == "" {
		checkURL = "http://" + net.JoinHostPort(in.Address, strconv.Itoa(in.Port)) + "/health"
	}
	checks := api.AgentServiceChecks{{
		CheckID:                        "service:" + in.ID + ":health",
		Name:                           in.Service + " /health",
		HTTP:                           checkURL,
		Method:                         "GET",
		Interval:                       in.CheckInterval.String(),
		Timeout:                        in.CheckTimeout.String(),
		DeregisterCriticalServiceAfter: in.DeregisterAfter.String(),
	}}
	meta := map[string]string{
		MetaProtocol:       "http",
		MetaUpstreams:      strings.Join(in.Upstreams, ","),
		MetaPublicPrefixes: strings.Join(in.PublicPrefixes, ","),
		MetaAppPort:        strconv.Itoa(in.AppPort),
		MetaVersion:        in.Version,
	}
	if in.GRPCPort != 0 {
		meta[MetaGRPCPort] = strconv.Itoa(in.GRPCPort)
	}
	if in.ReadyURL != "" {
		checks = append(checks, &api.AgentServiceCheck{
			CheckID:                        "service:" + in.ID + ":ready",
			Name:                           in.Service + " /ready",
			HTTP:                           in.ReadyURL,
			Method:                         "GET",
			Interval:                       in.CheckInterval.String(),
			Timeout:                        in.CheckTimeout.String(),
			DeregisterCriticalServiceAfter: in.DeregisterAfter.String(),
		})
	}
	return &api.AgentServiceRegistration{
		ID:      in.ID,
		Name:    in.Service,
		Tags:    []string{in.Version},
		Address: in.Address,
		Port:    in.Port,
		Meta:    meta,
		Checks:  checks,
	}
}

// Agent is the part of Consul's agent API the registrar uses; *api.Agent
// has it. Both calls take the context that bounds them (CallTimeout): the
// Consul client cancels its HTTP request when the context ends.
type Agent interface {
	ServiceRegisterOpts(reg *api.AgentServiceRegistration, opts api.ServiceRegisterOpts) error
	ServiceDeregisterOpts(serviceID string, q *api.QueryOptions) error
	EnableServiceMaintenanceOpts(serviceID, reason string, q *api.QueryOptions) error
}

// DefaultCallTimeout bounds each call to the Consul agent.
const DefaultCallTimeout = 5 * time.Second

// Registrar registers one instance with retries and deregisters it.
type Registrar struct {
	agent    Agent
	instance Instance
	logger   *slog.Logger
	// MinBackoff and MaxBackoff bound the wait between attempts.
	MinBackoff, MaxBackoff time.Duration
	// CallTimeout [DefaultCallTimeout] bounds each call to the agent: a
	// Consul that accepts the connection and never answers costs one
	// attempt of CallTimeout, then the next attempt follows the backoff.
	// The checks are part of the registration (Consul runs them), so they
	// have no calls of their own.
	CallTimeout time.Duration
}

// New returns a registrar for instance on agent.
func New(agent Agent, instance Instance, logger *slog.Logger) *Registrar {
	return &Registrar{
		agent: agent, instance: instance,
		logger:     logger.With("component", "consulreg", "instance", instance.ID),
		MinBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second,
		CallTimeout: DefaultCallTimeout,
	}
}

// call runs one agent call with a context bounded by CallTimeout (and ctx).
func (r *Registrar) call(ctx context.Context, fn func(ctx context.Context) error) error {
	timeout := r.CallTimeout
	if timeout <= 0 {
		timeout = DefaultCallTimeout
	}
	callCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := fn(callCtx)
	if err != nil && callCtx.Err() != nil && ctx.Err() == nil {
		// The client's own message ("context deadline exceeded" inside a
		// URL error) does not say whose deadline it was.
		err = fmt.Errorf("no answer within %s: %w", timeout, err)
	}
	return err
}

// Register registers the instance, retrying with exponential backoff while
// Consul is unreachable or does not answer within CallTimeout, until it
// succeeds or ctx ends. It logs the first failure and the recovery, not
// every retry.
func (r *Registrar) Register(ctx context.Context) error {
	reg := r.instance.Registration()
	wait := r.MinBackoff
	failing := false
	for attempt := 1; ; attempt++ {
		err := r.call(ctx, func(ctx context.Context) error {
			return r.agent.ServiceRegisterOpts(reg, api.ServiceRegisterOpts{}.WithContext(ctx))
		})
		if err == nil {
			if failing {
				r.logger.Info("registered in consul after retries", "attempts", attempt)
			} else {
				r.logger.Info("registered in consul", "address", reg.Address, "port", reg.Port)
			}
			return nil
		}
		if !failing {
			r.logger.Warn("consul registration failed; retrying with backoff", "err", err)
			failing = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("consulreg: register %s: gave up after %d attempts: %w", r.instance.ID, attempt, err)
		case <-time.After(wait):
		}
		wait = min(wait*2, r.MaxBackoff)
	}
}

// Withdraw turns the instance critical in Consul at once (the agent's
// maintenance mode), the first step of a graceful stop: callers stop
// being sent it before it drains. One call bounded by CallTimeout and ctx.
func (r *Registrar) Withdraw(ctx context.Context) error {
	err := r.call(ctx, func(ctx context.Context) error {
		return r.agent.EnableServiceMaintenanceOpts(r.instance.ID, "shutting down: draining", (&api.QueryOptions{}).WithContext(ctx))
	})
	if err != nil {
		return fmt.Errorf("consulreg: withdraw %s: %w", r.instance.ID, err)
	}
	r.logger.Info("withdrawn: critical in consul (maintenance) before draining")
	return nil
}

// Deregister removes the instance from Consul, in one call bounded by
// CallTimeout and ctx. It is not retried: shutdown goes on, and Consul
// removes an instance whose checks stay critical (DeregisterAfter).
func (r *Registrar) Deregister(ctx context.Context) error {
	err := r.call(ctx, func(ctx context.Context) error {
		return r.agent.ServiceDeregisterOpts(r.instance.ID, (&api.QueryOptions{}).WithContext(ctx))
	})
	if err != nil {
		return fmt.Errorf("consulreg: deregister %s: %w", r.instance.ID, err)
	}
	r.logger.Info("deregistered from consul")
	return nil
}
