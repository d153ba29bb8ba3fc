// Package csds serves Envoy's Client Status Discovery Service
// (envoy.service.status.v3) on the control plane's gRPC port, beside ADS,
// so standard tooling can ask for every client's status and config:
//
//	ClientStatusRequest ──operator token (x-consul-token, or
//	    │                  authorization: Bearer): Consul operator:read
//	    ▼
//	serve.Server.Nodes ──node_matchers (node id)──▶ the clients
//	    │ per client: serve.Server.Resources (its snapshot) and what the
//	    │ tracker knows (last sent, last ACK, last NACK per type URL)
//	    ▼
//	ClientConfig{node, generic_xds_configs: one per resource}
//
// Each resource of a client's snapshot is one GenericXdsConfig: its type
// URL, name, the snapshot's version of its type, the resource itself
// (secrets without their private keys, as /debug/config_dump shows them:
// package internal/redact) and two statuses. The tracker follows xDS per
// type URL, not per resource, so every resource of a type has its type's
// status:
//
//	config_status  SYNCED    the node ACKed the snapshot's version
//	               STALE     the snapshot's version was sent, no reply yet
//	               NOT_SENT  the snapshot's version was not sent (yet), or
//	                         the node never subscribed to the type
//	               ERROR     the last version sent of the type was NACKed
//	client_status  ACKED     the node runs an ACKed version of the type
//	               NACKED    it rejected the last version sent
//	               REQUESTED it is connected and has ACKed none yet
//	               UNKNOWN   disconnected, and never ACKed
//
// A NACK sets error_state: Envoy's message, the rejected version and when.
// The clients are the nodes the tracker knows (connected, or remembered
// after they left); a snapshot key no Envoy has asked for is no client.
//
// Every request needs a Consul ACL token that Consul grants operator:read,
// the debug API's operator check: Unauthenticated without a token,
// PermissionDenied with another, Unavailable when Consul cannot say. CSDS
// streams are not xDS streams: xdsauth leaves them to this check (its
// Options.Exempt names this service).
package csds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meshop/meshop/controlplane/internal/redact"
	"github.com/meshop/meshop/controlplane/serve"
)

// ServiceName is the gRPC service CSDS registers.
var ServiceName = statusv3.ClientStatusDiscoveryService_ServiceDesc.ServiceName

// Server is what CSDS reads from the xDS server (serve.Server).
type Server interface {
	Nodes() []serve.NodeStatus
	Resources(nodeID string) (key string, res map[string][]cachetypes.Resource, versions map[string]string, err error)
}

// Operators decides who is an operator: Consul, through
// catalog.ConsulSource.OperatorRead (as for the debug API).
type Operators interface {
	OperatorRead(ctx context.Context, token string) (bool, error)
}

// Service is the CSDS server.
type Service struct {
	statusv3.UnimplementedClientStatusDiscoveryServiceServer
	srv Server
	ops Operators
	log *slog.Logger
}

var _ statusv3.ClientStatusDiscoveryServiceServer = (*Service)(nil)

// New returns the CSDS server of srv; ops decides who may ask.
func New(srv Server, ops Operators, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{srv: srv, ops: ops, log: log.With("component", "csds")}
}

// Register registers the service on a gRPC server.
func (s *Service) Register(r grpc.ServiceRegistrar) {
	statusv3.RegisterClientStatusDiscoveryServiceServer(r, s)
}

// FetchClientStatus implements statusv3.ClientStatusDiscoveryServiceServer.
func (s *Service) FetchClientStatus(ctx context.Context, req *statusv3.ClientStatusRequest) (*statusv3.ClientStatusResponse, error) {
	if err := s.authorize(ctx, "FetchClientStatus"); err != nil {
		return nil, err
	}
	return s.Status(req)
}

// StreamClientStatus implements statusv3.ClientStatusDiscoveryServiceServer:
// each request gets one response. The token is checked at every request,
// so a revoked token gets no answer.
func (s *Service) StreamClientStatus(st statusv3.ClientStatusDiscoveryService_StreamClientStatusServer) error {
	for {
		req, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil // the client closed the stream
		}
		if err != nil {
			return err
		}
		if err := s.authorize(st.Context(), "StreamClientStatus"); err != nil {
			return err
		}
		resp, err := s.Status(req)
		if err != nil {
			return err
		}
		if err := st.Send(resp); err != nil {
			return err
		}
	}
}

// Token is the operator token of a gRPC call: x-consul-token, else
// authorization: Bearer <token> ("" when neither is there).
func Token(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("x-consul-token"); len(v) > 0 && v[0] != "" {
		return v[0]
	}
	for _, v := range md.Get("authorization") {
		if token, ok := strings.CutPrefix(v, "Bearer "); ok {
			return strings.TrimSpace(token)
		}
	}
	return ""
}

// authorize lets a call through only with a token Consul grants
// operator:read.
func (s *Service) authorize(ctx context.Context, method string) error {
	token := Token(ctx)
	ok, err := s.ops.OperatorRead(ctx, token)
	var remote string
	if p, found := peer.FromContext(ctx); found {
		remote = p.Addr.String()
	}
	switch {
	case err != nil:
		s.log.Warn("operator check failed", "method", method, "err", err.Error())
		return status.Errorf(codes.Unavailable, "Consul could not check the token: %v", err)
	case ok:
		return nil
	case token == "":
		s.log.Warn("CSDS call refused: no token", "method", method, "remote", remote)
		return status.Error(codes.Unauthenticated, "CSDS needs a Consul ACL token with operator:read (gRPC metadata x-consul-token, or authorization: Bearer)")
	default:
		s.log.Warn("CSDS call refused: no operator:read", "method", method, "remote", remote)
		return status.Error(codes.PermissionDenied, "the token has no operator:read in Consul")
	}
}

// Status answers req, without checking who asks: one ClientConfig per
// client that one of req's node matchers matches (every client when
// there are none).
func (s *Service) Status(req *statusv3.ClientStatusRequest) (*statusv3.ClientStatusResponse, error) {
	match, err := matcher(req.GetNodeMatchers())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	resp := &statusv3.ClientStatusResponse{}
	for _, n := range s.srv.Nodes() {
		if !isClient(n) || !match(n.ID) {
			continue
		}
		cfg, err := s.clientConfig(n, req.GetExcludeResourceContents())
		if err != nil {
			s.log.Error("client status", "node", n.ID, "err", err)
			return nil, status.Errorf(codes.Internal, "node %q: %v", n.ID, err)
		}
		resp.Config = append(resp.Config, cfg)
	}
	return resp, nil
}

// isClient tells a node the tracker knows (it made a request) from a
// snapshot key serve.Server.Nodes lists because it has a snapshot but no
// Envoy has asked for it: those carry none of this.
func isClient(n serve.NodeStatus) bool {
	return n.Connected || n.Cluster != "" || n.LastSent != nil || n.LastAck != nil || n.LastNack != nil
}

func (s *Service) clientConfig(n serve.NodeStatus, exclude bool) (*statusv3.ClientConfig, error) {
	node := &corev3.Node{Id: n.ID, Cluster: n.Cluster}
	if md, err := structpb.NewStruct(n.Metadata); err == nil && len(n.Metadata) > 0 {
		node.Metadata = md
	}
	cfg := &statusv3.ClientConfig{Node: node}
	_, res, versions, err := s.srv.Resources(n.ID)
	if errors.Is(err, serve.ErrNoSnapshot) {
		return cfg, nil // an unknown node, or a build that failed: nothing to show
	}
	if err != nil {
		return nil, err
	}
	for _, typ := range typeOrder(res) {
		version := versions[typ]
		st := typeStatus(n, typ, version)
		for _, r := range res[typ] {
			x := &statusv3.ClientConfig_GenericXdsConfig{
				TypeUrl: typ, Name: name(r), VersionInfo: version,
				ConfigStatus: st.config, ClientStatus: st.client, ErrorState: st.failure,
			}
			if !st.updated.IsZero() {
				x.LastUpdated = timestamppb.New(st.updated)
			}
			if !exclude {
				if x.XdsConfig, err = anypb.New(redact.Resource(r)); err != nil {
					return nil, fmt.Errorf("%s %q: %w", typ, x.Name, err)
				}
			}
			cfg.GenericXdsConfigs = append(cfg.GenericXdsConfigs, x)
		}
	}
	return cfg, nil
}

// typeOrder is the order types are listed in: Envoy's (CDS, EDS, LDS,
// RDS, SDS), then any other.
func typeOrder(res map[string][]cachetypes.Resource) []string {
	known := []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType, resource.SecretType}
	var out []string
	for _, t := range known {
		if _, ok := res[t]; ok {
			out = append(out, t)
		}
	}
	var rest []string
	for t := range res {
		if !slices.Contains(known, t) {
			rest = append(rest, t)
		}
	}
	slices.Sort(rest)
	return append(out, rest...)
}

// typeStatusOf is one type's status for one node.
type typeStatusOf struct {
	config  statusv3.ConfigStatus
	client  adminv3.ClientResourceStatus
	failure *adminv3.UpdateFailureState
	updated time.Time
}

// typeStatus derives a type's status from what the tracker recorded: the
// last response sent, the last ACK and the node's last NACK, against the
// version of the node's snapshot.
func typeStatus(n serve.NodeStatus, typ, version string) typeStatusOf {
	sent, wasSent := n.LastSent[typ]
	ack, acked := n.LastAck[typ]
	nack := n.LastNack
	// The last response sent of this type was rejected, and not ACKed
	// since (the cache does not send a rejected version again).
	nacked := nack != nil && nack.TypeURL == typ && wasSent && nack.Version == sent.Version &&
		!(acked && ack.Version == sent.Version && ack.At.After(nack.At))
	var st typeStatusOf
	switch {
	case nacked:
		st.config = statusv3.ConfigStatus_ERROR
		st.updated = sent.At
	case acked && ack.Version == version && version != "":
		st.config = statusv3.ConfigStatus_SYNCED
		st.updated = ack.At
	case wasSent && sent.Version == version && version != "":
		st.config = statusv3.ConfigStatus_STALE
		st.updated = sent.At
	default:
		st.config = statusv3.ConfigStatus_NOT_SENT
	}
	switch {
	case nacked:
		st.client = adminv3.ClientResourceStatus_NACKED
		st.failure = &adminv3.UpdateFailureState{
			Details: nack.Message, VersionInfo: nack.Version, LastUpdateAttempt: timestamppb.New(nack.At),
		}
	case acked:
		st.client = adminv3.ClientResourceStatus_ACKED
	case n.Connected:
		st.client = adminv3.ClientResourceStatus_REQUESTED
	default:
		st.client = adminv3.ClientResourceStatus_UNKNOWN
	}
	return st
}

func name(r cachetypes.Resource) string {
	type named interface{ GetName() string }
	if n, ok := r.(named); ok {
		return n.GetName()
	}
	if c, ok := r.(interface{ GetClusterName() string }); ok { // ClusterLoadAssignment
		return c.GetClusterName()
	}
	return ""
}

// matcher is the OR of node matchers (true for all with none). Node ids
// are matched (exact, prefix, suffix, contains, safe_regex, with
// ignore_case); metadata matchers are refused rather than ignored.
func matcher(ms []*matcherv3.NodeMatcher) (func(id string) bool, error) {
	if len(ms) == 0 {
		return func(string) bool { return true }, nil
	}
	var fs []func(string) bool
	for i, m := range ms {
		if len(m.GetNodeMetadatas()) > 0 {
			return nil, fmt.Errorf("node_matchers[%d]: node_metadatas matching is not supported; match node_id", i)
		}
		if m.GetNodeId() == nil {
			fs = append(fs, func(string) bool { return true })
			continue
		}
		f, err := stringMatcher(m.GetNodeId())
		if err != nil {
			return nil, fmt.Errorf("node_matchers[%d].node_id: %w", i, err)
		}
		fs = append(fs, f)
	}
	return func(id string) bool {
		for _, f := range fs {
			if f(id) {
				return true
			}
		}
		return false
	}, nil
}

func stringMatcher(m *matcherv3.StringMatcher) (func(string) bool, error) {
	fold := func(s string) string {
		if m.GetIgnoreCase() {
			return strings.ToLower(s)
		}
		return s
	}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		want := fold(p.Exact)
		return func(s string) bool { return fold(s) == want }, nil
	case *matcherv3.StringMatcher_Prefix:
		want := fold(p.Prefix)
		return func(s string) bool { return strings.HasPrefix(fold(s), want) }, nil
	case *matcherv3.StringMatcher_Suffix:
		want := fold(p.Suffix)
		return func(s string) bool { return strings.HasSuffix(fold(s), want) }, nil
	case *matcherv3.StringMatcher_Contains:
		want := fold(p.Contains)
		return func(s string) bool { return strings.Contains(fold(s), want) }, nil
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := regexp.Compile("^(?:" + p.SafeRegex.GetRegex() + ")$") // Envoy's regex matches the whole string
		if err != nil {
			return nil, err
		}
		return re.MatchString, nil
	default:
		return nil, fmt.Errorf("unsupported string matcher %T", p)
	}
}
