package translate

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/meshop/meshop/controlplane/internal/pmap"
	"github.com/meshop/meshop/controlplane/model"
)

// Inputs is everything one node's configuration is built from, gathered
// from the mesh by InputsOf: a *SidecarInputs, *EdgeInputs or
// *ProxylessInputs. Build reads nothing else, so equal inputs give equal
// resources: Key tells, and the instances of one service, whose inputs
// are equal, share one build.
type Inputs interface {
	// Key identifies the inputs: equal inputs, equal keys.
	Key() string
	// SharedNames are the services whose Shared the configuration
	// references, sorted (Build returns the same in NodeConfig.Upstreams).
	SharedNames() []string
	// Build translates the inputs.
	Build() *NodeConfig
}

// InputsOf gathers the inputs of node n from m, with the Shared of every
// meshed service from shared, and reports what it read. The node is the
// edge, a proxyless gRPC client or a sidecar, as n says.
func InputsOf(m *model.Mesh, n Node, cfg Config, shared map[string]*Shared) (Inputs, Reads, error) {
	switch {
	case n.Edge:
		in, reads := edgeInputsOf(m, cfg, shared)
		return in, reads, nil
	case n.Flavor == FlavorProxyless:
		return proxylessInputsOf(m, n, cfg, shared)
	default:
		return sidecarInputsOf(m, n, cfg, shared)
	}
}

// FromScratch is the whole configuration of node n, built from nothing by
// the functions serve calls one change at a time: the reference its
// snapshots are tested against, and what the goldens render.
func FromScratch(m *model.Mesh, n Node, cfg Config) (*Resources, error) {
	shared := AllShared(m, cfg)
	in, _, err := InputsOf(m, n, cfg, shared)
	if err != nil {
		return nil, err
	}
	return in.Build().Resources(shared), nil
}

// SidecarInputs is what a sidecar's own resources are built from.
type SidecarInputs struct {
	// Own is the instance's own service: its local_app cluster and inbound
	// route follow the service's protocol and policy.
	Own     UpstreamRef
	AppPort int
	// GRPCPort is the app's gRPC port (0: none): gRPC calls arriving at
	// the inbound listener go there.
	GRPCPort int
	// InboundPort, OutboundPort and ExposePort are the listener ports in
	// force (node metadata, or the Config defaults).
	InboundPort, OutboundPort, ExposePort uint32
	Collector                             string
	// Upstreams are the declared upstreams, sorted by name.
	Upstreams []UpstreamRef
	// Authz is who may call the inbound listener; nil: plaintext.
	Authz *InboundAuthz
}

// InboundAuthz is what a node's inbound side enforces under mutual TLS:
// the trust domain of its callers' certificates and the intentions that
// decide which callers may call (model.Mesh.IntentionsFor its service).
type InboundAuthz struct {
	TrustDomain string
	Sources     []model.IntentionSource
}

// EdgeInputs is what the edge's own resources are built from.
type EdgeInputs struct {
	// Routes are the public routes, longest prefix first.
	Routes      []model.PublicRoute
	Port        uint32
	Collector   string
	RateLimit   RateLimit
	CORSOrigins []string
	// TLSFile is the SDS file of the listener's HTTPS certificate, ""
	// for plain HTTP (Config.EdgeTLS, EdgeTLSFile).
	TLSFile string
	// CheckTokens: auth is in the mesh, so jwt_authn can fetch its keys
	// through svc_auth and check tokens (Envoy refuses a listener whose
	// jwt_authn names a cluster it does not have).
	CheckTokens bool
	// Upstreams are the services owning a route, and auth, sorted by
	// name.
	Upstreams []UpstreamRef
}

// UpstreamRef is one upstream as a node's translation reads it: its name
// and the key of its shared configuration are part of the node's inputs
// (and of its Key); the configuration itself is what that key stands for.
type UpstreamRef struct {
	Name      string
	ConfigKey string
	config    *UpstreamConfig
}

// upstreamConfigInputs is what Upstream builds a service's shared clusters
// and virtual host from.
type upstreamConfigInputs struct {
	Service  string
	Protocol model.Protocol
	Policy   policyFields
	// TrustDomain is the trust domain of the service's leaves, "" for
	// plaintext.
	TrustDomain string
}

// policyFields is model.Policy without its MarshalJSON, which writes the
// policy document's fields as a list kept by hand: the key of inputs
// holding a policy covers every field of it.
type policyFields model.Policy

// policy is the model's view of the inputs' policy.
func (in *upstreamConfigInputs) policy() model.Policy { return model.Policy(in.Policy) }

// Key implements Inputs.
func (in *SidecarInputs) Key() string { return key(in) }

// Key implements Inputs.
func (in *EdgeInputs) Key() string { return key(in) }

// SharedNames implements Inputs.
func (in *SidecarInputs) SharedNames() []string { return names(in.Upstreams) }

// SharedNames implements Inputs.
func (in *EdgeInputs) SharedNames() []string { return names(in.Upstreams) }

// Build implements Inputs.
func (in *SidecarInputs) Build() *NodeConfig { return sidecar(in) }

// Build implements Inputs.
func (in *EdgeInputs) Build() *NodeConfig { return edge(in) }

func names(refs []UpstreamRef) []string {
	out := make([]string, len(refs))
	for i, r := range refs {
		out[i] = r.Name
	}
	return out
}

// key hashes the JSON form of inputs, every exported field of it: a field
// added to an inputs type is part of its key without anyone listing it.
// (No inputs type may hold a value whose MarshalJSON leaves fields out:
// see policyFields.)
func key(inputs any) string {
	h := sha256.New()
	if err := json.NewEncoder(h).Encode(inputs); err != nil {
		// Inputs hold strings, numbers, durations and slices of them.
		panic(fmt.Sprintf("translate: encoding inputs %T: %v", inputs, err))
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Reads are the parts of the mesh one gathering read, as read keys
// (sorted, each once): an instance, the public routes, the shared
// configuration of a service (what its ConfigKey covers). Changes
// reports the keys whose parts differ; a node is gathered again when one
// of its reads is among them.
type Reads []string

// Read keys.
const (
	readRoutes      = "routes"
	readTrustDomain = "trust_domain"
)

func readUpstream(name string) string   { return "upstream/" + name }
func readInstance(id string) string     { return "instance/" + id }
func readIntentions(name string) string { return "intentions/" + name }

// reader is the mesh as a gathering sees it: every lookup is recorded.
type reader struct {
	m     *model.Mesh
	reads []string
}

func (r *reader) instance(id string) *model.Instance {
	r.reads = append(r.reads, readInstance(id))
	return r.m.Instance(id)
}

func (r *reader) routes() []model.PublicRoute {
	r.reads = append(r.reads, readRoutes)
	return r.m.Routes
}

// authz is the inbound authorization of service under cfg: nil with MTLS
// off (nothing read) or while the trust domain is unknown.
func (r *reader) authz(cfg Config, service string) *InboundAuthz {
	if !cfg.MTLS {
		return nil
	}
	r.reads = append(r.reads, readTrustDomain)
	if r.m.TrustDomain == "" {
		return nil
	}
	r.reads = append(r.reads, readIntentions(service), readIntentions(model.Wildcard))
	return &InboundAuthz{TrustDomain: r.m.TrustDomain, Sources: r.m.IntentionsFor(service)}
}

func (r *reader) done() Reads {
	slices.Sort(r.reads)
	return slices.Compact(r.reads)
}

// upstream is the reference to one service's Shared; shared holds the
// Shared of every meshed service, by name.
func (r *reader) upstream(name string, shared map[string]*Shared) UpstreamRef {
	r.reads = append(r.reads, readUpstream(name))
	s := shared[name]
	return UpstreamRef{Name: name, ConfigKey: s.ConfigKey, config: s.Config}
}

// sidecarInputsOf gathers the inputs of the sidecar of instance n.ID.
func sidecarInputsOf(m *model.Mesh, n Node, cfg Config, shared map[string]*Shared) (*SidecarInputs, Reads, error) {
	r := &reader{m: m}
	in := r.instance(n.ID)
	if in == nil {
		return nil, r.done(), errUnknownNode(n.ID)
	}
	if in.AppPort == 0 {
		return nil, r.done(), fmt.Errorf("%w: %q", ErrNoAppPort, n.ID)
	}
	if n.InboundPort != 0 && int(n.InboundPort) != in.Port {
		return nil, r.done(), fmt.Errorf("%w: %q sent %d, registered %d", ErrInboundPortMoved, n.ID, n.InboundPort, in.Port)
	}
	out := &SidecarInputs{
		Own:          r.upstream(in.Service, shared),
		AppPort:      in.AppPort,
		GRPCPort:     in.GRPCPort,
		InboundPort:  cmp.Or(n.InboundPort, cfg.InboundPort),
		OutboundPort: cmp.Or(n.OutboundPort, cfg.OutboundPort),
		ExposePort:   cmp.Or(n.ExposePort, cfg.ExposePort),
		Collector:    cfg.CollectorAddress,
	}
	if out.InboundPort == out.OutboundPort || out.InboundPort == out.ExposePort || out.OutboundPort == out.ExposePort {
		return nil, r.done(), fmt.Errorf("the inbound (%d), outbound (%d) and expose (%d) listeners need three ports", out.InboundPort, out.OutboundPort, out.ExposePort)
	}
	for _, name := range in.Upstreams {
		out.Upstreams = append(out.Upstreams, r.upstream(name, shared))
	}
	out.Authz = r.authz(cfg, in.Service)
	return out, r.done(), nil
}

// edgeInputsOf gathers the inputs of the edge.
func edgeInputsOf(m *model.Mesh, cfg Config, shared map[string]*Shared) (*EdgeInputs, Reads) {
	r := &reader{m: m}
	out := &EdgeInputs{
		Routes:      r.routes(),
		Port:        cfg.EdgePort,
		Collector:   cfg.CollectorAddress,
		RateLimit:   cfg.RateLimit,
		CORSOrigins: cfg.CORSOrigins,
	}
	if cfg.EdgeTLS {
		out.TLSFile = cfg.EdgeTLSFile
	}
	names := m.PublicServices()
	// Read even while auth is missing, so that its arrival turns the
	// token check on.
	r.reads = append(r.reads, readUpstream(AuthService))
	if m.Service(AuthService) != nil {
		out.CheckTokens = true
		if !slices.Contains(names, AuthService) {
			names = append(slices.Clone(names), AuthService)
			slices.Sort(names)
		}
	}
	for _, name := range names {
		out.Upstreams = append(out.Upstreams, r.upstream(name, shared))
	}
	return out, r.done()
}

// Changes is what differs between two meshes, in read keys.
type Changes struct {
	// Reads are the read keys whose parts differ: every node that read one
	// of them must be gathered again. SharedChanged adds the services
	// whose shared configuration changed.
	Reads []string
	// Services are the services the mesh replaced, added or removed (every
	// service when the trust domain changed): their Shared must be
	// translated again.
	Services []string
	// Instances are the IDs of the instances that appeared, went or
	// changed: the sidecar nodes that may be new or gone.
	Instances []string
}

// Changed compares prev (nil for none) with m. The model replaces a
// Service or Instance whenever anything in it changes and keeps the very
// same one otherwise, so the comparison costs what changed, not the size
// of the mesh.
func Changed(prev, m *model.Mesh) Changes {
	var ch Changes
	var services pmap.Map[*model.Service]
	var instances pmap.Map[*model.Instance]
	var routes []model.PublicRoute
	if prev != nil {
		services, instances, routes = prev.Services, prev.Instances, prev.Routes
	}
	for name := range pmap.Diff(services, m.Services, func(a, b *model.Service) bool { return a == b }) {
		ch.Services = append(ch.Services, name)
	}
	for id := range pmap.Diff(instances, m.Instances, func(a, b *model.Instance) bool { return a == b }) {
		ch.Instances = append(ch.Instances, id)
		ch.Reads = append(ch.Reads, readInstance(id))
	}
	sameRoutes := len(routes) == len(m.Routes) && (len(routes) == 0 || &routes[0] == &m.Routes[0])
	if prev == nil || !sameRoutes && !slices.Equal(routes, m.Routes) {
		ch.Reads = append(ch.Reads, readRoutes)
	}
	var intentions pmap.Map[*model.Intentions]
	if prev != nil {
		intentions = prev.Intentions
	}
	for name := range pmap.Diff(intentions, m.Intentions, func(a, b *model.Intentions) bool { return a == b }) {
		ch.Reads = append(ch.Reads, readIntentions(name))
	}
	if prev != nil && prev.TrustDomain != m.TrustDomain {
		// Every service's clusters check the trust domain: translate
		// them all again (rare: a new Connect CA cluster).
		ch.Reads = append(ch.Reads, readTrustDomain)
		ch.Services = slices.Collect(m.Services.Keys())
		for name := range services.Keys() {
			if m.Service(name) == nil {
				ch.Services = append(ch.Services, name)
			}
		}
	}
	return ch
}

// SharedChanged records the new Shared of a service that Changes named
// (nil for a service that went): if its configuration's key differs from
// prev's, every node that read it must be gathered again. Its endpoints
// are no read of anyone: the nodes that reference the service take its
// new load assignments without a new translation.
func (ch *Changes) SharedChanged(prev, cur *Shared) {
	switch {
	case prev == nil && cur == nil:
	case prev == nil || cur == nil || prev.ConfigKey != cur.ConfigKey:
		name := cmp.Or(cur, prev).Name
		ch.Reads = append(ch.Reads, readUpstream(name))
	}
}
