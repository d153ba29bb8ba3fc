package catalog

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-cleanhttp"

	"github.com/meshop/meshop/controlplane/internal/h2get"
	"github.com/meshop/meshop/controlplane/internal/intern"
)

// Source is the part of Consul the watcher needs: five blocking queries.
// Each call blocks until Consul's index passes index or wait elapses, and
// returns the new index. ConsulSource implements it over the HTTP API;
// tests may pass a fake.
type Source interface {
	// Services lists the names of all registered services.
	Services(ctx context.Context, index uint64, wait time.Duration) ([]string, uint64, error)
	// Instances returns every instance of a service with its aggregated
	// check status, sorted by ID.
	Instances(ctx context.Context, service string, index uint64, wait time.Duration) ([]Instance, uint64, error)
	// Policies returns the KV pairs below PolicyPrefix, keyed relative to it.
	Policies(ctx context.Context, index uint64, wait time.Duration) (map[string][]byte, uint64, error)
	// Intentions returns every service-intentions config entry as JSON,
	// keyed by its destination service.
	Intentions(ctx context.Context, index uint64, wait time.Duration) (map[string][]byte, uint64, error)
	// CA returns the Connect CA's trust domain and roots.
	CA(ctx context.Context, index uint64, wait time.Duration) (CA, uint64, error)
}

// Connection is how the control plane reaches a Consul agent's HTTP API.
type Connection struct {
	// Address is host:port (plain HTTP) or http(s)://host:port.
	Address string
	// Token is the control plane's ACL token (consul/acl/controlplane.hcl).
	Token string
	// CAFile is the CA of the agent's HTTPS certificate ("": the system's).
	CAFile string
}

// Config is the Consul API client configuration of c, its connections
// bounded (ClientMaxConns).
func (c Connection) Config() *api.Config {
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Scheme = c.Address, "http"
	for _, scheme := range []string{"http", "https"} {
		if rest, ok := strings.CutPrefix(c.Address, scheme+"://"); ok {
			cfg.Address, cfg.Scheme = rest, scheme
		}
	}
	cfg.Token = c.Token
	cfg.TLSConfig = api.TLSConfig{CAFile: c.CAFile}
	// HTTP/2 over HTTPS; at most ClientMaxConns connections, so a burst
	// of requests (every Envoy reconnecting at once) shares them instead
	// of dialling one each past Consul's limit.
	cfg.Transport.ForceAttemptHTTP2 = true
	cfg.Transport.MaxConnsPerHost = ClientMaxConns
	return cfg
}

// ConsulSource reads from a Consul agent's HTTP API.
type ConsulSource struct {
	client *api.Client
	// Instances' blocking queries, one per service, go over HTTP/2
	// (h2: Consul's HTTPS listener) or, over plain HTTP, through the
	// client's HTTP client (watch); token is the client's.
	h2    *h2get.Client
	watch *http.Client
	token string
	// base is the agent's URL and operator the client of OperatorRead.
	base     string
	operator *http.Client
}

// NewConsulSource returns a Source for the agent of c.
func NewConsulSource(c Connection) (*ConsulSource, error) {
	cfg := c.Config()
	watchConnections(cfg)
	// No client timeout: blocking queries are bounded by their wait time
	// and their context.
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	// Not the api client for OperatorRead: its Raw().Write sends PUT, and
	// the authorize endpoint takes POST. Short requests: a timeout.
	transport := cleanhttp.DefaultPooledTransport()
	transport.MaxConnsPerHost = ClientMaxConns
	operator, err := api.NewHttpClient(transport, cfg.TLSConfig)
	if err != nil {
		return nil, err
	}
	operator.Timeout = 5 * time.Second
	// NewClient completed cfg: its HTTP client, and the token from the
	// environment when c has none.
	s := &ConsulSource{client: client, watch: cfg.HttpClient, token: cfg.Token,
		base: cfg.Scheme + "://" + cfg.Address, operator: operator}
	if cfg.Scheme == "https" {
		tlsConf, err := api.SetupTLSConfig(&cfg.TLSConfig)
		if err != nil {
			return nil, err
		}
		s.h2 = h2get.New(cfg.Address, tlsConf, WatchMaxConnsHTTPS)
	}
	return s, nil
}

// Consul's limit, http_max_conns_per_client (200 by default), counts TCP
// connections from one address, not requests; over it, Consul answers a
// new connection with an HTTP/1.1 429, which an HTTP/2 client reads as a
// broken frame. The control plane's clients stay well under it together:
// the watcher's (WatchMaxConns) and each other client's (ClientMaxConns,
// short requests: leaf certificates, token checks, the last good
// policies).
const (
	// ClientMaxConns bounds a client made from Connection.Config.
	ClientMaxConns = 16
	// WatchMaxConnsHTTPS and WatchMaxConnsHTTP bound the watcher's.
	WatchMaxConnsHTTPS = 64
	WatchMaxConnsHTTP  = 128
)

// consulMaxStreams is how many requests Consul's HTTPS listener carries
// at once on one HTTP/2 connection (http2.ConfigureServer's default).
const consulMaxStreams = 250

// watchConnections sets up cfg's transport for the watcher's blocking
// queries, one per service.
//
// Over HTTPS, Consul speaks HTTP/2 with up to 250 concurrent streams per
// connection: the queries share connections, one per 250 of them (41 for
// 10,000 services), and Go opens the next only when one is full. The
// bound matters at start, when a query per service is sent at once: Go
// dials for each request that finds no connection ready.
//
// Over plain HTTP (HTTP/1.1 only) a connection carries one query at a
// time, so beyond WatchMaxConnsHTTP queries some wait for a connection to
// come free and their changes are seen late (up to the blocking wait).
// The watcher logs this; Consul's HTTPS listener is the way to follow a
// large catalog.
func watchConnections(cfg *api.Config) {
	t := cfg.Transport
	if cfg.Scheme == "https" {
		t.MaxConnsPerHost = WatchMaxConnsHTTPS
		return
	}
	t.MaxConnsPerHost = WatchMaxConnsHTTP
	t.MaxIdleConnsPerHost = WatchMaxConnsHTTP
	// A connection per blocking query: small buffers (the requests are
	// short GETs) keep each at a few KiB instead of 8 KiB.
	t.WriteBufferSize = 512
	t.ReadBufferSize = 2048
}

// QueryCapacity is how many blocking queries the source holds at once
// without one waiting for a connection.
func (s *ConsulSource) QueryCapacity() int {
	if s.h2 != nil {
		return WatchMaxConnsHTTPS * consulMaxStreams
	}
	return WatchMaxConnsHTTP
}

// OperatorRead reports whether Consul grants token operator:read: what
// the control plane asks of whoever reads a node's configuration or
// profiles the process. "" is Consul's anonymous token. A Consul without
// ACLs grants everything to everyone, and so does this.
func (s *ConsulSource) OperatorRead(ctx context.Context, token string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.base+"/v1/internal/acl/authorize",
		strings.NewReader(`[{"Resource":"operator","Access":"read"}]`))
	if err != nil {
		return false, err
	}
	req.Header.Set("X-Consul-Token", cmp.Or(token, "anonymous"))
	resp, err := s.operator.Do(req)
	if err != nil {
		return false, fmt.Errorf("consul: authorize operator:read: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	var out []struct{ Allow bool }
	switch {
	case resp.StatusCode == http.StatusUnauthorized && strings.Contains(string(body), "ACL support disabled"):
		return true, nil
	case resp.StatusCode == http.StatusForbidden:
		return false, nil // a token Consul does not know
	case resp.StatusCode != http.StatusOK:
		return false, fmt.Errorf("consul: authorize operator:read: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	case json.Unmarshal(body, &out) != nil:
		return false, fmt.Errorf("consul: authorize operator:read: unexpected answer %.200q", body)
	}
	return len(out) == 1 && out[0].Allow, nil
}

func query(ctx context.Context, index uint64, wait time.Duration) *api.QueryOptions {
	return (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx)
}

// checkMeta returns the index of an answer. It does not look at
// KnownLeader: answers served by Consul's streaming backend (the default
// for the health endpoint) always report false there. Reads are
// consistent-by-default, so a server without a leader answers with an
// error instead.
func checkMeta(m *api.QueryMeta) (uint64, error) {
	return m.LastIndex, nil
}

// Services implements Source.
func (s *ConsulSource) Services(ctx context.Context, index uint64, wait time.Duration) ([]string, uint64, error) {
	svcs, meta, err := s.client.Catalog().Services(query(ctx, index, wait))
	if err != nil {
		return nil, 0, err
	}
	idx, err := checkMeta(meta)
	if err != nil {
		return nil, 0, err
	}
	names := make([]string, 0, len(svcs))
	for n := range svcs {
		names = append(names, n)
	}
	slices.Sort(names)
	return names, idx, nil
}

// Instances implements Source. It asks the health endpoint for all
// instances, not only passing ones: a sidecar whose own app is failing
// still needs its configuration. Only passing instances become endpoints.
//
// One such query per service is in flight at all times, so what each
// keeps in flight is memory per service: over HTTPS it goes through
// h2get (a stream ID and a buffer per query, where net/http keeps about
// 2.5 KiB and a goroutine), over plain HTTP (HTTP/1.1, a connection per
// query) through a plain GET rather than the API client's request.
func (s *ConsulSource) Instances(ctx context.Context, service string, index uint64, wait time.Duration) ([]Instance, uint64, error) {
	path := "/v1/health/service/" + url.PathEscape(service) +
		"?index=" + strconv.FormatUint(index, 10) + "&wait=" + strconv.FormatInt(max(wait.Milliseconds(), 1), 10) + "ms"
	// Consul answers within wait plus up to wait/16 of jitter: a query
	// unanswered well past that is failed and sent again, never left
	// waiting for ever.
	status, header, body, err := s.get(ctx, path, wait+wait/16+30*time.Second)
	if err != nil {
		return nil, 0, err
	}
	if status != http.StatusOK {
		return nil, 0, fmt.Errorf("consul: health of service %q: %d %s: %.1024s", service, status, http.StatusText(status), strings.TrimSpace(string(body)))
	}
	idx, err := strconv.ParseUint(header.Get("X-Consul-Index"), 10, 64)
	if err != nil {
		return nil, 0, fmt.Errorf("consul: health of service %q: X-Consul-Index %q: %w", service, header.Get("X-Consul-Index"), err)
	}
	var entries []healthEntry
	if err := json.Unmarshal(body, &entries); err != nil {
		return nil, 0, fmt.Errorf("consul: health of service %q: %w", service, err)
	}
	return instancesOf(service, entries), idx, nil
}

// get sends a GET of path with the client's token and returns the whole
// answer, or an error when it took longer than timeout.
func (s *ConsulSource) get(ctx context.Context, path string, timeout time.Duration) (int, http.Header, []byte, error) {
	if s.h2 != nil {
		var token []string
		if s.token != "" {
			token = []string{"X-Consul-Token", s.token}
		}
		resp, err := s.h2.Get(ctx, path, timeout, token...)
		if err != nil {
			return 0, nil, nil, err
		}
		return resp.Status, resp.Header, resp.Body, nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.base+path, nil)
	if err != nil {
		return 0, nil, nil, err
	}
	if s.token != "" {
		req.Header.Set("X-Consul-Token", s.token)
	}
	resp, err := s.watch.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, body, err
}

// healthEntry is the part of an answer of /v1/health/service the
// catalog reads.
type healthEntry struct {
	Node *struct {
		Node    string
		Address string
	}
	Service *struct {
		ID, Service, Address string
		Port                 int
		Tags                 []string
		Meta                 map[string]string
		CreateIndex          uint64
	}
	Checks api.HealthChecks
}

// instancesOf makes a service's instances of the entries of its health
// answer, sorted by ID.
func instancesOf(service string, entries []healthEntry) []Instance {
	out := make([]Instance, 0, len(entries))
	// The instances of a service usually carry the same tags and meta:
	// they share one copy (nothing modifies a snapshot's instances).
	tags := intern.NewSet(slices.Equal[[]string])
	metas := intern.NewSet(maps.Equal[map[string]string])
	for _, e := range entries {
		if e.Service == nil {
			continue
		}
		addr := e.Service.Address
		node := ""
		if e.Node != nil {
			node = e.Node.Node
			if addr == "" {
				addr = e.Node.Address
			}
		}
		name := e.Service.Service
		if name == service {
			name = service // one copy of the name for all its instances
		}
		out = append(out, Instance{
			ID:          e.Service.ID,
			Service:     name,
			Node:        node,
			Address:     addr,
			Port:        e.Service.Port,
			Tags:        tags.Get(e.Service.Tags),
			Meta:        metas.Get(e.Service.Meta),
			Status:      e.Checks.AggregatedStatus(),
			CreateIndex: e.Service.CreateIndex,
		})
	}
	slices.SortFunc(out, func(a, b Instance) int {
		if c := strings.Compare(a.ID, b.ID); c != 0 {
			return c
		}
		return strings.Compare(a.Node, b.Node)
	})
	return out
}

// Policies implements Source.
func (s *ConsulSource) Policies(ctx context.Context, index uint64, wait time.Duration) (map[string][]byte, uint64, error) {
	pairs, meta, err := s.client.KV().List(PolicyPrefix, query(ctx, index, wait))
	if err != nil {
		return nil, 0, err
	}
	idx, err := checkMeta(meta)
	if err != nil {
		return nil, 0, err
	}
	out := make(map[string][]byte, len(pairs))
	for _, p := range pairs {
		out[strings.TrimPrefix(p.Key, PolicyPrefix)] = p.Value
	}
	return out, idx, nil
}

// Intentions implements Source. Each entry is kept as the JSON of what
// Consul returned, without its raft indexes (a write of the same content
// is no change).
func (s *ConsulSource) Intentions(ctx context.Context, index uint64, wait time.Duration) (map[string][]byte, uint64, error) {
	entries, meta, err := s.client.ConfigEntries().List(IntentionsKind, query(ctx, index, wait))
	if err != nil {
		return nil, 0, err
	}
	idx, err := checkMeta(meta)
	if err != nil {
		return nil, 0, err
	}
	out := make(map[string][]byte, len(entries))
	for _, e := range entries {
		si, ok := e.(*api.ServiceIntentionsConfigEntry)
		if !ok {
			return nil, 0, fmt.Errorf("consul: %s entry %q decoded as %T", IntentionsKind, e.GetName(), e)
		}
		entry := *si
		entry.CreateIndex, entry.ModifyIndex = 0, 0
		b, err := json.Marshal(&entry)
		if err != nil {
			return nil, 0, fmt.Errorf("consul: %s entry %q: %w", IntentionsKind, si.Name, err)
		}
		out[si.Name] = b
	}
	return out, idx, nil
}

// CA implements Source. A Consul whose Connect is disabled answers with
// no trust domain, and after that only once per wait: nothing changes
// until it restarts.
func (s *ConsulSource) CA(ctx context.Context, index uint64, wait time.Duration) (CA, uint64, error) {
	roots, meta, err := s.client.Connect().CARoots(query(ctx, index, wait))
	if err != nil && strings.Contains(err.Error(), connectDisabled) {
		if index != 0 {
			select {
			case <-ctx.Done():
				return CA{}, 0, ctx.Err()
			case <-time.After(wait):
			}
		}
		return CA{}, 1, nil
	}
	if err != nil {
		return CA{}, 0, err
	}
	idx, err := checkMeta(meta)
	if err != nil {
		return CA{}, 0, err
	}
	ca := CA{TrustDomain: roots.TrustDomain}
	for _, r := range roots.Roots {
		if r.Active {
			ca.RootPEMs = append([]string{r.RootCertPEM}, ca.RootPEMs...)
		} else {
			ca.RootPEMs = append(ca.RootPEMs, r.RootCertPEM)
		}
	}
	return ca, idx, nil
}

// connectDisabled is how Consul answers Connect's endpoints when Connect
// is off (HTTP 500 with this message).
const connectDisabled = "Connect must be enabled"
