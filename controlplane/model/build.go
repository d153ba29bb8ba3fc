package model

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/internal/intern"
	"github.com/meshop/meshop/controlplane/internal/pmap"
)

// Builder turns catalog snapshots into meshes, each from the previous
// one: only the services and policy keys that changed since the previous
// snapshot (pmap.Diff of the two) are checked again, and everything else
// (Service and Instance structs, problems, routes) is the previous mesh's,
// so the cost of a change does not grow with the mesh.
//
// It remembers, per policy key, the last good policy (so a rejected KV
// value leaves the previous policy in force) and the problems of the
// previous build (so each problem is logged and counted when it appears
// and when it is resolved, not on every build). Build is safe to call
// from one goroutine at a time.
//
// The last good policies can outlive the process: SeedLastGood restores
// them before the first build, and BuilderOptions.OnLastGood hears of
// every change to them (see package policystate).
type Builder struct {
	log            *slog.Logger
	maxPolicyBytes int
	onProblem      func(Problem)
	onLastGood     func(key string, raw []byte)

	mu       sync.Mutex
	lastGood map[string]parsedPolicy // policy key → last accepted KV policy
	last     state                   // what the previous build left
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
	// OnLastGood is called, during Build, each time the last good policy
	// of a key changes: with the raw value just accepted, or with nil when
	// the key was deleted (back to defaults). Not for a value accepted
	// again, nor for one rejected. It must not block (it runs under the
	// builder's lock, on the push path) nor modify raw. It may be nil.
	OnLastGood func(key string, raw []byte)
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
		onLastGood:     o.OnLastGood,
		lastGood:       map[string]parsedPolicy{},
	}
}

// SeedLastGood restores last good policies kept from an earlier run
// (policy key → raw value), so that a value rejected at the first build
// leaves the restored policy in force (PolicyLastGood) rather than the
// default. Call it before the first Build. A value that no longer parses
// (a stricter parser, a smaller MaxPolicyBytes) or whose key names no
// service is not restored: it is returned with the reason, for the caller
// to log. A key that already has a last good policy keeps it. A restored
// key that is not in the first snapshot is forgotten at that build (and
// OnLastGood hears of it): a deleted key means back to defaults, even
// when it was deleted while the control plane was down. OnLastGood is not
// called for what is restored.
func (b *Builder) SeedLastGood(stored map[string][]byte) (ignored map[string]error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ignore := func(key string, err error) {
		if ignored == nil {
			ignored = map[string]error{}
		}
		ignored[key] = err
	}
	for _, key := range slices.Sorted(maps.Keys(stored)) {
		raw := stored[key]
		if !serviceNameRE.MatchString(key) {
			ignore(key, fmt.Errorf("the key does not name a service"))
			continue
		}
		if _, ok := b.lastGood[key]; ok {
			continue
		}
		pol, err := ParsePolicy(raw, b.maxPolicyBytes)
		if err != nil {
			ignore(key, fmt.Errorf("%s", strings.ReplaceAll(err.Error(), "\n", "; ")))
			continue
		}
		b.lastGood[key] = parsedPolicy{raw: bytes.Clone(raw), policy: pol}
	}
	return ignored
}

// forget drops the last good policy of a key (back to defaults).
func (b *Builder) forget(key string) {
	if _, ok := b.lastGood[key]; !ok {
		return
	}
	delete(b.lastGood, key)
	if b.onLastGood != nil {
		b.onLastGood(key, nil)
	}
}

// Build turns a snapshot into a mesh. It never fails: every problem in the
// input is recorded in Mesh.Problems and drops only the piece of input it
// concerns.
//
// It builds on the previous mesh when it can: a service whose instances
// are the same slice as in the previous snapshot (the catalog shares
// unchanged slices between snapshots) is not looked at. When a service
// appears, goes, or joins or leaves the mesh (which services are valid
// upstreams depends on the set), or while an instance ID is registered
// twice, it builds from nothing, at a cost that grows with the mesh.
func (b *Builder) Build(snap *catalog.Snapshot) *Mesh {
	b.mu.Lock()
	defer b.mu.Unlock()
	next, ok := b.build(b.last, snap, false)
	if !ok {
		next, _ = b.build(b.last, snap, true)
	}
	b.report(b.last.problems, next.problems)
	b.last = next
	return next.mesh
}

// state is what a build leaves for the next one. Its maps are persistent,
// so a build that gives up half-way leaves it as it was.
type state struct {
	mesh *Mesh // nil before the first build
	// services and policies are those of the snapshot mesh was built
	// from.
	services   pmap.Map[[]catalog.Instance]
	policies   pmap.Map[[]byte]
	intentions pmap.Map[[]byte]
	ca         catalog.CA
	// inForce is, per valid policy key, the policy in force and why.
	inForce pmap.Map[policyInForce]
	// claims are, per public prefix, the services claiming it, its owner
	// first.
	claims pmap.Map[[]claim]
	// problems are the problems found, by the piece of input they were
	// found in (see owner).
	problems pmap.Map[Problems]
	// dups: an instance ID is registered by two services. Which one keeps
	// it depends on every service, so the next build starts from nothing.
	dups bool
}

type policyInForce struct {
	status PolicyStatus
	policy Policy
}

// claim is a service's claim on a public prefix: the lowest CreateIndex
// among its instances declaring it.
type claim struct {
	svc   string
	index uint64
}

// Problem owners: the kinds of input a problem is found in.
const (
	ownerService = "service" // a service's registrations
	ownerSplit   = "split"   // a service's traffic split against its versions
	ownerPrefix  = "prefix"  // the claims on a public prefix
	ownerPolicy  = "policy"  // a policy key
	// ownerIntentions: a destination's service-intentions entry
	ownerIntentions = "intentions"
	ownerCA         = "ca" // the Connect CA
)

func owner(kind, name string) string { return kind + "/" + name }

// build makes the next state from last and snap. It reports false, having
// changed nothing, when last cannot be built on (see Build). fromNothing
// ignores last but for the policies it saw (which tell the keys deleted
// since); it always succeeds.
func (b *Builder) build(last state, snap *catalog.Snapshot, fromNothing bool) (state, bool) {
	switch {
	case fromNothing:
		last = state{policies: last.policies}
	case last.mesh == nil || last.dups:
		return state{}, false
	}
	p := newPass(b, last, snap)
	if !p.parse(slices.Sorted(pmap.Diff(last.services, snap.Services, catalog.SameInstances))) {
		return state{}, false
	}
	p.upstreams()
	p.routes()
	p.policies()
	p.intentions()
	p.ca()
	p.keepUnchangedInstances()
	p.finish()
	return p.st, true
}

// keepUnchangedInstances puts the previous mesh's Instance back wherever
// the rebuilt one is equal to it, so that a change to one instance
// replaces that instance only: translate compares instances by identity
// (a health flip must not look like a change of every sibling).
func (p *pass) keepUnchangedInstances() {
	if p.prev == nil {
		return
	}
	m := p.st.mesh
	for _, r := range p.parsed {
		if r.svc == nil {
			continue
		}
		for i, in := range r.svc.Instances {
			if was := p.prev.Instance(in.ID); was != nil && was != in && reflect.DeepEqual(was, in) {
				r.svc.Instances[i] = was
				m.Instances = m.Instances.Set(in.ID, was)
			}
		}
	}
}

// pass is one build.
type pass struct {
	b    *Builder
	snap *catalog.Snapshot
	prev *Mesh // the previous mesh; nil when building from nothing
	last state
	st   state // the next state; st.mesh starts as a copy of prev
	// parsed are the services that changed (every service when building
	// from nothing).
	parsed map[string]*parsed
	// touched are the meshed services whose Service is made anew.
	touched map[string]bool
	// routesChanged: a public prefix appeared, went, or changed owner.
	routesChanged bool
	// notHonoured shares the services' GRPCNotHonoured lists: most
	// services have the same policy.
	notHonoured *intern.Set[[]string]
}

func newPass(b *Builder, last state, snap *catalog.Snapshot) *pass {
	m := &Mesh{Index: snap.Index, SeenAt: snap.SeenAt, Policies: map[string]PolicyStatus{}}
	if prev := last.mesh; prev != nil {
		m.Services, m.Instances, m.callers = prev.Services, prev.Instances, prev.callers
		m.Routes, m.Unmeshed, m.Policies, m.Problems = prev.Routes, prev.Unmeshed, prev.Policies, prev.Problems
		m.Intentions, m.TrustDomain, m.RootPEMs = prev.Intentions, prev.TrustDomain, prev.RootPEMs
	}
	st := last
	st.mesh, st.services, st.policies, st.intentions, st.ca = m, snap.Services, snap.Policies, snap.Intentions, snap.CA
	return &pass{b: b, snap: snap, prev: last.mesh, last: last, st: st,
		parsed: map[string]*parsed{}, touched: map[string]bool{}, notHonoured: intern.NewSet(slices.Equal[[]string])}
}

// prevService is the previous mesh's service of that name, or nil.
func (p *pass) prevService(name string) *Service {
	if p.prev == nil {
		return nil
	}
	return p.prev.Service(name)
}

// prevClass is what the previous build made of a service.
func (p *pass) prevClass(name string) class {
	if p.prevService(name) != nil {
		return classMeshed
	}
	if _, ok := slices.BinarySearch(p.prev.Unmeshed, name); ok {
		return classUnmeshed
	}
	if _, ok := p.last.services.Get(name); ok {
		return classSkipped
	}
	return classAbsent
}

// isMeshed reports whether a service is in the new mesh.
func (p *pass) isMeshed(name string) bool {
	if r, ok := p.parsed[name]; ok {
		return r.class == classMeshed
	}
	return p.prevService(name) != nil
}

// touch marks a meshed service's Service to be made anew.
func (p *pass) touch(name string) {
	if p.isMeshed(name) {
		p.touched[name] = true
	}
}

func (p *pass) setProblems(owner string, ps Problems) {
	if len(ps) == 0 {
		p.st.problems = p.st.problems.Delete(owner)
		return
	}
	p.st.problems = p.st.problems.Set(owner, ps)
}

// parse checks the services that changed, in order (the first to
// register an instance ID keeps it). It reports false when the previous
// mesh cannot be built on: a service's class changed, or an instance ID
// is taken twice (also when it moves between two services that changed:
// rare enough).
func (p *pass) parse(names []string) bool {
	m := p.st.mesh
	for _, name := range names {
		old := p.prevService(name)
		own := map[string]bool{} // the IDs it had: not taken by another
		if old != nil {
			for _, in := range old.Instances {
				own[in.ID] = true
			}
		}
		taken := func(id string) bool {
			_, ok := m.Instances.Get(id)
			return ok && !own[id]
		}
		r := &parsed{class: classAbsent}
		if insts, ok := p.snap.Services.Get(name); ok {
			r = parseService(name, insts, taken)
		}
		if p.prev != nil && (r.dups || r.class != p.prevClass(name)) {
			return false
		}
		p.parsed[name] = r
		p.st.dups = p.st.dups || r.dups
		p.replaceInstances(old, r)
		if p.prev == nil && r.class == classUnmeshed {
			m.Unmeshed = append(m.Unmeshed, name)
		}
	}
	return true
}

// replaceInstances replaces a service's old instances with those of r in
// Mesh.Instances.
func (p *pass) replaceInstances(old *Service, r *parsed) {
	m := p.st.mesh
	if old != nil {
		for _, in := range old.Instances {
			if _, still := r.raw[in.ID]; !still {
				m.Instances = m.Instances.Delete(in.ID)
			}
		}
	}
	if r.svc != nil {
		for _, in := range r.svc.Instances {
			m.Instances = m.Instances.Set(in.ID, in)
		}
	}
}

// upstreams checks the upstreams of the services that changed against
// the meshed services, and keeps Mesh.Callers up to date.
func (p *pass) upstreams() {
	for name, r := range p.parsed {
		if r.class == classMeshed {
			// Instances usually declare the same upstreams: they share
			// one slice, and so does the service when they all agree.
			lists := intern.NewSet(slices.Equal[[]string])
			up := map[string]bool{}
			for _, in := range r.svc.Instances {
				in.Upstreams = lists.Get(r.upstreams(in, r.raw[in.ID], p.isMeshed))
				for _, u := range in.Upstreams {
					up[u] = true
				}
			}
			r.svc.Upstreams = r.svc.Instances[0].Upstreams
			if lists.Len() > 1 {
				r.svc.Upstreams = slices.Sorted(maps.Keys(up))
			}
			var old []string
			if s := p.prevService(name); s != nil {
				old = s.Upstreams
			}
			p.updateCallers(name, old, r.svc.Upstreams)
		}
		p.setProblems(owner(ownerService, name), r.problems)
	}
}

// updateCallers records that caller's upstreams went from old to cur.
func (p *pass) updateCallers(caller string, old, cur []string) {
	m := p.st.mesh
	for _, u := range old {
		if !slices.Contains(cur, u) {
			cs, _ := m.callers.Get(u)
			cs = slices.DeleteFunc(slices.Clone(cs), func(c string) bool { return c == caller })
			if len(cs) == 0 {
				m.callers = m.callers.Delete(u)
			} else {
				m.callers = m.callers.Set(u, cs)
			}
		}
	}
	for _, u := range cur {
		if !slices.Contains(old, u) {
			cs, _ := m.callers.Get(u)
			i, _ := slices.BinarySearch(cs, caller)
			m.callers = m.callers.Set(u, slices.Insert(slices.Clip(cs), i, caller))
		}
	}
}

// routes resolves the public prefixes of the services that changed. A
// prefix claimed by two services belongs to the one that registered it
// first (lowest Consul CreateIndex of a claiming instance, then name): a
// newcomer cannot take a route away from a running service.
func (p *pass) routes() {
	for name, r := range p.parsed {
		var old, cur map[string]uint64
		if s := p.prevService(name); s != nil {
			old = claimsOf(s)
		}
		if r.svc != nil {
			cur = claimsOf(r.svc)
		}
		for prefix := range old {
			if _, still := cur[prefix]; !still {
				p.claim(prefix, name, cur)
			}
		}
		for prefix := range cur {
			p.claim(prefix, name, cur)
		}
	}
	if p.prev == nil || p.routesChanged {
		p.st.mesh.Routes = p.routeList()
	}
}

// claimsOf is, per public prefix a service's instances declare, the
// lowest CreateIndex among them.
func claimsOf(s *Service) map[string]uint64 {
	first := map[string]uint64{}
	for _, in := range s.Instances {
		for _, prefix := range in.PublicPrefixes {
			if idx, ok := first[prefix]; !ok || in.CreateIndex < idx {
				first[prefix] = in.CreateIndex
			}
		}
	}
	return first
}

// claim replaces svc's claim on prefix with the one in cur (none when cur
// has no such prefix).
func (p *pass) claim(prefix, svc string, cur map[string]uint64) {
	cs, _ := p.st.claims.Get(prefix)
	before := ownerOf(cs)
	cs = slices.DeleteFunc(slices.Clone(cs), func(c claim) bool { return c.svc == svc })
	if idx, ok := cur[prefix]; ok {
		cs = append(cs, claim{svc, idx})
		slices.SortFunc(cs, func(a, b claim) int {
			return cmp.Or(cmp.Compare(a.index, b.index), strings.Compare(a.svc, b.svc))
		})
	}
	if len(cs) == 0 {
		p.st.claims = p.st.claims.Delete(prefix)
	} else {
		p.st.claims = p.st.claims.Set(prefix, cs)
	}
	if after := ownerOf(cs); after != before {
		p.routesChanged = true
		p.touch(before)
		p.touch(after)
	}
	c := checker{}
	for _, x := range cs[min(1, len(cs)):] {
		c.problem(SeverityError, KindPrefix, x.svc, "", MetaPublicPrefixes,
			"prefix %q is also claimed by %s, which registered it first; it stays with %s and is not routed to %s", prefix, cs[0].svc, cs[0].svc, x.svc)
	}
	p.setProblems(owner(ownerPrefix, prefix), c.problems)
}

func ownerOf(cs []claim) string {
	if len(cs) == 0 {
		return ""
	}
	return cs[0].svc
}

// routeList is every public route, longest prefix first so that
// /orders/export wins over /orders whatever the route matcher; ties by
// prefix for stable output.
func (p *pass) routeList() []PublicRoute {
	var out []PublicRoute
	for prefix, cs := range p.st.claims.All() {
		out = append(out, PublicRoute{Prefix: prefix, Service: cs[0].svc})
	}
	slices.SortFunc(out, func(a, b PublicRoute) int {
		return cmp.Or(cmp.Compare(len(b.Prefix), len(a.Prefix)), strings.Compare(a.Prefix, b.Prefix))
	})
	return out
}

// owned is the prefixes a service owns, sorted.
func (p *pass) owned(s *Service) []string {
	var out []string
	for prefix := range claimsOf(s) {
		if cs, _ := p.st.claims.Get(prefix); ownerOf(cs) == s.Name {
			out = append(out, prefix)
		}
	}
	slices.Sort(out)
	return out
}

// policies evaluates the policy keys whose value changed; when building
// from nothing, every key (whether a key names a meshed service may have
// changed), and every key with a last good policy (one restored by
// SeedLastGood may be gone from KV). A policy change costs O(policies):
// Mesh.Policies is made anew.
func (p *pass) policies() {
	keys := slices.Collect(pmap.Diff(p.last.policies, p.snap.Policies, bytes.Equal))
	if p.prev == nil {
		keys = append(keys, slices.Collect(p.snap.Policies.Keys())...)
		keys = append(keys, slices.Collect(maps.Keys(p.b.lastGood))...)
	}
	if len(keys) == 0 {
		return
	}
	slices.Sort(keys)
	for _, key := range slices.Compact(keys) {
		p.policy(key)
	}
	m := p.st.mesh
	m.Policies = make(map[string]PolicyStatus, p.st.inForce.Len())
	for key, f := range p.st.inForce.All() {
		m.Policies[key] = f.status
	}
}

// policy evaluates one policy key, keeping the last good policy when the
// current value is rejected.
func (p *pass) policy(key string) {
	b := p.b
	p.touch(key)
	p.st.inForce = p.st.inForce.Delete(key)
	raw, present := p.snap.Policies.Get(key)
	c := checker{}
	switch {
	case !present:
		b.forget(key) // a deleted key means "back to defaults", deliberately
	case key == "":
		// the folder itself, as the Consul UI creates it
	case !serviceNameRE.MatchString(key):
		c.problem(SeverityError, KindPolicy, "", "", catalog.PolicyPrefix+truncate(key, 80),
			"policy key does not name a service (want %s<service>); ignored", catalog.PolicyPrefix)
	default:
		f := b.evaluate(&c, key, raw)
		p.st.inForce = p.st.inForce.Set(key, f)
		if !p.isMeshed(key) && f.status.Rejected == "" {
			c.problem(SeverityWarning, KindPolicy, key, "", catalog.PolicyPrefix+key,
				"policy for a service that is not in the mesh (yet); it applies when the service registers")
		}
	}
	p.setProblems(owner(ownerPolicy, key), c.problems)
}

// evaluate decides which policy a key's value puts in force.
func (b *Builder) evaluate(c *checker, key string, raw []byte) policyInForce {
	last, hadLast := b.lastGood[key]
	if hadLast && bytes.Equal(last.raw, raw) {
		return policyInForce{PolicyStatus{Source: PolicyKV}, last.policy}
	}
	pol, err := ParsePolicy(raw, b.maxPolicyBytes)
	if err == nil {
		b.lastGood[key] = parsedPolicy{raw: bytes.Clone(raw), policy: pol}
		if b.onLastGood != nil {
			b.onLastGood(key, b.lastGood[key].raw)
		}
		return policyInForce{PolicyStatus{Source: PolicyKV}, pol}
	}
	reason := strings.ReplaceAll(err.Error(), "\n", "; ")
	f := policyInForce{PolicyStatus{Source: PolicyDefault, Rejected: reason}, DefaultPolicy()}
	keep := "the default policy stays in force"
	if hadLast {
		f.status.Source, f.policy = PolicyLastGood, last.policy
		keep = "the last good policy stays in force"
	}
	c.problem(SeverityError, KindPolicy, key, "", catalog.PolicyPrefix+key, "rejected: %s; %s", reason, keep)
	return f
}

// intentions parses the service-intentions entries that changed (every
// one when building from nothing); the others keep their pointers.
func (p *pass) intentions() {
	m := p.st.mesh
	for dest := range pmap.Diff(p.last.intentions, p.snap.Intentions, bytes.Equal) {
		c := checker{}
		raw, ok := p.snap.Intentions.Get(dest)
		var in *Intentions
		if ok {
			in = parseIntentions(&c, dest, raw)
		}
		if in == nil {
			m.Intentions = m.Intentions.Delete(dest)
		} else {
			m.Intentions = m.Intentions.Set(dest, in)
		}
		p.setProblems(owner(ownerIntentions, dest), c.problems)
	}
}

// trustDomainRE is a SPIFFE trust domain as Consul makes them (lower
// case DNS labels): it goes into URIs and patterns as it is.
var trustDomainRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$`)

// ca takes the Connect CA's trust domain and roots when they changed.
func (p *pass) ca() {
	if p.prev != nil && p.last.ca.Equal(p.snap.CA) {
		return
	}
	m, ca := p.st.mesh, p.snap.CA
	m.TrustDomain, m.RootPEMs = ca.TrustDomain, ca.RootPEMs
	c := checker{}
	if ca.TrustDomain != "" && !trustDomainRE.MatchString(ca.TrustDomain) {
		c.problem(SeverityError, KindCA, "", "", "connect/ca/roots.TrustDomain",
			"trust domain %q is not a DNS name; mutual TLS stays off", truncate(ca.TrustDomain, 80))
		m.TrustDomain = ""
	}
	p.setProblems(ownerCA, c.problems)
}

// policyFor is the policy in force for a service.
func (p *pass) policyFor(name string) Policy {
	if f, ok := p.st.inForce.Get(name); ok {
		return f.policy
	}
	return DefaultPolicy()
}

// finish makes anew the Service of every meshed service that changed, or
// whose public prefixes or policy did, and the problem list when a
// problem appeared or went.
func (p *pass) finish() {
	m := p.st.mesh
	for name, r := range p.parsed {
		if r.class == classMeshed {
			p.touched[name] = true
		}
	}
	for name := range p.touched {
		base := p.prevService(name)
		if r, ok := p.parsed[name]; ok {
			base = r.svc
		}
		svc := *base // the previous mesh's Service is never modified
		svc.PublicPrefixes = p.owned(&svc)
		svc.Policy = p.policyFor(name)
		svc.GRPCNotHonoured = p.notHonoured.Get(svc.Policy.NotHonouredByGRPC())
		p.setProblems(owner(ownerSplit, name), splitProblems(&svc))
		m.Services = m.Services.Set(name, &svc)
	}
	if p.prev == nil || !pmap.Equal(p.last.problems, p.st.problems, slices.Equal) {
		m.Problems = nil
		for _, ps := range p.st.problems.All() {
			m.Problems = append(m.Problems, ps...)
		}
		sortProblems(m.Problems)
	}
}

// splitProblems warns about split versions without an instance.
func splitProblems(svc *Service) Problems {
	c := checker{}
	versions := svc.Versions()
	for i, s := range svc.Policy.Split {
		if !slices.Contains(versions, s.Version) {
			c.problem(SeverityWarning, KindPolicy, svc.Name, "", fmt.Sprintf("traffic_split[%d]", i),
				"version %q has no registered instance; its %d%% of the traffic fails until one registers", s.Version, s.Weight)
		}
	}
	return c.problems
}

func sortProblems(ps Problems) {
	slices.SortFunc(ps, func(a, b Problem) int { return strings.Compare(a.Key(), b.Key()) })
}

// report logs the problems that appeared or went away since the previous
// build: only those of the owners whose problems changed are compared.
func (b *Builder) report(old, cur pmap.Map[Problems]) {
	var appeared, resolved Problems
	for o := range pmap.Diff(old, cur, slices.Equal) {
		was, _ := old.Get(o)
		now, _ := cur.Get(o)
		appeared = append(appeared, missing(now, was)...)
		resolved = append(resolved, missing(was, now)...)
	}
	sortProblems(appeared)
	sortProblems(resolved)
	for _, p := range appeared {
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
	for _, p := range resolved {
		b.log.Info("mesh input problem resolved", "kind", p.Kind, "service", p.Service,
			"instance", p.Instance, "field", p.Field, "was", p.Message)
	}
}

// missing returns the problems of ps whose key is not in others, each
// key once.
func missing(ps, others Problems) Problems {
	seen := make(map[string]bool, len(others))
	for _, p := range others {
		seen[p.Key()] = true
	}
	var out Problems
	for _, p := range ps {
		if !seen[p.Key()] {
			seen[p.Key()] = true
			out = append(out, p)
		}
	}
	return out
}
