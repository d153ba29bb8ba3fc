package model

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/meshop/meshop/controlplane/catalog"
)

// Consul meta keys the services write (DESIGN §5).
const (
	MetaProtocol       = "mesh_protocol"
	MetaUpstreams      = "mesh_upstreams"
	MetaPublicPrefixes = "mesh_public_prefixes"
	MetaAppPort        = "mesh_app_port"
	MetaVersion        = "version"
)

var (
	serviceNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	versionTagRE  = regexp.MustCompile(`^v[0-9]+$`)
	// A prefix is one or more path segments of RFC 3986 pchars, no
	// trailing slash, no dot segments (checked separately).
	prefixRE = regexp.MustCompile(`^(/[A-Za-z0-9._~!$&'()*+,;=:@-]+)+$`)
)

const (
	maxPrefixLen      = 128
	maxPrefixes       = 32
	maxUpstreams      = 64
	maxMetaValueBytes = 4 << 10
)

// Builder turns catalog snapshots into meshes. It remembers, per service,
// the last good policy (so a rejected KV value leaves the previous policy
// in force) and the problems of the previous build (so each problem is
// logged and counted when it appears and when it is resolved, not on every
// build). Build is safe to call from one goroutine at a time.
type Builder struct {
	log            *slog.Logger
	maxPolicyBytes int
	onProblem      func(Problem)

	mu       sync.Mutex
	lastGood map[string]parsedPolicy // service → last accepted KV policy
	prev     map[string]Problem      // problem key → problem, previous build
	// memo is what the previous build made of each catalog service;
	// meshedNames the meshed services it found, in order.
	memo        map[string]*svcMemo
	meshedNames []string
	instances   map[string]*Instance // the previous mesh's (never modified)
}

type parsedPolicy struct {
	raw    []byte
	policy Policy
	err    error
}

// BuilderOptions configure a Builder.
type BuilderOptions struct {
	Logger *slog.Logger
	// MaxPolicyBytes limits one KV policy document (0: MaxPolicyBytes).
	MaxPolicyBytes int
	// OnProblem is called once for each problem when it first appears
	// (metrics hook). It may be nil.
	OnProblem func(Problem)
}

// NewBuilder returns a Builder with no history.
func NewBuilder(o BuilderOptions) *Builder {
	l := o.Logger
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return &Builder{
		log:            l.With("component", "model"),
		maxPolicyBytes: o.MaxPolicyBytes,
		onProblem:      o.OnProblem,
		lastGood:       map[string]parsedPolicy{},
		prev:           map[string]Problem{},
	}
}

// Build turns a snapshot into a mesh. It never fails: every problem in the
// input is recorded in Mesh.Problems and drops only the piece of input it
// concerns.
//
// A service whose instances are the same slice as in the previous build
// (the catalog shares unchanged slices between snapshots), while the set
// of meshed services stayed the same, is not parsed again: its instances,
// their problems and its hashes are reused (they are never modified after
// a build), so the cost of a change does not grow with the catalog.
func (b *Builder) Build(snap *catalog.Snapshot) *Mesh {
	b.mu.Lock()
	defer b.mu.Unlock()
	if m := b.build(snap, true); m != nil {
		return m
	}
	return b.build(snap, false)
}

// svcMemo is what one service's last build produced.
type svcMemo struct {
	raw []catalog.Instance // the catalog slice it was built from
	// skip: not meshed or not a valid name (problems say which).
	skip     bool
	unmeshed bool
	svc      Service // Name, Protocol, Instances, Upstreams
	problems Problems
	// policyKey identifies the policy the hashes were computed with.
	policyKey             string
	configHash, endpoints string
}

func sameSlice(a, b []catalog.Instance) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// build builds the mesh; with reuse it takes unchanged services from the
// memo and returns nil when it cannot (the set of meshed services changed,
// or an instance ID appears twice), so the caller builds everything anew.
func (b *Builder) build(snap *catalog.Snapshot, reuse bool) *Mesh {
	if reuse && b.memo == nil {
		return nil
	}
	m := &Mesh{
		Index:     snap.Index,
		SeenAt:    snap.SeenAt,
		Services:  map[string]*Service{},
		Instances: map[string]*Instance{},
		Policies:  map[string]PolicyStatus{},
	}
	bd := &build{m: m}
	names := snap.ServiceNames()
	memo := make(map[string]*svcMemo, len(snap.Services))
	if reuse {
		// Start from the previous build's instances (a map copy is far
		// cheaper than re-inserting each), minus those of services that
		// are parsed again below.
		m.Instances = maps.Clone(b.instances)
		for _, name := range names {
			if old := b.memo[name]; old != nil && !sameSlice(old.raw, snap.Services[name]) {
				for _, in := range old.svc.Instances {
					delete(m.Instances, in.ID)
				}
			}
		}
		for name, old := range b.memo {
			if _, ok := snap.Services[name]; !ok {
				for _, in := range old.svc.Instances {
					delete(m.Instances, in.ID)
				}
			}
		}
	}
	var meshedNames []string
	fresh := map[string]*build{}        // services parsed in this build
	rawUpstreams := map[string]string{} // instance ID → raw mesh_upstreams (fresh services)

	// Pass 1: instances and services, without the upstream graph (which
	// needs the full set of service names).
	for _, name := range names {
		insts := snap.Services[name]
		if old := b.memo[name]; reuse && old != nil && sameSlice(old.raw, insts) {
			memo[name] = old
			if old.unmeshed {
				m.Unmeshed = append(m.Unmeshed, name)
			}
			if old.skip {
				continue
			}
			svc := old.svc // a copy: routes and policies are set per build
			m.Services[name] = &svc
			meshedNames = append(meshedNames, name)
			continue
		}
		sb := &build{m: m}
		mm := &svcMemo{raw: insts}
		memo[name] = mm
		fresh[name] = sb
		if !meshed(insts) {
			m.Unmeshed = append(m.Unmeshed, name)
			mm.skip, mm.unmeshed = true, true
			continue
		}
		if !serviceNameRE.MatchString(name) {
			sb.problem(SeverityError, KindMeta, name, "", "Name",
				"service name %q is not a DNS label (lowercase letters, digits, '-'); it cannot be a cluster or host name, so it is left out of the mesh", truncate(name, 80))
			mm.skip = true
			continue
		}
		svc := &Service{Name: name}
		for _, ci := range insts {
			if !hasMeshMeta(ci.Meta) {
				sb.problem(SeverityWarning, KindMeta, name, ci.ID, "Meta",
					"instance has no mesh_* meta while other instances of %s do; it is left out of the mesh", name)
				continue
			}
			in, meta := sb.instance(ci)
			if _, dup := m.Instances[in.ID]; dup {
				if reuse {
					return nil
				}
				sb.problem(SeverityError, KindMeta, name, in.ID, "ID",
					"instance ID is registered twice (on two Consul nodes); the second registration is ignored")
				continue
			}
			svc.Instances = append(svc.Instances, in)
			m.Instances[in.ID] = in
			rawUpstreams[in.ID] = meta[MetaUpstreams]
		}
		if len(svc.Instances) == 0 {
			mm.skip = true
			continue
		}
		svc.Protocol = sb.serviceProtocol(svc)
		m.Services[name] = svc
		meshedNames = append(meshedNames, name)
	}
	if reuse && !slices.Equal(meshedNames, b.meshedNames) {
		return nil // upstream validity depends on the set of services
	}

	// Pass 2: upstream graph (fresh services) and public routes.
	for name, sb := range fresh {
		svc := m.Services[name]
		if svc == nil {
			continue
		}
		up := map[string]bool{}
		for _, in := range svc.Instances {
			in.Upstreams = sb.upstreams(in, rawUpstreams[in.ID])
			for _, u := range in.Upstreams {
				up[u] = true
			}
		}
		svc.Upstreams = sortedKeys(up)
	}
	for name, sb := range fresh {
		mm := memo[name]
		mm.problems = sb.problems
		if svc := m.Services[name]; svc != nil {
			mm.svc = *svc
		}
	}
	for _, name := range names {
		m.Problems = append(m.Problems, memo[name].problems...)
	}
	bd.routes()

	// Pass 3: policies.
	policyKeys := b.policies(bd, snap.Policies)

	for name, svc := range m.Services {
		mm := memo[name]
		key := policyKeys[name]
		if _, isFresh := fresh[name]; isFresh || mm.policyKey != key || mm.configHash == "" {
			mm.configHash, mm.endpoints = hashes(svc)
			mm.policyKey = key
		}
		svc.ConfigHash, svc.EndpointsHash = mm.configHash, mm.endpoints
	}
	m.Problems = append(m.Problems, bd.problems...)
	slices.SortFunc(m.Problems, func(a, b Problem) int { return strings.Compare(a.Key(), b.Key()) })
	b.memo, b.meshedNames, b.instances = memo, meshedNames, m.Instances
	b.report(m.Problems)
	return m
}

// build holds one Build's (or one service's) working state.
type build struct {
	m        *Mesh
	problems Problems
}

func (bd *build) problem(sev Severity, kind, svc, inst, field, format string, args ...any) {
	bd.problems = append(bd.problems, Problem{
		Severity: sev, Kind: kind, Service: svc, Instance: inst, Field: field,
		Message: fmt.Sprintf(format, args...),
	})
}

func meshed(insts []catalog.Instance) bool {
	return slices.ContainsFunc(insts, func(i catalog.Instance) bool { return hasMeshMeta(i.Meta) })
}

func hasMeshMeta(meta map[string]string) bool {
	for k := range meta {
		if strings.HasPrefix(k, "mesh_") {
			return true
		}
	}
	return false
}

// instance checks one registration; it returns the meta it accepted
// (oversized values removed).
func (bd *build) instance(ci catalog.Instance) (*Instance, map[string]string) {
	in := &Instance{
		ID: ci.ID, Service: ci.Service, Address: ci.Address, Port: ci.Port,
		Status: ci.Status, CreateIndex: ci.CreateIndex, AddressOK: true,
	}
	for k, v := range ci.Meta {
		if strings.HasPrefix(k, "mesh_") && len(v) > maxMetaValueBytes {
			bd.problem(SeverityError, KindMeta, ci.Service, ci.ID, k, "value is %d bytes, the limit is %d; ignored", len(v), maxMetaValueBytes)
			ci.Meta = withoutKey(ci.Meta, k)
		}
	}
	if ci.Address == "" {
		bd.problem(SeverityError, KindMeta, ci.Service, ci.ID, "Address",
			"registration has no address (neither service nor node address); the instance receives no traffic")
		in.AddressOK = false
	} else if _, err := netip.ParseAddr(ci.Address); err != nil {
		bd.problem(SeverityError, KindMeta, ci.Service, ci.ID, "Address",
			"%q is not an IP address; Envoy load assignments need one, so the instance receives no traffic (register the IP)", truncate(ci.Address, 80))
		in.AddressOK = false
	}
	if ci.Port <= 0 || ci.Port > 65535 {
		bd.problem(SeverityError, KindPort, ci.Service, ci.ID, "Port",
			"port %d is not a TCP port; the instance receives no traffic", ci.Port)
		in.AddressOK = false
	}

	switch raw, ok := ci.Meta[MetaAppPort]; {
	case !ok:
		bd.problem(SeverityError, KindPort, ci.Service, ci.ID, MetaAppPort,
			"missing; the sidecar of this instance gets no configuration (inbound needs the app port)")
	default:
		p, err := strconv.Atoi(strings.TrimSpace(raw))
		if err != nil || p <= 0 || p > 65535 {
			bd.problem(SeverityError, KindPort, ci.Service, ci.ID, MetaAppPort,
				"%q is not a TCP port (1-65535); the sidecar of this instance gets no configuration", truncate(raw, 40))
		} else {
			in.AppPort = p
		}
	}

	in.Protocol = HTTP1
	switch raw, ok := ci.Meta[MetaProtocol]; {
	case !ok:
		bd.problem(SeverityWarning, KindMeta, ci.Service, ci.ID, MetaProtocol, "missing; assuming %q", HTTP1)
	default:
		switch strings.ToLower(strings.TrimSpace(raw)) {
		case "http", "http1", "http/1.1":
			in.Protocol = HTTP1
		case "http2", "h2", "grpc":
			in.Protocol = HTTP2
		default:
			bd.problem(SeverityError, KindMeta, ci.Service, ci.ID, MetaProtocol,
				"%q is not a protocol (http, http2, grpc); assuming %q", truncate(raw, 40), HTTP1)
		}
	}

	in.Version = bd.version(ci)
	in.PublicPrefixes = bd.prefixes(ci)
	return in, ci.Meta
}

func withoutKey(m map[string]string, key string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		if k != key {
			out[k] = v
		}
	}
	return out
}

// version takes meta "version", else a "v<N>" tag.
func (bd *build) version(ci catalog.Instance) string {
	if v, ok := ci.Meta[MetaVersion]; ok {
		v = strings.TrimSpace(v)
		if versionRE.MatchString(v) {
			return v
		}
		bd.problem(SeverityWarning, KindMeta, ci.Service, ci.ID, MetaVersion,
			"%q is not a version name (letters, digits, '.', '_', '-'); the instance is treated as unversioned", truncate(v, 40))
		return ""
	}
	for _, t := range ci.Tags {
		if versionTagRE.MatchString(t) {
			return t
		}
	}
	return ""
}

func (bd *build) prefixes(ci catalog.Instance) []string {
	raw, ok := ci.Meta[MetaPublicPrefixes]
	if !ok || strings.TrimSpace(raw) == "" {
		return nil
	}
	var out []string
	parts := strings.Split(raw, ",")
	if len(parts) > maxPrefixes {
		bd.problem(SeverityError, KindPrefix, ci.Service, ci.ID, MetaPublicPrefixes,
			"%d prefixes, at most %d; only the first %d are used", len(parts), maxPrefixes, maxPrefixes)
		parts = parts[:maxPrefixes]
	}
	for _, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if why := badPrefix(p); why != "" {
			bd.problem(SeverityError, KindPrefix, ci.Service, ci.ID, MetaPublicPrefixes,
				"prefix %q %s; it is not routed", truncate(p, 60), why)
			continue
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// badPrefix says what is wrong with a public prefix, or "" when nothing is.
func badPrefix(p string) string {
	switch {
	case len(p) > maxPrefixLen:
		return fmt.Sprintf("is longer than %d bytes", maxPrefixLen)
	case !strings.HasPrefix(p, "/"):
		return "does not start with '/'"
	case p == "/":
		return "is the root; a service cannot own every path"
	case strings.HasSuffix(p, "/"):
		return "ends with '/'; write it without the trailing slash"
	case strings.Contains(p, "//"):
		return "has an empty path segment"
	}
	for _, seg := range strings.Split(p[1:], "/") {
		if seg == "." || seg == ".." {
			return "has a dot segment"
		}
	}
	if !prefixRE.MatchString(p) {
		return "has characters that are not allowed in a path (spaces, '?', '#', '%', quotes, non-ASCII)"
	}
	return ""
}

// serviceProtocol is the protocol all instances agree on. Disagreement is
// an error; the service then falls back to HTTP/1.1, the protocol every
// Meshop app serves.
func (bd *build) serviceProtocol(svc *Service) Protocol {
	p := svc.Instances[0].Protocol
	for _, in := range svc.Instances[1:] {
		if in.Protocol != p {
			bd.problem(SeverityError, KindMeta, svc.Name, "", MetaProtocol,
				"instances disagree on mesh_protocol (%s says %q, %s says %q); using %q",
				svc.Instances[0].ID, p, in.ID, in.Protocol, HTTP1)
			return HTTP1
		}
	}
	return p
}

func (bd *build) upstreams(in *Instance, raw string) []string {
	if strings.TrimSpace(raw) == "" {
		return nil
	}
	parts := strings.Split(raw, ",")
	if len(parts) > maxUpstreams {
		bd.problem(SeverityError, KindUpstream, in.Service, in.ID, MetaUpstreams,
			"%d upstreams, at most %d; only the first %d are used", len(parts), maxUpstreams, maxUpstreams)
		parts = parts[:maxUpstreams]
	}
	var out []string
	for _, u := range parts {
		u = strings.TrimSpace(u)
		switch {
		case u == "":
			continue
		case !serviceNameRE.MatchString(u):
			bd.problem(SeverityError, KindUpstream, in.Service, in.ID, MetaUpstreams,
				"%q is not a service name; ignored", truncate(u, 60))
		case bd.m.Services[u] == nil:
			bd.problem(SeverityError, KindUpstream, in.Service, in.ID, MetaUpstreams,
				"upstream %q is not a meshed service in the catalog; no route to it until it registers", u)
		case !slices.Contains(out, u):
			out = append(out, u)
		}
	}
	slices.Sort(out)
	return out
}

// routes resolves public prefixes. A prefix claimed by two services
// belongs to the one that registered it first (lowest Consul CreateIndex
// of a claiming instance, then name): a newcomer cannot take a route away
// from a running service.
func (bd *build) routes() {
	type claim struct {
		svc   string
		index uint64
	}
	claims := map[string][]claim{}
	// Map order is fine: each prefix's claims are sorted below.
	for name, svc := range bd.m.Services {
		first := map[string]uint64{}
		for _, in := range svc.Instances {
			for _, p := range in.PublicPrefixes {
				if idx, ok := first[p]; !ok || in.CreateIndex < idx {
					first[p] = in.CreateIndex
				}
			}
		}
		for p, idx := range first {
			claims[p] = append(claims[p], claim{name, idx})
		}
	}
	for p, cs := range claims {
		slices.SortFunc(cs, func(a, b claim) int {
			return cmp.Or(cmp.Compare(a.index, b.index), strings.Compare(a.svc, b.svc))
		})
		owner := cs[0].svc
		for _, c := range cs[1:] {
			bd.problem(SeverityError, KindPrefix, c.svc, "", MetaPublicPrefixes,
				"prefix %q is also claimed by %s, which registered it first; it stays with %s and is not routed to %s", p, owner, owner, c.svc)
		}
		bd.m.Routes = append(bd.m.Routes, PublicRoute{Prefix: p, Service: owner})
		s := bd.m.Services[owner]
		s.PublicPrefixes = append(s.PublicPrefixes, p)
	}
	for _, s := range bd.m.Services {
		slices.Sort(s.PublicPrefixes)
	}
	// Longest prefix first so that /orders/export wins over /orders
	// whatever the route matcher; ties by name for stable output.
	slices.SortFunc(bd.m.Routes, func(a, b PublicRoute) int {
		return cmp.Or(cmp.Compare(len(b.Prefix), len(a.Prefix)), strings.Compare(a.Prefix, b.Prefix))
	})
}

// policies applies KV policies, keeping each service's last good policy
// when its current value is rejected.
//
// It returns, per service with a KV key, what identifies the policy in
// force (the raw document it was parsed from); "" means the default.
func (b *Builder) policies(bd *build, kv map[string][]byte) map[string]string {
	keysInForce := map[string]string{}
	seen := map[string]bool{}
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, key := range keys {
		raw := kv[key]
		if key == "" {
			continue // the folder itself, as the Consul UI creates it
		}
		if !serviceNameRE.MatchString(key) {
			bd.problem(SeverityError, KindPolicy, "", "", catalog.PolicyPrefix+truncate(key, 80),
				"policy key does not name a service (want %s<service>); ignored", catalog.PolicyPrefix)
			continue
		}
		seen[key] = true
		last, hadLast := b.lastGood[key]
		if hadLast && bytes.Equal(last.raw, raw) {
			b.apply(bd, key, PolicyStatus{Source: PolicyKV}, last.policy)
			keysInForce[key] = "kv:" + string(raw)
			continue
		}
		p, err := ParsePolicy(raw, b.maxPolicyBytes)
		if err == nil {
			b.lastGood[key] = parsedPolicy{raw: bytes.Clone(raw), policy: p}
			b.apply(bd, key, PolicyStatus{Source: PolicyKV}, p)
			keysInForce[key] = "kv:" + string(raw)
			continue
		}
		reason := strings.ReplaceAll(err.Error(), "\n", "; ")
		st := PolicyStatus{Source: PolicyDefault, Rejected: reason}
		keep := "the default policy stays in force"
		pol := DefaultPolicy()
		if hadLast {
			st.Source, pol = PolicyLastGood, last.policy
			keep = "the last good policy stays in force"
			keysInForce[key] = "kv:" + string(last.raw)
		}
		bd.problem(SeverityError, KindPolicy, key, "", catalog.PolicyPrefix+key, "rejected: %s; %s", reason, keep)
		b.apply(bd, key, st, pol)
	}
	// A deleted key means "back to defaults", deliberately.
	for svc := range b.lastGood {
		if !seen[svc] {
			delete(b.lastGood, svc)
		}
	}
	for _, svc := range bd.m.Services {
		if _, ok := bd.m.Policies[svc.Name]; !ok {
			svc.Policy = DefaultPolicy()
		}
	}
	for _, svc := range bd.m.Services {
		for i, s := range svc.Policy.Split {
			if !slices.Contains(svc.Versions(), s.Version) {
				bd.problem(SeverityWarning, KindPolicy, svc.Name, "", fmt.Sprintf("traffic_split[%d]", i),
					"version %q has no registered instance; its %d%% of the traffic fails until one registers", s.Version, s.Weight)
			}
		}
	}
	return keysInForce
}

func (b *Builder) apply(bd *build, svc string, st PolicyStatus, p Policy) {
	bd.m.Policies[svc] = st
	if s := bd.m.Services[svc]; s != nil {
		s.Policy = p
	} else if st.Rejected == "" {
		bd.problem(SeverityWarning, KindPolicy, svc, "", catalog.PolicyPrefix+svc,
			"policy for a service that is not in the mesh (yet); it applies when the service registers")
	}
}

// report logs problems that appeared or went away since the last build.
func (b *Builder) report(ps Problems) {
	cur := make(map[string]Problem, len(ps))
	for _, p := range ps {
		cur[p.Key()] = p
		if _, ok := b.prev[p.Key()]; ok {
			continue
		}
		level := slog.LevelWarn
		if p.Severity == SeverityError {
			level = slog.LevelError
		}
		b.log.Log(context.Background(), level, "mesh input problem", "kind", p.Kind, "severity", p.Severity,
			"service", p.Service, "instance", p.Instance, "field", p.Field, "err", p.Message)
		if b.onProblem != nil {
			b.onProblem(p)
		}
	}
	for k, p := range b.prev {
		if _, ok := cur[k]; !ok {
			b.log.Info("mesh input problem resolved", "kind", p.Kind, "service", p.Service,
				"instance", p.Instance, "field", p.Field, "was", p.Message)
		}
	}
	b.prev = cur
}

// hashes fingerprints what callers' resources are built from.
func hashes(s *Service) (config, endpoints string) {
	pol, _ := json.Marshal(s.Policy)
	c := sha256.New()
	fmt.Fprintf(c, "%s\x00%s\x00%s", s.Name, s.Protocol, pol)
	e := sha256.New()
	for _, in := range s.Endpoints() {
		fmt.Fprintf(e, "%s\x00%s\x00%d\x00%s\x00", in.ID, in.Address, in.Port, in.Version)
	}
	return hex.EncodeToString(c.Sum(nil)[:12]), hex.EncodeToString(e.Sum(nil)[:12])
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
