package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// httpError is a control plane's non-2xx answer with its error body.
type httpError struct {
	url    string
	status int
	code   string
	msg    string
}

func (e *httpError) Error() string {
	if e.code != "" {
		return fmt.Sprintf("%s: %d %s: %s", e.url, e.status, e.code, e.msg)
	}
	return fmt.Sprintf("%s: %d %s", e.url, e.status, e.msg)
}

// get fetches base+path from a control plane and decodes the JSON answer
// into out; with operator set, the Consul token goes along.
func (a *app) get(ctx context.Context, base, path string, operator bool, out any) error {
	url := base + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if operator {
		token, err := a.Token()
		if err != nil {
			return err
		}
		if token != "" {
			req.Header.Set("X-Consul-Token", token)
		}
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return fmt.Errorf("control plane %s unreachable (--controlplane or MESHCTL_CONTROLPLANE names it): %w", base, unwrapURLError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return fmt.Errorf("%s: %w", url, err)
	}
	if resp.StatusCode/100 != 2 {
		he := &httpError{url: url, status: resp.StatusCode, msg: strings.TrimSpace(string(body))}
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error.Code != "" {
			he.code, he.msg = e.Error.Code, e.Error.Message
		}
		if resp.StatusCode == http.StatusUnauthorized {
			he.msg += " (pass --token, or set CONSUL_HTTP_TOKEN)"
		}
		return he
	}
	if out == nil {
		return nil
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw = body
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%s: not the expected JSON: %w", url, err)
	}
	return nil
}

func unwrapURLError(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}

// nodesAnswer is GET /debug/nodes.
type nodesAnswer struct {
	Nodes []nodeStatus `json:"nodes"`
	// ServicesWithoutPassing: names, or objects naming the service.
	ServicesWithoutPassing json.RawMessage `json:"services_without_passing_instances"`
}

type sent struct {
	Version   string    `json:"version"`
	Resources int       `json:"resources"`
	At        time.Time `json:"at"`
}

type ack struct {
	Version string    `json:"version"`
	At      time.Time `json:"at"`
}

type nack struct {
	TypeURL string    `json:"type_url"`
	Version string    `json:"version"`
	Kept    string    `json:"kept_version"`
	Message string    `json:"message"`
	At      time.Time `json:"at"`
}

// nodeStatus is one node of /debug/nodes (serve.NodeStatus, plus the
// sync fields newer control planes add).
type nodeStatus struct {
	ID             string            `json:"id"`
	Cluster        string            `json:"cluster"`
	Type           string            `json:"type"`
	Connected      bool              `json:"connected"`
	ConnectedSince *time.Time        `json:"connected_since"`
	LastSent       map[string]sent   `json:"last_sent"`
	LastAck        map[string]ack    `json:"last_ack"`
	LastNack       *nack             `json:"last_nack"`
	Nacks          int               `json:"nacks"`
	Notes          []string          `json:"notes"`
	Sync           string            `json:"sync"`
	SyncByType     map[string]string `json:"sync_by_type"`
	LastSeen       *time.Time        `json:"last_seen"`

	controlPlane string
}

// Sync states.
const (
	synced = "SYNCED"
	stale  = "STALE"
	nacked = "NACKED"
)

// xdsTypes are the columns of proxy-status, in Envoy's order of use.
var xdsTypes = []struct{ short, url string }{
	{"CDS", resource.ClusterType},
	{"LDS", resource.ListenerType},
	{"RDS", resource.RouteType},
	{"EDS", resource.EndpointType},
	{"SDS", resource.SecretType},
}

// typeState is a node's sync state for one type URL: the control
// plane's when it says, else computed from what was sent, ACKed and
// NACKed. "" when nothing of the type was sent.
func (n *nodeStatus) typeState(url string) string {
	if s := n.SyncByType[url]; s != "" {
		return strings.ToUpper(s)
	}
	s, ok := n.LastSent[url]
	if !ok {
		return ""
	}
	if a, ok := n.LastAck[url]; ok && a.Version == s.Version {
		return synced
	}
	if n.LastNack != nil && n.LastNack.TypeURL == url && n.LastNack.Version == s.Version {
		return nacked
	}
	return stale
}

// state is the node's overall sync state: NACKED when a type is, else
// STALE when a type is not acknowledged, else SYNCED.
func (n *nodeStatus) state() string {
	if n.Sync != "" {
		return strings.ToUpper(n.Sync)
	}
	worst, any := synced, false
	for url := range n.LastSent {
		any = true
		switch n.typeState(url) {
		case nacked:
			worst = nacked
		case stale:
			if worst != nacked {
				worst = stale
			}
		}
	}
	if !any {
		return stale // connected, and sent nothing yet (or never will: see notes)
	}
	return worst
}

// seen is when the control plane last heard from or wrote to the node.
func (n *nodeStatus) seen() time.Time {
	if n.LastSeen != nil {
		return *n.LastSeen
	}
	var t time.Time
	later := func(x time.Time) {
		if x.After(t) {
			t = x
		}
	}
	if n.ConnectedSince != nil {
		later(*n.ConnectedSince)
	}
	for _, s := range n.LastSent {
		later(s.At)
	}
	for _, a := range n.LastAck {
		later(a.At)
	}
	if n.LastNack != nil {
		later(n.LastNack.At)
	}
	return t
}

// currentNack is the NACK text when a type is NACKED now.
func (n *nodeStatus) currentNack() string {
	if n.LastNack == nil {
		return ""
	}
	if n.typeState(n.LastNack.TypeURL) != nacked {
		return ""
	}
	return shortTypeURL(n.LastNack.TypeURL) + ": " + n.LastNack.Message
}

func shortTypeURL(url string) string {
	for _, t := range xdsTypes {
		if t.url == url {
			return t.short
		}
	}
	return url[strings.LastIndex(url, ".")+1:]
}

// flavour names what kind of client the node is.
func (n *nodeStatus) flavour() string {
	switch n.Type {
	case "sidecar":
		return "envoy"
	case "":
		return "unknown"
	}
	return n.Type
}

// fleet is what every control-plane replica reported, merged by node.
type fleet struct {
	nodes       []*nodeStatus
	noPassing   []string
	unreachable []error
}

// nodes asks every replica for its nodes and keeps, per node id, the
// entry seen last (a node talks to one replica at a time; the others
// remember it from before it moved).
func (a *app) nodes(ctx context.Context) (*fleet, error) {
	urls, err := a.ControlPlaneURLs()
	if err != nil {
		return nil, err
	}
	f := &fleet{}
	byID := map[string]*nodeStatus{}
	noPassing := map[string]bool{}
	answered := 0
	for _, u := range urls {
		var ans nodesAnswer
		if err := a.get(ctx, u, "/debug/nodes", false, &ans); err != nil {
			f.unreachable = append(f.unreachable, err)
			continue
		}
		answered++
		for i := range ans.Nodes {
			n := &ans.Nodes[i]
			n.controlPlane = u
			if old := byID[n.ID]; old == nil || n.seen().After(old.seen()) || (!old.Connected && n.Connected && !n.seen().Before(old.seen())) {
				byID[n.ID] = n
			}
		}
		for _, s := range serviceNames(ans.ServicesWithoutPassing) {
			noPassing[s] = true
		}
	}
	if answered == 0 {
		return nil, errors.Join(f.unreachable...)
	}
	for _, n := range byID {
		f.nodes = append(f.nodes, n)
	}
	slices.SortFunc(f.nodes, func(x, y *nodeStatus) int { return strings.Compare(x.ID, y.ID) })
	for s := range noPassing {
		f.noPassing = append(f.noPassing, s)
	}
	slices.Sort(f.noPassing)
	return f, nil
}

// serviceNames reads services_without_passing_instances: a list of
// names, or of objects with a service (or name) field.
func serviceNames(raw json.RawMessage) []string {
	if len(raw) == 0 {
		return nil
	}
	var names []string
	if json.Unmarshal(raw, &names) == nil {
		return names
	}
	var objs []struct {
		Service string `json:"service"`
		Name    string `json:"name"`
	}
	if json.Unmarshal(raw, &objs) == nil {
		for _, o := range objs {
			names = append(names, cmpOr(o.Service, o.Name))
		}
		return names
	}
	var byName map[string]json.RawMessage
	if json.Unmarshal(raw, &byName) == nil {
		for k := range byName {
			names = append(names, k)
		}
		slices.Sort(names)
	}
	return names
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
