package xdsload

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// Topology is what the load tool registers in Consul: services, their
// instances and what each calls. Instances with Sim set get a simulated
// Envoy; the others are only endpoints.
type Topology struct {
	Services []Service
}

// Service is one service of a topology.
type Service struct {
	Name      string
	Upstreams []string
	Instances []Instance
}

// Instance is one registration: a Meshop app (our meta, TTL check) and,
// for Consul's xDS server, its connect-proxy sidecar (alias check on the
// app, so the same TTL flip reaches both servers).
type Instance struct {
	ID string
	// IP is unique per instance (in 127.0.0.0/8), so an endpoint is
	// recognised by its address in either server's load assignments.
	IP  string
	Sim bool
	// Node is the Consul node of a catalog registration (RegisterAppsCatalog).
	Node string
}

// Ports every instance registers (only the addresses differ).
const (
	appPort   = 8080
	proxyPort = 21000
)

// ProxyID is the Consul connect-proxy service ID of an instance.
func ProxyID(instanceID string) string { return instanceID + "-sidecar-proxy" }

// CheckID is the TTL check of an instance's app registration.
func CheckID(instanceID string) string { return "ttl:" + instanceID }

func ip(block, i int) string {
	return fmt.Sprintf("127.%d.%d.%d", block, (i>>8)&255, i&255)
}

// FanIn is the convergence topology: nodes client instances (10 per
// client service), each calling m upstream services of k instances each.
// Every client calls upstream up-0, so a change there touches every node.
func FanIn(nodes, m, k int) Topology {
	var t Topology
	var ups []string
	for j := range m {
		s := Service{Name: "up-" + strconv.Itoa(j)}
		for i := range k {
			s.Instances = append(s.Instances, Instance{ID: fmt.Sprintf("up-%d-%d", j, i), IP: ip(1+j, i)})
		}
		t.Services = append(t.Services, s)
		ups = append(ups, s.Name)
	}
	const perService = 10
	for c := 0; c*perService < nodes; c++ {
		s := Service{Name: "client-" + strconv.Itoa(c), Upstreams: ups}
		for i := c * perService; i < min(nodes, (c+1)*perService); i++ {
			s.Instances = append(s.Instances, Instance{ID: fmt.Sprintf("client-%d-%d", c, i), IP: ip(100, i), Sim: true})
		}
		t.Services = append(t.Services, s)
	}
	return t
}

// Ring is the catalog topology of the memory and cost scenarios:
// services svc-0..svc-(n-1) with k instances each, svc-i calling the
// next m services; the first sims instances get a simulated Envoy.
func Ring(services, k, m, sims int) Topology {
	var t Topology
	at := 0
	for i := range services {
		s := Service{Name: "svc-" + strconv.Itoa(i)}
		for j := 1; j <= m && j < services; j++ {
			s.Upstreams = append(s.Upstreams, "svc-"+strconv.Itoa((i+j)%services))
		}
		for j := range k {
			s.Instances = append(s.Instances, Instance{ID: fmt.Sprintf("svc-%d-%d", i, j), IP: ip(10+at/65536, at%65536), Sim: at < sims, Node: hostNode(at)})
			at++
		}
		t.Services = append(t.Services, s)
	}
	return t
}

// Sims returns the instances that get a simulated Envoy, with their
// service.
func (t Topology) Sims() (out []Sim) {
	for _, s := range t.Services {
		for _, in := range s.Instances {
			if in.Sim {
				out = append(out, Sim{s.Name, in.ID, s.Upstreams})
			}
		}
	}
	return out
}

// Sim is an instance with a simulated Envoy.
type Sim struct {
	Service, ID string
	Upstreams   []string
}

// Endpoints is the number of instances.
func (t Topology) Endpoints() int {
	n := 0
	for _, s := range t.Services {
		n += len(s.Instances)
	}
	return n
}

// Service returns the named service.
func (t Topology) Service(name string) *Service {
	for i := range t.Services {
		if t.Services[i].Name == name {
			return &t.Services[i]
		}
	}
	return nil
}

// consulClient is the part of the Consul API the tool uses.
type consulClient struct{ c *api.Client }

func newConsulClient(addr string) (*consulClient, error) {
	cfg := api.DefaultConfig()
	cfg.Address = addr
	cfg.Transport.MaxIdleConnsPerHost = 64
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	return &consulClient{c}, nil
}

// parallel runs f for every item with a bounded number of workers and
// returns the first error.
func parallel[T any](items []T, workers int, f func(T) error) error {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	ch := make(chan T)
	for range workers {
		wg.Go(func() {
			for it := range ch {
				if err := f(it); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for _, it := range items {
		ch <- it
	}
	close(ch)
	wg.Wait()
	return firstErr
}

type reg struct {
	svc *Service
	in  Instance
}

func (t Topology) regs() []reg {
	var out []reg
	for i := range t.Services {
		for _, in := range t.Services[i].Instances {
			out = append(out, reg{&t.Services[i], in})
		}
	}
	return out
}

// RegisterApps registers every instance as a Meshop app (DESIGN §5 meta)
// with a passing TTL check, and waits until the catalog has them all.
func (c *consulClient) RegisterApps(ctx context.Context, t Topology) error {
	err := parallel(t.regs(), 16, func(r reg) error {
		ups := ""
		for i, u := range r.svc.Upstreams {
			if i > 0 {
				ups += ","
			}
			ups += u
		}
		return c.c.Agent().ServiceRegister(&api.AgentServiceRegistration{
			ID: r.in.ID, Name: r.svc.Name, Address: r.in.IP, Port: appPort, Tags: []string{"v1"},
			Meta: map[string]string{"mesh_protocol": "http", "mesh_upstreams": ups,
				"mesh_app_port": strconv.Itoa(appPort), "version": "v1"},
			Check: &api.AgentServiceCheck{CheckID: CheckID(r.in.ID), TTL: "720h", Status: api.HealthPassing,
				DeregisterCriticalServiceAfter: "720h"},
		})
	})
	if err != nil {
		return fmt.Errorf("register apps: %w", err)
	}
	return c.waitPassing(ctx, t.Endpoints(), 0)
}

// RegisterProxies registers a Consul connect-proxy sidecar for every
// instance: Consul's load assignments list these (the apps are behind
// them), with an alias check that follows the app's TTL check as a
// sidecar_service registration would.
func (c *consulClient) RegisterProxies(ctx context.Context, t Topology) error {
	err := parallel(t.regs(), 16, func(r reg) error {
		var ups []api.Upstream
		for i, u := range r.svc.Upstreams {
			ups = append(ups, api.Upstream{DestinationType: api.UpstreamDestTypeService, DestinationName: u,
				LocalBindAddress: "127.0.0.1", LocalBindPort: 9000 + i})
		}
		return c.c.Agent().ServiceRegister(&api.AgentServiceRegistration{
			Kind: api.ServiceKindConnectProxy, ID: ProxyID(r.in.ID), Name: r.svc.Name + "-sidecar-proxy",
			Address: r.in.IP, Port: proxyPort,
			Proxy: &api.AgentServiceConnectProxyConfig{
				DestinationServiceName: r.svc.Name, DestinationServiceID: r.in.ID,
				LocalServiceAddress: "127.0.0.1", LocalServicePort: appPort, Upstreams: ups,
			},
			Checks: api.AgentServiceChecks{{CheckID: "alias:" + r.in.ID, Name: "Destination service alias", AliasService: r.in.ID}},
		})
	})
	if err != nil {
		return fmt.Errorf("register proxies: %w", err)
	}
	return c.waitPassing(ctx, 2*t.Endpoints(), 0)
}

// DeregisterProxies removes the connect-proxy registrations.
func (c *consulClient) DeregisterProxies(ctx context.Context, t Topology) error {
	err := parallel(t.regs(), 16, func(r reg) error { return c.c.Agent().ServiceDeregister(ProxyID(r.in.ID)) })
	if err != nil {
		return err
	}
	return c.waitPassing(ctx, t.Endpoints(), 0)
}

// DeregisterApps removes the app registrations.
func (c *consulClient) DeregisterApps(ctx context.Context, t Topology) error {
	err := parallel(t.regs(), 16, func(r reg) error { return c.c.Agent().ServiceDeregister(r.in.ID) })
	if err != nil {
		return err
	}
	return c.waitPassing(ctx, 0, 0)
}

// waitPassing waits until the catalog holds exactly want passing service
// checks (and critical of them critical).
func (c *consulClient) waitPassing(ctx context.Context, want, critical int) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	var index uint64
	var got, crit int
	for {
		checks, meta, err := c.c.Health().State(api.HealthAny, (&api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Second}).WithContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("catalog has %d passing and %d critical service checks, want %d and %d: %w", got, crit, want, critical, ctx.Err())
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		index = meta.LastIndex
		got, crit = 0, 0
		for _, ch := range checks {
			if ch.ServiceID == "" {
				continue
			}
			switch ch.Status {
			case api.HealthPassing:
				got++
			case api.HealthCritical:
				crit++
			}
		}
		if got == want && crit == critical {
			return nil
		}
	}
}

// SetHealth flips an instance's app TTL check.
func (c *consulClient) SetHealth(id string, passing bool) error {
	status, note := api.HealthPassing, "xdsload: passing"
	if !passing {
		status, note = api.HealthCritical, "xdsload: critical"
	}
	return c.c.Agent().UpdateTTL(CheckID(id), note, status)
}

// PutPolicy writes a Meshop mesh policy with the given connect timeout.
func (c *consulClient) PutPolicy(service string, connectTimeout time.Duration) error {
	body := fmt.Sprintf(`{"comment":"xdsload","connect_timeout":%q}`, connectTimeout.String())
	_, err := c.c.KV().Put(&api.KVPair{Key: "mesh/policy/" + service, Value: []byte(body)}, nil)
	return err
}

// PutResolver writes a Consul service-resolver with the given connect
// timeout: the equivalent change for Consul's xDS server.
func (c *consulClient) PutResolver(service string, connectTimeout time.Duration) error {
	ok, _, err := c.c.ConfigEntries().Set(&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: service,
		ConnectTimeout: connectTimeout}, nil)
	if err == nil && !ok {
		err = errors.New("service-resolver not written")
	}
	return err
}

// HTTPProtocol makes every Consul proxy speak HTTP (proxy-defaults), as
// Meshop's sidecars do, so both servers generate HTTP routes.
func (c *consulClient) HTTPProtocol() error {
	ok, _, err := c.c.ConfigEntries().Set(&api.ProxyConfigEntry{Kind: api.ProxyDefaults, Name: api.ProxyConfigGlobal,
		Config: map[string]any{"protocol": "http"}}, nil)
	if err == nil && !ok {
		err = errors.New("proxy-defaults not written")
	}
	return err
}

// hostNode is the Consul node the catalog scenario registers an instance
// on, through the catalog API (as an external health checker such as
// consul-esm does), hostSize instances per node as on a busy host.
// Registering ten thousand services through one agent makes its
// anti-entropy sync quadratic, and so does registering them all on one
// node (Consul reads every check of the node for each registration's
// health event): either would measure Consul's registration, not the
// xDS servers.
func hostNode(instance int) string { return "xdsload-host-" + strconv.Itoa(instance/hostSize) }

const hostSize = 50

// RegisterAppsCatalog registers every instance as a Meshop app on its
// Node with a passing check, and waits for the catalog.
func (c *consulClient) RegisterAppsCatalog(ctx context.Context, t Topology) error {
	err := parallel(t.regs(), 16, func(r reg) error {
		ups := strings.Join(r.svc.Upstreams, ",")
		_, err := c.c.Catalog().Register(&api.CatalogRegistration{
			Node: r.in.Node, Address: "127.0.0.1",
			Service: &api.AgentService{ID: r.in.ID, Service: r.svc.Name, Address: r.in.IP, Port: appPort, Tags: []string{"v1"},
				Meta: map[string]string{"mesh_protocol": "http", "mesh_upstreams": ups,
					"mesh_app_port": strconv.Itoa(appPort), "version": "v1"}},
			Check: &api.AgentCheck{Node: r.in.Node, CheckID: CheckID(r.in.ID), Name: "xdsload", Status: api.HealthPassing, ServiceID: r.in.ID},
		}, nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("register apps in the catalog: %w", err)
	}
	return c.waitPassing(ctx, t.Endpoints(), 0)
}

// SetHealthCatalog sets the status of an instance registered by
// RegisterAppsCatalog.
func (c *consulClient) SetHealthCatalog(in Instance, passing bool) error {
	status := api.HealthPassing
	if !passing {
		status = api.HealthCritical
	}
	_, err := c.c.Catalog().Register(&api.CatalogRegistration{Node: in.Node, Address: "127.0.0.1", SkipNodeUpdate: true,
		Check: &api.AgentCheck{Node: in.Node, CheckID: CheckID(in.ID), Name: "xdsload", Status: status, ServiceID: in.ID}}, nil)
	return err
}

// DeregisterCatalog removes the nodes of t's instances and everything on
// them.
func (c *consulClient) DeregisterCatalog(ctx context.Context, t Topology) error {
	nodes := map[string]bool{}
	for _, r := range t.regs() {
		nodes[r.in.Node] = true
	}
	var list []string
	for n := range nodes {
		list = append(list, n)
	}
	err := parallel(list, 16, func(n string) error {
		_, err := c.c.Catalog().Deregister(&api.CatalogDeregistration{Node: n}, nil)
		return err
	})
	if err != nil {
		return err
	}
	return c.waitPassing(ctx, 0, 0)
}
