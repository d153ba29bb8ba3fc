// Package xdsauth authenticates the control plane's xDS streams with
// Consul ACL tokens, as Consul's own xDS server does:
//
//	stream ──x-consul-token──▶ token's service identities (Consul, cached)
//	       ──first request──▶ node.cluster is one of them, and node.id a
//	                          registered instance of it (edge: edge-<n>)
//	       ──every TTL──▶ the token again: revoked → the stream ends
//
// Anything else ends the stream with PermissionDenied, a log line, a count
// in meshop_xds_streams_refused_total{reason} and an entry in Refusals
// (shown on /debug/nodes). Against a Consul without ACLs there is nothing
// to check a token against, and every stream is served. Streams of the
// services named in Options.Exempt (CSDS, which checks an operator's
// token itself) are not xDS streams and pass unchecked.
package xdsauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// TokenHeader is the gRPC metadata key of the token.
const TokenHeader = "x-consul-token"

// EdgeService is the service identity of the edge gateway; its node ids
// are edge-<n> and are not registered in Consul.
const EdgeService = "edge"

// Errors a Directory returns.
var (
	// ErrUnknownToken: Consul knows no such token (never, or revoked).
	ErrUnknownToken = errors.New("xdsauth: Consul knows no such token")
	// ErrACLsDisabled: Consul runs without ACLs.
	ErrACLsDisabled = errors.New("xdsauth: Consul has ACLs disabled")
)

// Directory is what the authenticator asks of Consul.
type Directory interface {
	// TokenServices are the service identities of token.
	TokenServices(ctx context.Context, token string) ([]string, error)
	// IsInstance reports whether id is a registered instance of service,
	// whatever its health.
	IsInstance(ctx context.Context, service, id string) (bool, error)
}

// Options configure an Authenticator.
type Options struct {
	Directory Directory
	// TTL is how long a token's identities are trusted before Consul is
	// asked again; a revoked token's streams end within it (default 30s).
	TTL time.Duration
	// RegistrationWait is how long a stream waits for its node to appear
	// in the catalog (an app opens its stream as it registers; default 5s).
	RegistrationWait time.Duration
	Logger           *slog.Logger
	Metrics          prometheus.Registerer
	// Exempt are gRPC services on the same server whose calls are not
	// xDS streams and authorize their callers themselves (CSDS: an
	// operator's token, package csds); their streams skip the node check.
	// Every other stream is checked.
	Exempt []string
}

// Authenticator checks xDS streams.
type Authenticator struct {
	opts    Options
	log     *slog.Logger
	refused *prometheus.CounterVec

	mu       sync.Mutex
	tokens   map[string]cachedToken
	refusals []Refusal // the last maxRefusals, oldest first
}

// cachedToken is what Consul said of a token: its service identities,
// or that it knows no such token (unknown), until expires.
type cachedToken struct {
	services []string
	unknown  bool
	expires  time.Time
}

// unknownTTL is how long "Consul knows no such token" is remembered, so
// a peer looping over forged tokens does not make a Consul request each.
const unknownTTL = 5 * time.Second

// Refusal is one refused stream, for operators.
type Refusal struct {
	Time    time.Time `json:"time"`
	Node    string    `json:"node,omitempty"`
	Cluster string    `json:"cluster,omitempty"`
	Peer    string    `json:"peer,omitempty"`
	Reason  string    `json:"reason"`
	Detail  string    `json:"detail"`
}

const maxRefusals = 100

// New returns an Authenticator.
func New(opts Options) *Authenticator {
	if opts.TTL <= 0 {
		opts.TTL = 30 * time.Second
	}
	if opts.RegistrationWait <= 0 {
		opts.RegistrationWait = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	a := &Authenticator{
		opts: opts, log: opts.Logger.With("component", "xdsauth"), tokens: map[string]cachedToken{},
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshop_xds_streams_refused_total",
			Help: "xDS streams refused, by reason (no_token, unknown_token, wrong_service, not_an_instance, revoked).",
		}, []string{"reason"}),
	}
	if opts.Metrics != nil {
		opts.Metrics.MustRegister(a.refused)
	}
	return a
}

type tokenKey struct{}

// TokenOf is the Consul ACL token a stream presented, from its context;
// ok is false for a stream the authenticator did not see.
func TokenOf(ctx context.Context) (token string, ok bool) {
	token, ok = ctx.Value(tokenKey{}).(string)
	return token, ok
}

// Refusals are the most recent refused streams, newest last.
func (a *Authenticator) Refusals() []Refusal {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.refusals)
}

// StreamInterceptor authenticates every stream of the gRPC server but
// those of the Exempt services.
func (a *Authenticator) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if a.exempt(info.FullMethod) {
			return handler(srv, ss)
		}
		return a.serve(srv, ss, handler)
	}
}

// exempt reports whether a method (/package.Service/Method) is one of an
// Exempt service.
func (a *Authenticator) exempt(fullMethod string) bool {
	svc, _, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	return ok && slices.Contains(a.opts.Exempt, svc)
}

// refusal is a stream's end for a reason.
type refusal struct {
	reason, detail string
	node           *corev3.Node
}

func (r *refusal) Error() string { return r.detail }

func (a *Authenticator) serve(srv any, ss grpc.ServerStream, handler grpc.StreamHandler) error {
	ctx := ss.Context()
	token := ""
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(TokenHeader)) > 0 {
		token = md.Get(TokenHeader)[0]
	}
	// Asked even without a token: only Consul says whether it has ACLs.
	// When Consul cannot be asked, the stream ends Unavailable (Envoy
	// retries), whatever its token: it is not refused for a reason
	// nobody could check.
	_, err := a.services(ctx, token)
	switch {
	case errors.Is(err, ErrACLsDisabled):
		return handler(srv, &contextStream{ServerStream: ss, ctx: context.WithValue(ctx, tokenKey{}, token)})
	case err != nil && !errors.Is(err, ErrUnknownToken):
		return status.Errorf(codes.Unavailable, "cannot check the token with Consul: %v", err)
	case token == "":
		return a.refuse(ctx, &refusal{reason: "no_token", detail: "no Consul ACL token (gRPC metadata " + TokenHeader + ")"})
	case err != nil:
		return a.refuse(ctx, &refusal{reason: "unknown_token", detail: "Consul knows no such ACL token"})
	}

	sctx, cancel := context.WithCancelCause(context.WithValue(ctx, tokenKey{}, token))
	defer cancel(nil)
	s := &stream{ServerStream: ss, ctx: sctx}
	s.check = func(n *corev3.Node) *refusal {
		fresh, err := a.services(sctx, token) // the token's identities now, not at open
		if err != nil {
			return &refusal{node: n, reason: "revoked", detail: "the stream's Consul ACL token is no longer valid"}
		}
		return a.authorize(sctx, fresh, n)
	}
	go a.revalidate(sctx, token, s, cancel)
	err = handler(srv, s)
	if r := s.refused(); r != nil {
		return a.refuse(ctx, r)
	}
	var r *refusal
	if errors.As(context.Cause(sctx), &r) {
		return a.refuse(ctx, r)
	}
	return err
}

// authorize checks the node a stream speaks for against its token's
// service identities.
func (a *Authenticator) authorize(ctx context.Context, services []string, n *corev3.Node) *refusal {
	id, svc := n.GetId(), n.GetCluster()
	if !slices.Contains(services, svc) {
		return &refusal{node: n, reason: "wrong_service", detail: fmt.Sprintf("the token carries no service identity of %q (it has %v)", svc, services)}
	}
	if svc == EdgeService {
		if !strings.HasPrefix(id, EdgeService+"-") {
			return &refusal{node: n, reason: "not_an_instance", detail: fmt.Sprintf("edge node ids are edge-<n>, not %q", id)}
		}
		return nil
	}
	wait, cancel := context.WithTimeout(ctx, a.opts.RegistrationWait)
	defer cancel()
	for {
		ok, err := a.opts.Directory.IsInstance(wait, svc, id)
		if ok {
			return nil
		}
		if err != nil && wait.Err() == nil {
			a.log.Warn("cannot look up an xDS node in Consul; retrying", "node", id, "err", err)
		}
		select {
		case <-wait.Done():
			return &refusal{node: n, reason: "not_an_instance", detail: fmt.Sprintf("%q is not a registered instance of %s", id, svc)}
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// revalidate asks Consul about the token every TTL (not the cache: so a
// change takes effect within one TTL) and ends the stream once Consul no
// longer knows the token, or the token no longer carries the identity of
// the stream's node.
func (a *Authenticator) revalidate(ctx context.Context, token string, s *stream, cancel context.CancelCauseFunc) {
	t := time.NewTicker(a.opts.TTL)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		services, err := a.lookup(ctx, token)
		switch {
		case errors.Is(err, ErrUnknownToken):
			cancel(&refusal{reason: "revoked", detail: "the stream's Consul ACL token was revoked"})
			return
		case err != nil:
			continue // Consul unreachable: keep the stream, ask again next time
		}
		if cluster := s.cluster(); cluster != "" && !slices.Contains(services, cluster) {
			cancel(&refusal{reason: "wrong_service", detail: fmt.Sprintf("the token no longer carries the service identity of %q", cluster)})
			return
		}
	}
}

// services are token's service identities, from the cache while fresh.
func (a *Authenticator) services(ctx context.Context, token string) ([]string, error) {
	a.mu.Lock()
	c, ok := a.tokens[token]
	a.mu.Unlock()
	switch {
	case ok && time.Now().Before(c.expires) && c.unknown:
		return nil, ErrUnknownToken
	case ok && time.Now().Before(c.expires):
		return c.services, nil
	}
	return a.lookup(ctx, token)
}

// lookup asks Consul about token and caches the answer: the identities for
// TTL, "no such token" for unknownTTL.
func (a *Authenticator) lookup(ctx context.Context, token string) ([]string, error) {
	services, err := a.opts.Directory.TokenServices(ctx, token)
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, v := range a.tokens { // forget expired answers as new ones come
		if now.After(v.expires) {
			delete(a.tokens, k)
		}
	}
	switch {
	case errors.Is(err, ErrUnknownToken):
		a.tokens[token] = cachedToken{unknown: true, expires: now.Add(unknownTTL)}
		return nil, err
	case err != nil:
		return nil, err
	}
	a.tokens[token] = cachedToken{services: services, expires: now.Add(a.opts.TTL)}
	return services, nil
}

// refuse logs, counts and records r, and is the stream's status.
func (a *Authenticator) refuse(ctx context.Context, r *refusal) error {
	rec := Refusal{Time: time.Now(), Node: r.node.GetId(), Cluster: r.node.GetCluster(), Reason: r.reason, Detail: r.detail}
	if p, ok := peer.FromContext(ctx); ok {
		rec.Peer = p.Addr.String()
	}
	a.refused.WithLabelValues(r.reason).Inc()
	a.log.Warn("xDS stream refused", "node", rec.Node, "cluster", rec.Cluster, "peer", rec.Peer, "reason", r.reason, "detail", r.detail)
	a.mu.Lock()
	a.refusals = append(a.refusals, rec)
	if len(a.refusals) > maxRefusals {
		a.refusals = slices.Delete(a.refusals, 0, len(a.refusals)-maxRefusals)
	}
	a.mu.Unlock()
	return status.Error(codes.PermissionDenied, r.detail)
}

// contextStream is a stream with another context.
type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *contextStream) Context() context.Context { return s.ctx }

// stream checks the node of every request that names one before the
// xDS server sees it.
type stream struct {
	grpc.ServerStream
	ctx   context.Context
	check func(*corev3.Node) *refusal

	mu      sync.Mutex
	allowed string // the node already checked: id and cluster
	node    *corev3.Node
	denied  *refusal
}

// cluster is the service of the node the stream was allowed for, "" before.
func (s *stream) cluster() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.node.GetCluster()
}

// noder is a DiscoveryRequest or a DeltaDiscoveryRequest.
type noder interface{ GetNode() *corev3.Node }

func (s *stream) Context() context.Context { return s.ctx }

// RecvMsg also returns when the stream's context ends (a revoked token):
// go-control-plane's server waits on requests, not on the context. The
// receive it abandons writes into a message nobody reads, and ends with
// the stream.
func (s *stream) RecvMsg(m any) error {
	got := make(chan error, 1)
	go func() { got <- s.ServerStream.RecvMsg(m) }()
	select {
	case err := <-got:
		if err != nil {
			return err
		}
	case <-s.ctx.Done():
		return context.Cause(s.ctx)
	}
	req, ok := m.(noder)
	if !ok || req.GetNode() == nil {
		return nil
	}
	n := req.GetNode()
	key := n.GetId() + "\x00" + n.GetCluster()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.denied == nil && s.allowed == key {
		return nil
	}
	if s.denied == nil {
		if r := s.check(n); r != nil {
			s.denied = r
		} else {
			s.allowed, s.node = key, n
			return nil
		}
	}
	return status.Error(codes.PermissionDenied, s.denied.detail)
}

func (s *stream) refused() *refusal {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.denied
}
