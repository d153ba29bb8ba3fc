package model

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/meshop/meshop/controlplane/catalog"
)

// Consul meta keys the services write (DESIGN §5).
const (
	MetaProtocol       = "mesh_protocol"
	MetaUpstreams      = "mesh_upstreams"
	MetaPublicPrefixes = "mesh_public_prefixes"
	MetaAppPort        = "mesh_app_port"
	MetaGRPCPort       = "mesh_grpc_port"
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

// checker collects the problems found in one piece of input: a service's
// registrations, a public prefix, a policy key.
type checker struct {
	problems Problems
}

func (c *checker) problem(sev Severity, kind, svc, inst, field, format string, args ...any) {
	c.problems = append(c.problems, Problem{
		Severity: sev, Kind: kind, Service: svc, Instance: inst, Field: field,
		Message: fmt.Sprintf(format, args...),
	})
}

// class is what the model makes of one catalog service.
type class int

const (
	classAbsent   class = iota // not in the catalog
	classUnmeshed              // no instance has mesh_* meta: ignored, no problem
	classSkipped               // meshed, but left out of the mesh: its problems say why
	classMeshed
)

// parsed is what a service's registrations make on their own: everything
// but the upstreams, which are checked once every service is known.
type parsed struct {
	class class
	svc   *Service          // classMeshed: Name, Protocol, Instances
	raw   map[string]string // instance ID → raw mesh_upstreams
	dups  bool              // an instance ID of another service was ignored
	checker
}

// parseService checks the registrations of one catalog service. taken
// reports whether an instance ID already belongs to another service; such
// a registration is ignored.
func parseService(name string, insts []catalog.Instance, taken func(id string) bool) *parsed {
	p := &parsed{class: classSkipped, raw: map[string]string{}}
	if !meshed(insts) {
		p.class = classUnmeshed
		return p
	}
	if !serviceNameRE.MatchString(name) {
		p.problem(SeverityError, KindMeta, name, "", "Name",
			"service name %q is not a DNS label (lowercase letters, digits, '-'); it cannot be a cluster or host name, so it is left out of the mesh", truncate(name, 80))
		return p
	}
	svc := &Service{Name: name}
	for i := range insts {
		ci := &insts[i]
		if !hasMeshMeta(ci.Meta) {
			p.problem(SeverityWarning, KindMeta, name, ci.ID, "Meta",
				"instance has no mesh_* meta while other instances of %s do; it is left out of the mesh", name)
			continue
		}
		in, meta := p.instance(ci)
		if _, again := p.raw[in.ID]; again || taken(in.ID) {
			p.dups = true
			p.problem(SeverityError, KindMeta, name, in.ID, "ID",
				"instance ID is registered twice (on two Consul nodes); the second registration is ignored")
			continue
		}
		svc.Instances = append(svc.Instances, in)
		p.raw[in.ID] = meta[MetaUpstreams]
	}
	if len(svc.Instances) == 0 {
		return p
	}
	svc.Protocol = p.serviceProtocol(svc)
	p.class, p.svc = classMeshed, svc
	return p
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

// metaPort reads the port in meta key of ci: 0 when it is absent, and
// when it is no TCP port, a problem that says what follows.
func (c *checker) metaPort(ci catalog.Instance, key, consequence string) int {
	raw, ok := ci.Meta[key]
	if !ok {
		return 0
	}
	p, err := strconv.Atoi(strings.TrimSpace(raw))
	if err != nil || p <= 0 || p > 65535 {
		c.problem(SeverityError, KindPort, ci.Service, ci.ID, key,
			"%q is not a TCP port (1-65535); %s", truncate(raw, 40), consequence)
		return 0
	}
	return p
}

// instance checks one registration; it returns the meta it accepted
// (oversized values removed). The instance refers to reg, which must
// never be modified (nothing modifies a catalog snapshot).
func (c *checker) instance(reg *catalog.Instance) (*Instance, map[string]string) {
	in := &Instance{Instance: reg, AddressOK: true}
	ci := *reg // its Meta may lose oversized values
	for k, v := range ci.Meta {
		if strings.HasPrefix(k, "mesh_") && len(v) > maxMetaValueBytes {
			c.problem(SeverityError, KindMeta, ci.Service, ci.ID, k, "value is %d bytes, the limit is %d; ignored", len(v), maxMetaValueBytes)
			ci.Meta = withoutKey(ci.Meta, k)
		}
	}
	if ci.Address == "" {
		c.problem(SeverityError, KindMeta, ci.Service, ci.ID, "Address",
			"registration has no address (neither service nor node address); the instance receives no traffic")
		in.AddressOK = false
	} else if _, err := netip.ParseAddr(ci.Address); err != nil {
		c.problem(SeverityError, KindMeta, ci.Service, ci.ID, "Address",
			"%q is not an IP address; Envoy load assignments need one, so the instance receives no traffic (register the IP)", truncate(ci.Address, 80))
		in.AddressOK = false
	}
	if ci.Port <= 0 || ci.Port > 65535 {
		c.problem(SeverityError, KindPort, ci.Service, ci.ID, "Port",
			"port %d is not a TCP port; the instance receives no traffic", ci.Port)
		in.AddressOK = false
	}

	if _, ok := ci.Meta[MetaAppPort]; !ok {
		c.problem(SeverityError, KindPort, ci.Service, ci.ID, MetaAppPort,
			"missing; the sidecar of this instance gets no configuration (inbound needs the app port)")
	}
	in.AppPort = c.metaPort(ci, MetaAppPort, "the sidecar of this instance gets no configuration")
	in.GRPCPort = c.metaPort(ci, MetaGRPCPort, "proxyless gRPC clients do not reach this instance")

	in.Protocol = HTTP1
	switch raw, ok := ci.Meta[MetaProtocol]; {
	case !ok:
		c.problem(SeverityWarning, KindMeta, ci.Service, ci.ID, MetaProtocol, "missing; assuming %q", HTTP1)
	default:
		switch strings.ToLower(strings.TrimSpace(raw)) {
		case "http", "http1", "http/1.1":
			in.Protocol = HTTP1
		case "http2", "h2", "grpc":
			in.Protocol = HTTP2
		default:
			c.problem(SeverityError, KindMeta, ci.Service, ci.ID, MetaProtocol,
				"%q is not a protocol (http, http2, grpc); assuming %q", truncate(raw, 40), HTTP1)
		}
	}

	in.Version = c.version(ci)
	in.PublicPrefixes = c.prefixes(ci)
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
func (c *checker) version(ci catalog.Instance) string {
	if v, ok := ci.Meta[MetaVersion]; ok {
		v = strings.TrimSpace(v)
		if versionRE.MatchString(v) {
			return v
		}
		c.problem(SeverityWarning, KindMeta, ci.Service, ci.ID, MetaVersion,
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

func (c *checker) prefixes(ci catalog.Instance) []string {
	raw, ok := ci.Meta[MetaPublicPrefixes]
	if !ok || strings.TrimSpace(raw) == "" {
		return nil
	}
	var out []string
	parts := strings.Split(raw, ",")
	if len(parts) > maxPrefixes {
		c.problem(SeverityError, KindPrefix, ci.Service, ci.ID, MetaPublicPrefixes,
			"%d prefixes, at most %d; only the first %d are used", len(parts), maxPrefixes, maxPrefixes)
		parts = parts[:maxPrefixes]
	}
	for _, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if why := badPrefix(p); why != "" {
			c.problem(SeverityError, KindPrefix, ci.Service, ci.ID, MetaPublicPrefixes,
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
func (c *checker) serviceProtocol(svc *Service) Protocol {
	p := svc.Instances[0].Protocol
	for _, in := range svc.Instances[1:] {
		if in.Protocol != p {
			c.problem(SeverityError, KindMeta, svc.Name, "", MetaProtocol,
				"instances disagree on mesh_protocol (%s says %q, %s says %q); using %q",
				svc.Instances[0].ID, p, in.ID, in.Protocol, HTTP1)
			return HTTP1
		}
	}
	return p
}

// upstreams checks the upstreams one instance declares; isMeshed tells
// which names are meshed services.
func (c *checker) upstreams(in *Instance, raw string, isMeshed func(string) bool) []string {
	if strings.TrimSpace(raw) == "" {
		return nil
	}
	parts := strings.Split(raw, ",")
	if len(parts) > maxUpstreams {
		c.problem(SeverityError, KindUpstream, in.Service, in.ID, MetaUpstreams,
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
			c.problem(SeverityError, KindUpstream, in.Service, in.ID, MetaUpstreams,
				"%q is not a service name; ignored", truncate(u, 60))
		case !isMeshed(u):
			c.problem(SeverityError, KindUpstream, in.Service, in.ID, MetaUpstreams,
				"upstream %q is not a meshed service in the catalog; no route to it until it registers", u)
		case !slices.Contains(out, u):
			out = append(out, u)
		}
	}
	slices.Sort(out)
	return out
}
