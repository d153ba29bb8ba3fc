// Package debug serves the control plane's operator endpoints over HTTP:
// who is connected and what they acknowledged, each node's configuration
// as Envoy's admin config dump would show it, the mesh model with every
// input problem, Prometheus metrics, liveness and readiness. It only reads
// what the other stages publish.
//
//	serve.Server ──Nodes / Resources / Mesh / Ready──▶ Handler
//	catalog.Watcher ──Status──────────────────────────▶   │
//	xdsauth.Authenticator ──Refusals──────────────────▶   │
//	prometheus.Gatherer ──────────────────────────────▶   │
//	                                                       ▼
//	  GET /debug/nodes              nodes, ACK/NACK per type, snapshot errors, refused streams
//	  GET /debug/config_dump?node=  envoy.admin.v3.ConfigDump of a node's snapshot  (operator)
//	  GET /debug/model              services, routes, policies, problems
//	  GET /debug/endpoints/{id}     whether instance id is still sent as an endpoint
//	  GET /debug/pprof/...          Go profiles                                      (operator)
//	  GET /metrics  GET /health  GET /ready
//
// (operator): the request carries a Consul ACL token (X-Consul-Token, or
// Authorization: Bearer) that Consul grants operator:read; a node's
// configuration is what an attacker would want, and a profile can stall
// the process.
package debug

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"slices"
	"strings"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/internal/redact"
	"github.com/meshop/meshop/controlplane/model"
	"github.com/meshop/meshop/controlplane/serve"
	"github.com/meshop/meshop/controlplane/xdsauth"
)

// Server is what the handler reads from the xDS server.
type Server interface {
	Nodes() []serve.NodeStatus
	Resources(nodeID string) (key string, res map[string][]cachetypes.Resource, versions map[string]string, err error)
	Mesh() *model.Mesh
	Ready() bool
}

// Catalog is what the handler reads from the catalog watcher.
type Catalog interface {
	Status() catalog.Status
}

// Operators decides who is an operator: Consul, through
// catalog.ConsulSource.OperatorRead.
type Operators interface {
	OperatorRead(ctx context.Context, token string) (bool, error)
}

// NewHandler returns the debug HTTP handler.
func NewHandler(srv Server, cat Catalog, ops Operators, refused Refusals, g prometheus.Gatherer, log *slog.Logger) http.Handler {
	h := &handler{srv: srv, cat: cat, ops: ops, refused: refused, log: log.With("component", "debug")}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/nodes", h.nodes)
	mux.Handle("GET /debug/config_dump", h.operator(http.HandlerFunc(h.configDump)))
	mux.HandleFunc("GET /debug/model", h.model)
	mux.HandleFunc("GET /debug/endpoints/{instance}", h.endpoint)
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /health", h.health)
	mux.HandleFunc("GET /ready", h.ready)
	// Go profiles, for the operator and the benchmarks (heap?gc=1 forces
	// a collection first).
	mux.Handle("GET /debug/pprof/", h.operator(http.HandlerFunc(pprof.Index)))
	mux.Handle("GET /debug/pprof/cmdline", h.operator(http.HandlerFunc(pprof.Cmdline)))
	mux.Handle("GET /debug/pprof/profile", h.operator(http.HandlerFunc(pprof.Profile)))
	mux.Handle("GET /debug/pprof/symbol", h.operator(http.HandlerFunc(pprof.Symbol)))
	mux.Handle("GET /debug/pprof/trace", h.operator(http.HandlerFunc(pprof.Trace)))
	return mux
}

type handler struct {
	srv     Server
	cat     Catalog
	ops     Operators
	refused Refusals
	log     *slog.Logger
}

// Refusals are the xDS streams refused lately (nil: streams are not
// authenticated).
type Refusals interface {
	Refusals() []xdsauth.Refusal
}

// operator serves next only to a request whose token Consul grants
// operator:read: 401 without a token, 403 with another, 503 when Consul
// cannot say.
func (h *handler) operator(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := r.Header.Get("X-Consul-Token")
		if bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && token == "" {
			token = bearer
		}
		ok, err := h.ops.OperatorRead(r.Context(), token)
		switch {
		case err != nil:
			h.log.Warn("operator check failed", "path", r.URL.Path, "err", err.Error())
			writeError(w, http.StatusServiceUnavailable, "operator_check_failed", "Consul could not check the token: "+err.Error())
		case ok:
			next.ServeHTTP(w, r)
		case token == "":
			writeError(w, http.StatusUnauthorized, "operator_token_required", "this endpoint needs a Consul ACL token with operator:read (X-Consul-Token)")
		default:
			h.log.Warn("operator endpoint refused", "path", r.URL.Path, "remote", r.RemoteAddr)
			writeError(w, http.StatusForbidden, "operator_token_required", "the token has no operator:read in Consul")
		}
	})
}

func (h *handler) nodes(w http.ResponseWriter, _ *http.Request) {
	refused := []xdsauth.Refusal{}
	if h.refused != nil {
		refused = h.refused.Refusals()
	}
	// Services with no passing instance: their callers are sent no
	// endpoint (endpoints stay passing-only, DESIGN §6).
	without := []string{}
	if hs, ok := h.srv.(interface{ ServicesWithoutPassing() []string }); ok {
		without = append(without, hs.ServicesWithoutPassing()...)
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"consul":                             h.cat.Status(),
		"nodes":                              h.srv.Nodes(),
		"refused":                            refused,
		"services_without_passing_instances": without,
	})
}

// endpoint answers whether the control plane still sends instance as an
// endpoint to the nodes that call its service: what an app taking itself
// out of the mesh waits for before it drains (issue 12). It reads the
// mesh every node's snapshot was last built from.
func (h *handler) endpoint(w http.ResponseWriter, r *http.Request) {
	m := h.srv.Mesh()
	if m == nil {
		writeError(w, http.StatusServiceUnavailable, "not_ready", "no catalog snapshot has been applied yet")
		return
	}
	in := m.Instance(r.PathValue("instance"))
	writeJSON(w, http.StatusOK, map[string]any{
		"instance": r.PathValue("instance"),
		"endpoint": in != nil && in.Endpoint(),
		"index":    m.Index,
	})
}

func (h *handler) model(w http.ResponseWriter, _ *http.Request) {
	m := h.srv.Mesh()
	if m == nil {
		writeError(w, http.StatusServiceUnavailable, "not_ready", "no catalog snapshot has been applied yet")
		return
	}
	writeJSON(w, http.StatusOK, m)
}

// configDump renders a node's snapshot the way Envoy's /config_dump
// renders what Envoy accepted, so the two can be compared directly.
func (h *handler) configDump(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("node")
	if id == "" {
		writeError(w, http.StatusBadRequest, "missing_node", "query parameter node=<node id> is required (a Consul instance ID, or edge-<n>)")
		return
	}
	key, res, versions, err := h.srv.Resources(id)
	if errors.Is(err, serve.ErrNoSnapshot) {
		writeError(w, http.StatusNotFound, "no_snapshot", err.Error()+"; see /debug/nodes and /debug/model for why")
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	dump, err := configDump(res, versions)
	if err != nil {
		h.log.Error("config dump", "node", id, "err", err)
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(dump)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	// Wrap to add what Envoy's dump does not have: which snapshot it is.
	writeJSON(w, http.StatusOK, map[string]any{
		"node":         id,
		"snapshot_key": key,
		"versions":     versions,
		"config_dump":  json.RawMessage(b),
	})
}

func configDump(res map[string][]cachetypes.Resource, versions map[string]string) (*adminv3.ConfigDump, error) {
	pack := func(m proto.Message) (*anypb.Any, error) { return anypb.New(m) }
	cds := &adminv3.ClustersConfigDump{VersionInfo: versions[resource.ClusterType]}
	for _, c := range res[resource.ClusterType] {
		a, err := pack(c)
		if err != nil {
			return nil, err
		}
		cds.DynamicActiveClusters = append(cds.DynamicActiveClusters, &adminv3.ClustersConfigDump_DynamicCluster{
			VersionInfo: versions[resource.ClusterType], Cluster: a})
	}
	eds := &adminv3.EndpointsConfigDump{}
	for _, e := range res[resource.EndpointType] {
		a, err := pack(e)
		if err != nil {
			return nil, err
		}
		eds.DynamicEndpointConfigs = append(eds.DynamicEndpointConfigs, &adminv3.EndpointsConfigDump_DynamicEndpointConfig{
			VersionInfo: versions[resource.EndpointType], EndpointConfig: a})
	}
	lds := &adminv3.ListenersConfigDump{VersionInfo: versions[resource.ListenerType]}
	for _, l := range res[resource.ListenerType] {
		a, err := pack(l)
		if err != nil {
			return nil, err
		}
		lds.DynamicListeners = append(lds.DynamicListeners, &adminv3.ListenersConfigDump_DynamicListener{
			Name:        cacheName(l),
			ActiveState: &adminv3.ListenersConfigDump_DynamicListenerState{VersionInfo: versions[resource.ListenerType], Listener: a},
		})
	}
	rds := &adminv3.RoutesConfigDump{}
	for _, rc := range res[resource.RouteType] {
		a, err := pack(rc)
		if err != nil {
			return nil, err
		}
		rds.DynamicRouteConfigs = append(rds.DynamicRouteConfigs, &adminv3.RoutesConfigDump_DynamicRouteConfig{
			VersionInfo: versions[resource.RouteType], RouteConfig: a})
	}
	sds := &adminv3.SecretsConfigDump{}
	for _, r := range res[resource.SecretType] {
		a, err := pack(redact.Secret(r.(*tlsv3.Secret))) // as CSDS shows it
		if err != nil {
			return nil, err
		}
		sds.DynamicActiveSecrets = append(sds.DynamicActiveSecrets, &adminv3.SecretsConfigDump_DynamicSecret{
			Name: cacheName(r), VersionInfo: versions[resource.SecretType], Secret: a})
	}
	out := &adminv3.ConfigDump{}
	for _, m := range []proto.Message{cds, eds, lds, rds, sds} {
		a, err := pack(m)
		if err != nil {
			return nil, err
		}
		out.Configs = append(out.Configs, a)
	}
	return out, nil
}

func cacheName(r cachetypes.Resource) string {
	type named interface{ GetName() string }
	if n, ok := r.(named); ok {
		return n.GetName()
	}
	return ""
}

func (h *handler) health(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "service": "controlplane"})
}

// ready is 200 once the catalog has synced and the first snapshots are
// set. A Consul outage later does not make it unready: the control plane
// keeps serving the last snapshot, which is what Envoys need.
func (h *handler) ready(w http.ResponseWriter, _ *http.Request) {
	st := h.cat.Status()
	var why []string
	if !st.Synced {
		why = append(why, "catalog not synced with Consul yet")
	}
	if !h.srv.Ready() {
		why = append(why, "first snapshots not built yet")
	}
	if len(why) > 0 {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "starting", "service": "controlplane", "waiting_for": why})
		return
	}
	body := map[string]any{"status": "ready", "service": "controlplane"}
	if !st.Reachable {
		body["consul"] = "unreachable since " + st.Since.UTC().Format(time.RFC3339) + "; serving the last snapshot"
	}
	writeJSON(w, http.StatusOK, body)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away; nothing to do
}

func writeError(w http.ResponseWriter, code int, errCode, msg string) {
	writeJSON(w, code, map[string]any{"error": map[string]string{"code": errCode, "message": msg}})
}

// ClusterNames reads the cluster names, sorted, out of a
// /debug/config_dump response body: what a node's Envoy gets (or would
// get) as clusters. Tests and tools use it to check a node's config.
func ClusterNames(configDump []byte) ([]string, error) {
	var resp struct {
		ConfigDump struct {
			Configs []struct {
				Type     string `json:"@type"`
				Clusters []struct {
					Cluster struct {
						Name string `json:"name"`
					} `json:"cluster"`
				} `json:"dynamic_active_clusters"`
			} `json:"configs"`
		} `json:"config_dump"`
	}
	if err := json.Unmarshal(configDump, &resp); err != nil {
		return nil, fmt.Errorf("debug: not a config dump: %w", err)
	}
	names := []string{}
	for _, c := range resp.ConfigDump.Configs {
		if strings.HasSuffix(c.Type, "ClustersConfigDump") {
			for _, cl := range c.Clusters {
				names = append(names, cl.Cluster.Name)
			}
		}
	}
	slices.Sort(names)
	return names, nil
}
