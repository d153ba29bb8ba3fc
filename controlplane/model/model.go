package model

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/internal/pmap"
)

// Mesh is the validated mesh at one Consul moment. It is built once by a
// Builder and never modified afterwards, so the translator and the debug
// endpoints read it concurrently without locks.
//
// Its maps are persistent (pmap) and each mesh is the previous one with
// what changed replaced: a Service or Instance that did not change is the
// very same pointer in both, so pmap.Diff of two meshes' Services names
// the services that were rebuilt, at the cost of the change: every
// changed service, and possibly some whose content came out equal (a
// policy or prefix owner set again). A build from nothing (a service
// appearing or going, an ID taken twice) makes every one of them anew.
type Mesh struct {
	// Index and SeenAt come from the catalog snapshot the mesh was built
	// from.
	Index  uint64    `json:"index"`
	SeenAt time.Time `json:"seen_at"`
	// Services are the meshed services (at least one instance carries
	// mesh_* meta), by name.
	Services pmap.Map[*Service] `json:"services"`
	// Instances are every instance of every meshed service, by ID: the
	// sidecar node IDs the control plane keeps a snapshot for.
	Instances pmap.Map[*Instance] `json:"-"`
	// Routes are the public routes the edge serves, longest prefix first.
	Routes []PublicRoute `json:"routes"`
	// Unmeshed lists catalog services without mesh meta (Consul itself,
	// for one); they are ignored, not errors.
	Unmeshed []string `json:"unmeshed,omitempty"`
	// Policies reports, for every service that has a KV policy key or had
	// one rejected, which policy is in force and why.
	Policies map[string]PolicyStatus `json:"policies,omitempty"`
	// Intentions are the valid service-intentions config entries, by
	// destination ("*" for every service); an entry that did not change
	// keeps its pointer. IntentionsFor combines a service's.
	Intentions pmap.Map[*Intentions] `json:"intentions"`
	// TrustDomain is the SPIFFE trust domain of the Connect CA's leaf
	// certificates ("<cluster id>.consul"), "" while unknown.
	TrustDomain string `json:"trust_domain,omitempty"`
	// RootPEMs are the Connect CA's roots (PEM), the active one first:
	// what verifies a peer's leaf certificate.
	RootPEMs []string `json:"-"`
	// Problems is everything wrong with the input, errors and warnings,
	// sorted by Key. It is the previous mesh's slice when no problem
	// appeared or went away.
	Problems Problems `json:"problems"`

	// callers maps a service to the meshed services that declare it as
	// an upstream, sorted.
	callers pmap.Map[[]string]
}

// PublicServices returns the services owning at least one public route,
// sorted: the services the edge has clusters for.
func (m *Mesh) PublicServices() []string {
	out := make([]string, 0, len(m.Routes))
	for _, r := range m.Routes {
		out = append(out, r.Service)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Service returns the meshed service of that name, or nil.
func (m *Mesh) Service(name string) *Service {
	s, _ := m.Services.Get(name)
	return s
}

// Instance returns the instance of a meshed service with that ID, or nil.
func (m *Mesh) Instance(id string) *Instance {
	in, _ := m.Instances.Get(id)
	return in
}

// IntentionsFor returns the sources that decide calls to a service, in
// precedence order (see EffectiveSources). None: every caller is denied.
func (m *Mesh) IntentionsFor(service string) []IntentionSource {
	exact, _ := m.Intentions.Get(service)
	wildcard, _ := m.Intentions.Get(Wildcard)
	return EffectiveSources(exact, wildcard)
}

// Callers returns the meshed services that declare name as an upstream,
// sorted: the services whose sidecars a change of name's endpoints or
// config touches.
func (m *Mesh) Callers(name string) []string {
	c, _ := m.callers.Get(name)
	return c
}

// Service is one meshed service.
type Service struct {
	Name string `json:"name"`
	// Protocol is how its instances speak HTTP, from mesh_protocol.
	Protocol Protocol `json:"protocol"`
	// Instances are all registered instances, sorted by ID; Endpoint()
	// tells which of them receive traffic.
	Instances []*Instance `json:"instances"`
	// Upstreams is the union of the upstreams its instances declare (the
	// edges of the upstream graph), sorted.
	Upstreams []string `json:"upstreams,omitempty"`
	// PublicPrefixes are the app paths the edge routes to this service
	// (after conflicts were resolved), sorted.
	PublicPrefixes []string `json:"public_prefixes,omitempty"`
	// Policy is the policy in force (KV, last good, or default).
	Policy Policy `json:"policy"`
	// GRPCNotHonoured lists the settings of Policy that proxyless gRPC
	// clients do not apply (Envoys apply them all), so that /debug/model
	// shows them rather than dropping them silently.
	GRPCNotHonoured []string `json:"grpc_not_honoured,omitempty"`
}

// Endpoints returns the instances that receive traffic: passing checks and
// a usable address, sorted by ID.
func (s *Service) Endpoints() []*Instance {
	out := make([]*Instance, 0, len(s.Instances))
	for _, in := range s.Instances {
		if in.Endpoint() {
			out = append(out, in)
		}
	}
	return out
}

// EndpointCount is len(s.Endpoints()), without making the list.
func (s *Service) EndpointCount() int {
	n := 0
	for _, in := range s.Instances {
		if in.Endpoint() {
			n++
		}
	}
	return n
}

// Versions returns the distinct versions among the service's instances,
// sorted ("" for unversioned instances is left out).
func (s *Service) Versions() []string {
	var vs []string
	for _, in := range s.Instances {
		if in.Version != "" && !slices.Contains(vs, in.Version) {
			vs = append(vs, in.Version)
		}
	}
	slices.Sort(vs)
	return vs
}

// Instance is one registered instance of a meshed service: its catalog
// registration, which gives its ID, Service, Status, CreateIndex and the
// Address and Port where its sidecar inbound listener accepts (in direct
// mode: the app itself), and what the model read from its meta. The
// registration is the catalog snapshot's own (one copy of every instance
// in memory, not two); like the mesh, nobody modifies it.
type Instance struct {
	*catalog.Instance
	// AppPort is where the sidecar forwards inbound traffic on 127.0.0.1;
	// 0 when mesh_app_port is missing or invalid (no sidecar config then).
	AppPort int
	// GRPCPort is the app's gRPC port (mesh_grpc_port), where proxyless
	// gRPC clients reach the instance; 0 when it has none.
	GRPCPort int
	Version  string
	Protocol Protocol
	// Upstreams are the declared upstreams that name meshed services,
	// sorted; invalid and unknown names are problems, not upstreams.
	Upstreams []string
	// PublicPrefixes are the valid prefixes this instance declared.
	PublicPrefixes []string
	// AddressOK is false when Address or Port cannot be an endpoint.
	AddressOK bool
}

// instanceJSON is how /debug/model shows an instance.
type instanceJSON struct {
	ID             string   `json:"id"`
	Service        string   `json:"service"`
	Address        string   `json:"address"`
	Port           int      `json:"port"`
	AppPort        int      `json:"app_port"`
	GRPCPort       int      `json:"grpc_port,omitempty"`
	Version        string   `json:"version,omitempty"`
	Protocol       Protocol `json:"protocol"`
	Status         string   `json:"status"`
	Upstreams      []string `json:"upstreams,omitempty"`
	PublicPrefixes []string `json:"public_prefixes,omitempty"`
}

// MarshalJSON writes the instance as /debug/model shows it.
func (i *Instance) MarshalJSON() ([]byte, error) {
	return json.Marshal(instanceJSON{
		ID: i.ID, Service: i.Service, Address: i.Address, Port: i.Port, AppPort: i.AppPort, GRPCPort: i.GRPCPort,
		Version: i.Version, Protocol: i.Protocol, Status: i.Status, Upstreams: i.Upstreams, PublicPrefixes: i.PublicPrefixes,
	})
}

// Healthy reports whether every check passes.
func (i *Instance) Healthy() bool { return i.Status == "passing" }

// Endpoint reports whether the instance should receive traffic.
func (i *Instance) Endpoint() bool { return i.Healthy() && i.AddressOK }

// Protocol is the HTTP version a service's instances speak.
type Protocol string

// Protocols accepted in mesh_protocol.
const (
	HTTP1 Protocol = "http"  // HTTP/1.1
	HTTP2 Protocol = "http2" // HTTP/2 (prior knowledge); "grpc" means the same
)

// PublicRoute is one edge route: /api<Prefix> goes to Service with /api
// stripped.
type PublicRoute struct {
	Prefix  string `json:"prefix"`
	Service string `json:"service"`
}

// PolicySource says where the policy in force came from.
type PolicySource string

// Policy sources.
const (
	PolicyDefault  PolicySource = "default"   // no KV key
	PolicyKV       PolicySource = "kv"        // the current KV value
	PolicyLastGood PolicySource = "last_good" // KV value rejected; the previous good one stays
)

// PolicyStatus is the debug view of one service's policy.
type PolicyStatus struct {
	Source PolicySource `json:"source"`
	// Rejected is why the current KV value was rejected, if it was.
	Rejected string `json:"rejected,omitempty"`
}

// Severity of a problem: errors drop the offending piece of input,
// warnings only inform.
type Severity string

// Severities.
const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
)

// Problem kinds, stable for metrics labels and greps.
const (
	KindMeta     = "meta"     // malformed mesh_* meta or registration field
	KindUpstream = "upstream" // mesh_upstreams names an invalid or unknown service
	KindPrefix   = "prefix"   // bad or conflicting mesh_public_prefixes
	KindPort     = "port"     // non-numeric or out-of-range port
	KindPolicy   = "policy"   // invalid KV policy
	// KindIntention: a service-intentions entry the mesh cannot enforce
	// as written (it fails closed: see Intentions).
	KindIntention = "intention"
	KindCA        = "ca" // the Connect CA's trust domain is unusable
)

// Problem is one thing wrong with the input. Key identifies it across
// builds, so it is logged and counted once, not on every rebuild.
type Problem struct {
	Severity Severity `json:"severity"`
	Kind     string   `json:"kind"`
	Service  string   `json:"service,omitempty"`
	Instance string   `json:"instance,omitempty"`
	Field    string   `json:"field,omitempty"`
	Message  string   `json:"message"`
}

// Key identifies the problem (everything but the message's details).
func (p Problem) Key() string {
	return string(p.Severity) + "|" + p.Kind + "|" + p.Service + "|" + p.Instance + "|" + p.Field + "|" + p.Message
}

// String renders the problem on one line, for logs and errors.
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(string(p.Severity))
	b.WriteString(": ")
	b.WriteString(p.Kind)
	if p.Service != "" {
		fmt.Fprintf(&b, " service=%s", p.Service)
	}
	if p.Instance != "" {
		fmt.Fprintf(&b, " instance=%s", p.Instance)
	}
	if p.Field != "" {
		fmt.Fprintf(&b, " field=%s", p.Field)
	}
	b.WriteString(": ")
	b.WriteString(p.Message)
	return b.String()
}

// Problems is a list of problems that is also an error.
type Problems []Problem

// Error lists every problem, one per line.
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return fmt.Sprintf("%d problem(s):\n%s", len(ps), strings.Join(lines, "\n"))
}

// Errors returns only the problems of severity error.
func (ps Problems) Errors() Problems {
	var out Problems
	for _, p := range ps {
		if p.Severity == SeverityError {
			out = append(out, p)
		}
	}
	return out
}

// Validate returns every problem found in the input at once (errors and
// warnings), or nil when there is none. The mesh is usable either way:
// each problem already dropped (errors) or only flagged (warnings) its
// piece of input, and the rest of the mesh is unaffected.
func (m *Mesh) Validate() error {
	if len(m.Problems) == 0 {
		return nil
	}
	return m.Problems
}

// ServiceNames returns the meshed service names in order.
func (m *Mesh) ServiceNames() []string { return slices.Sorted(m.Services.Keys()) }

// ProblemsFor returns the problems about one instance or its service's
// policy and registration (what a node's debug entry shows).
func (m *Mesh) ProblemsFor(instanceID string) Problems {
	in := m.Instance(instanceID)
	var out Problems
	for _, p := range m.Problems {
		if p.Instance == instanceID || (in != nil && p.Instance == "" && p.Service == in.Service) {
			out = append(out, p)
		}
	}
	return out
}
