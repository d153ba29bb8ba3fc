package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Intentions are who may call one service: the sources of its Consul
// service-intentions config entry, in Consul's precedence order. Each
// source's rule is all or nothing (Action, "L4") or a list of HTTP
// permissions checked in order ("L7"). A caller no source names is denied:
// the mesh denies by default, as Consul with ACLs on and default deny.
//
// An entry the mesh cannot enforce exactly fails closed: a source with a
// permission the translation cannot express is denied entirely, and an
// entry that cannot be read at all denies every source; each is a
// problem (KindIntention).
type Intentions struct {
	// Destination is the service they protect, or "*" for every service
	// (below the service's own entry in precedence).
	Destination string `json:"destination"`
	// Sources are exact service names first (sorted), then "*".
	Sources []IntentionSource `json:"sources"`
}

// IntentionSource is the rule for one calling service, or for every
// caller ("*") that no exact source names.
type IntentionSource struct {
	Name string `json:"name"`
	// Action decides every request of the source when Permissions is
	// empty.
	Action IntentionAction `json:"action,omitempty"`
	// Permissions are checked in order; the first whose HTTP match
	// matches decides, and a request none matches is denied.
	Permissions []IntentionPermission `json:"permissions,omitempty"`
}

// IntentionAction allows or denies.
type IntentionAction string

// Intention actions, spelled as Consul spells them.
const (
	IntentionAllow IntentionAction = "allow"
	IntentionDeny  IntentionAction = "deny"
)

// IntentionPermission is one L7 rule: requests matching HTTP get Action.
type IntentionPermission struct {
	Action IntentionAction `json:"action"`
	HTTP   HTTPMatch       `json:"http"`
}

// HTTPMatch matches a request when every field set matches: at most one
// path matcher, the method among Methods, every header matcher. A gRPC
// method is the path /<package.Service>/<Method>, called with POST.
type HTTPMatch struct {
	PathExact  string        `json:"path_exact,omitempty"`
	PathPrefix string        `json:"path_prefix,omitempty"`
	PathRegex  string        `json:"path_regex,omitempty"`
	Methods    []string      `json:"methods,omitempty"`
	Headers    []HeaderMatch `json:"headers,omitempty"`
}

// HeaderMatch matches one request header: present, or its value by
// exactly one of Exact, Prefix, Suffix, Contains, Regex; Invert negates
// the result.
type HeaderMatch struct {
	Name       string `json:"name"`
	Present    bool   `json:"present,omitempty"`
	Exact      string `json:"exact,omitempty"`
	Prefix     string `json:"prefix,omitempty"`
	Suffix     string `json:"suffix,omitempty"`
	Contains   string `json:"contains,omitempty"`
	Regex      string `json:"regex,omitempty"`
	Invert     bool   `json:"invert,omitempty"`
	IgnoreCase bool   `json:"ignore_case,omitempty"`
}

// Wildcard is the source or destination name that stands for every
// service.
const Wildcard = "*"

// EffectiveSources are the sources that decide calls to a service, in
// precedence order, from the service's own intentions (exact) and those
// of the wildcard destination (either may be nil). Consul's precedence:
// the service's exact sources, then its "*", then the wildcard entry's
// exact sources it does not name itself, then the wildcard entry's "*";
// a source is decided by the first of these that names it, so once the
// service's own entry has a "*", the wildcard entry decides nothing.
func EffectiveSources(exact, wildcard *Intentions) []IntentionSource {
	var out []IntentionSource
	named := map[string]bool{}
	if exact != nil {
		for _, s := range exact.Sources {
			if s.Name == Wildcard {
				return append(out, s)
			}
			named[s.Name] = true
			out = append(out, s)
		}
	}
	if wildcard != nil {
		for _, s := range wildcard.Sources {
			if !named[s.Name] {
				out = append(out, s)
			}
		}
	}
	return out
}

// consulEntry is a service-intentions config entry as Consul writes it:
// the fields that decide who may call, and those the mesh cannot enforce
// (to refuse them rather than ignore them).
type consulEntry struct {
	Name      string
	Partition string
	Namespace string
	JWT       json.RawMessage
	Sources   []struct {
		Name          string
		Peer          string
		Partition     string
		Namespace     string
		SamenessGroup string
		Action        IntentionAction
		Permissions   []struct {
			Action IntentionAction
			JWT    json.RawMessage
			HTTP   *struct {
				PathExact, PathPrefix, PathRegex string
				Methods                          []string
				Header                           []consulHeader
			}
		}
	}
}

// consulHeader is HeaderMatch in Consul's JSON field names (IgnoreCase,
// not ignore_case).
type consulHeader struct {
	Name                                   string
	Present                                bool
	Exact, Prefix, Suffix, Contains, Regex string
	Invert, IgnoreCase                     bool
}

var methodRE = regexp.MustCompile(`^[A-Z]+$`)

// denyAll is what an entry that cannot be read stands for.
func denyAll(destination string) *Intentions {
	return &Intentions{Destination: destination, Sources: []IntentionSource{{Name: Wildcard, Action: IntentionDeny}}}
}

// parseIntentions reads the config entry of one destination (raw, as the
// catalog keeps it). It never fails: what it cannot enforce is denied and
// reported in c.
func parseIntentions(c *checker, destination string, raw []byte) *Intentions {
	field := "service-intentions/" + truncate(destination, 80)
	var e consulEntry
	if err := json.Unmarshal(raw, &e); err != nil {
		c.problem(SeverityError, KindIntention, destination, "", field, "unreadable config entry (%v); every caller is denied", err)
		return denyAll(destination)
	}
	switch {
	case destination != Wildcard && !serviceNameRE.MatchString(destination):
		c.problem(SeverityWarning, KindIntention, "", "", field, "destination is not a valid service name; ignored")
		return nil
	case len(bytes.TrimSpace(e.JWT)) > 0 && !bytes.Equal(bytes.TrimSpace(e.JWT), []byte("null")):
		c.problem(SeverityError, KindIntention, destination, "", field, "JWT requirements are not supported; every caller is denied")
		return denyAll(destination)
	case !defaultTenancy(e.Partition) || !defaultTenancy(e.Namespace):
		c.problem(SeverityError, KindIntention, destination, "", field, "partitions and namespaces are not supported; every caller is denied")
		return denyAll(destination)
	}
	out := &Intentions{Destination: destination}
	for i, s := range e.Sources {
		at := fmt.Sprintf("%s.Sources[%d]", field, i)
		switch {
		case s.Peer != "" || s.SamenessGroup != "" || !defaultTenancy(s.Partition) || !defaultTenancy(s.Namespace):
			c.problem(SeverityWarning, KindIntention, destination, "", at,
				"source %q is in a peer, sameness group, partition or namespace, which the mesh does not have; ignored", s.Name)
			continue
		case s.Name != Wildcard && !serviceNameRE.MatchString(s.Name):
			c.problem(SeverityWarning, KindIntention, destination, "", at, "source %q is not a valid service name; ignored", truncate(s.Name, 80))
			continue
		}
		src := IntentionSource{Name: s.Name}
		reason := ""
		switch {
		case len(s.Permissions) == 0 && (s.Action == IntentionAllow || s.Action == IntentionDeny):
			src.Action = s.Action
		case len(s.Permissions) == 0 || s.Action != "":
			reason = fmt.Sprintf("want either action allow or deny, or permissions (action %q, %d permissions)", s.Action, len(s.Permissions))
		}
		for j, p := range s.Permissions {
			if reason != "" {
				break
			}
			perm := IntentionPermission{Action: p.Action}
			switch {
			case p.Action != IntentionAllow && p.Action != IntentionDeny:
				reason = fmt.Sprintf("permission %d: action %q is neither allow nor deny", j, p.Action)
			case len(p.JWT) > 0 && !bytes.Equal(p.JWT, []byte("null")):
				reason = fmt.Sprintf("permission %d: JWT requirements are not supported", j)
			case p.HTTP == nil:
				reason = fmt.Sprintf("permission %d: no HTTP match", j)
			default:
				perm.HTTP = HTTPMatch{PathExact: p.HTTP.PathExact, PathPrefix: p.HTTP.PathPrefix, PathRegex: p.HTTP.PathRegex,
					Methods: p.HTTP.Methods}
				for _, h := range p.HTTP.Header {
					perm.HTTP.Headers = append(perm.HTTP.Headers, HeaderMatch(h))
				}
				if err := perm.HTTP.check(); err != nil {
					reason = fmt.Sprintf("permission %d: %v", j, err)
				}
			}
			src.Permissions = append(src.Permissions, perm)
		}
		if reason != "" {
			c.problem(SeverityError, KindIntention, destination, "", at, "source %q: %s; the source is denied", s.Name, reason)
			src = IntentionSource{Name: s.Name, Action: IntentionDeny}
		}
		out.Sources = append(out.Sources, src)
	}
	slices.SortStableFunc(out.Sources, func(a, b IntentionSource) int {
		switch {
		case a.Name == b.Name:
			return 0
		case a.Name == Wildcard:
			return 1
		case b.Name == Wildcard:
			return -1
		}
		return strings.Compare(a.Name, b.Name)
	})
	// Consul refuses an entry naming a source twice; should one come
	// anyway, the first (by precedence, then order) decides.
	out.Sources = slices.CompactFunc(out.Sources, func(a, b IntentionSource) bool { return a.Name == b.Name })
	return out
}

func defaultTenancy(s string) bool { return s == "" || s == "default" }

// check reports what of an HTTP match the translation cannot express
// exactly, for Envoy's RBAC filter and gRPC's alike.
func (m *HTTPMatch) check() error {
	paths := 0
	for _, p := range []string{m.PathExact, m.PathPrefix, m.PathRegex} {
		if p != "" {
			paths++
		}
	}
	switch {
	case paths > 1:
		return fmt.Errorf("more than one of PathExact, PathPrefix, PathRegex")
	case m.PathExact != "" && !strings.HasPrefix(m.PathExact, "/"), m.PathPrefix != "" && !strings.HasPrefix(m.PathPrefix, "/"):
		return fmt.Errorf("a path must start with /")
	}
	if m.PathRegex != "" {
		if _, err := regexp.Compile(m.PathRegex); err != nil {
			return fmt.Errorf("PathRegex: %v", err)
		}
	}
	for _, meth := range m.Methods {
		if !methodRE.MatchString(meth) {
			return fmt.Errorf("method %q is not an upper-case HTTP method", truncate(meth, 40))
		}
	}
	for _, h := range m.Headers {
		if err := h.check(); err != nil {
			return err
		}
	}
	return nil
}

func (h *HeaderMatch) check() error {
	name := strings.ToLower(h.Name)
	switch {
	case name == "":
		return fmt.Errorf("a header match without a name")
	case strings.HasPrefix(name, "grpc-") || name == ":scheme":
		// gRPC's RBAC refuses a whole policy that matches these.
		return fmt.Errorf("header %q cannot be matched (gRPC refuses grpc-* and :scheme)", truncate(h.Name, 40))
	}
	set := 0
	for _, v := range []string{h.Exact, h.Prefix, h.Suffix, h.Contains, h.Regex} {
		if v != "" {
			set++
		}
	}
	if h.Present {
		set++
	}
	if set != 1 {
		return fmt.Errorf("header %q: want exactly one of Present, Exact, Prefix, Suffix, Contains, Regex", truncate(h.Name, 40))
	}
	if h.Regex != "" {
		if _, err := regexp.Compile(h.Regex); err != nil {
			return fmt.Errorf("header %q: Regex: %v", truncate(h.Name, 40), err)
		}
	}
	return nil
}
