// Package xdsload measures xDS servers under load: Meshop's control plane
// and, side by side in the same run, the xDS server built into Consul.
//
//	Consul (one server, catalog for both) ◀── register the topology twice:
//	   │                                         Meshop apps (mesh_* meta, TTL check)
//	   │                                         connect-proxy sidecars (alias check → app)
//	   ├── blocking queries ──▶ Meshop control plane (binary) ──ADS──▶ N simulated Envoys (delta, SotW)
//	   └── Consul's own xDS (gRPC port, delta) ──────────────ADS──▶ N simulated Envoys (delta)
//
// Each server is measured alone on the machine: Meshop's while no proxy
// is registered (so Consul's proxycfg does no work), Consul's after the
// control plane has stopped. A change starts at a known instant: a TTL
// check flipped through the agent API, a KV policy (Meshop) or
// service-resolver (Consul) written. Scenarios per N: initial connect,
// reconnect storm, EDS convergence, config fan-out, memory idle and
// connected. The catalog scenario (Meshop only) measures memory per
// endpoint and the CPU cost of one change at two catalog sizes.
package xdsload

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Server names in reports.
const (
	MeshopDelta = "meshop-delta"
	MeshopSotW  = "meshop-sotw"
	// ConsulDelta is Consul's xDS server at its default update rate,
	// ConsulDeltaMax with xds.update_max_per_second unlimited.
	ConsulDelta    = "consul-delta"
	ConsulDeltaMax = "consul-delta-max"
)

// Options configure a run.
type Options struct {
	// Dir holds Consul's data, logs and profiles.
	Dir string
	// Nodes are the fleet sizes N of the convergence scenarios.
	Nodes []int
	// Upstreams (M) each node's service calls, Instances (K) per upstream.
	Upstreams, Instances int
	// Rounds of each change scenario per fleet.
	Rounds int
	// Settle is the pause between scenarios, so one change's debounce
	// window never overlaps the next.
	Settle time.Duration
	// Timeout bounds every wait for a fleet to converge.
	Timeout time.Duration
	// Servers to measure (MeshopDelta, MeshopSotW, ConsulDelta,
	// ConsulDeltaMax).
	Servers []string
	// ConsulMaxNodes skips Consul's servers at fleets larger than this
	// (0: no limit): at its default rate Consul needs N/250 seconds per
	// change, too long for the suite's budget at the largest N.
	ConsulMaxNodes int
	// ControlPlaneBin is Meshop's control plane binary; empty runs its
	// stages in this process (no memory figures then).
	ControlPlaneBin string
	// Catalog are the sizes of the catalog scenario (each service calling
	// 3 others); empty skips it. Two sizes with the same services give
	// the memory per endpoint, two with the same instances per service
	// the memory per service.
	Catalog []CatalogSize
	// CatalogSims is how many of the catalog's instances get an Envoy.
	CatalogSims int
	// CostFlips is how many health flips the cost-of-one-change figure
	// averages over.
	CostFlips int
	// Profile, when set, takes CPU profiles of the servers during an extra
	// (unmeasured) storm and EDS round at the largest N into Dir.
	Profile bool
	// Log receives progress lines.
	Log io.Writer
}

// Report is everything one run measured.
type Report struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Machine  Machine   `json:"machine"`
	Method   Method    `json:"method"`
	Fleets   []Fleet   `json:"fleets"`
	Catalog  []Catalog `json:"catalog,omitempty"`
	// Profiles are the CPU profiles taken, by name.
	Profiles map[string]string `json:"profiles,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs      int    `json:"cpus"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	CPUModel  string `json:"cpu_model"`
	MemTotal  string `json:"mem_total"`
	Consul    string `json:"consul"`
}

// Method records the parameters of the run.
type Method struct {
	Nodes     []int    `json:"nodes"`
	Upstreams int      `json:"upstreams"`
	Instances int      `json:"instances"`
	Rounds    int      `json:"rounds"`
	SettleMs  int64    `json:"settle_ms"`
	Servers   []string `json:"servers"`
	// ConsulMaxNodes: Consul's servers were skipped at larger fleets.
	ConsulMaxNodes int           `json:"consul_max_nodes,omitempty"`
	ControlPlane   string        `json:"control_plane"` // "binary" or "in-process"
	Catalog        []CatalogSize `json:"catalog,omitempty"`
	CatalogSims    int           `json:"catalog_sims,omitempty"`
	CostFlips      int           `json:"cost_flips,omitempty"`
}

// Fleet is one server measured with N simulated Envoys.
type Fleet struct {
	Server    string `json:"server"`
	Nodes     int    `json:"nodes"`
	Endpoints int    `json:"endpoints"`
	// Connect: every node connects for the first time; Storm: all
	// reconnect at once. Per node: time to its whole configuration ACKed.
	Connect Distribution `json:"connect"`
	Storm   Distribution `json:"storm"`
	// EDS: an upstream instance goes critical; per node, time until the
	// endpoint is gone from its ACKed load assignment (all rounds pooled).
	// Restore: it passes again.
	EDS     Distribution `json:"eds"`
	Restore Distribution `json:"restore"`
	// FanOut: a config change to up-0 every node depends on (connect
	// timeout: Meshop policy / Consul service-resolver).
	FanOut []FanOutRound `json:"fanout"`
	// Idle is the server's memory with the topology registered and no
	// Envoy connected, Connected with all N connected.
	Idle      Memory   `json:"idle"`
	Connected Memory   `json:"connected"`
	Errors    []string `json:"errors,omitempty"`
}

// FanOutRound is one config change reaching every node.
type FanOutRound struct {
	Nodes         int     `json:"nodes"`
	Missed        int     `json:"missed,omitempty"`
	SecondsToAll  float64 `json:"seconds_to_all"`
	UpdatesPerSec float64 `json:"updates_per_sec"`
	P50Ms         float64 `json:"p50_ms"`
}

// CatalogSize is one size of the catalog scenario.
type CatalogSize struct {
	Services  int `json:"services"`
	Instances int `json:"instances"` // per service
}

func (c CatalogSize) String() string { return fmt.Sprintf("%dx%d", c.Services, c.Instances) }

// Catalog is the catalog scenario at one size (Meshop only).
type Catalog struct {
	Server    string `json:"server"`
	Services  int    `json:"services"`
	Instances int    `json:"instances"` // per service
	Endpoints int    `json:"endpoints"`
	Sims      int    `json:"sims"`
	Idle      Memory `json:"idle"`
	Connected Memory `json:"connected"`
	// ChangeCPUMs is the server's CPU time per health flip of one
	// instance (idle CPU subtracted), over Flips flips.
	// Missing counts the services the control plane's mesh model does
	// not hold with all their instances passing once Envoys connected
	// (binary control plane only; -1 when not read).
	Missing     int          `json:"missing"`
	ChangeCPUMs float64      `json:"change_cpu_ms"`
	Flips       int          `json:"flips"`
	Change      Distribution `json:"change"`
	Errors      []string     `json:"errors,omitempty"`
}

func (o *Options) defaults() {
	if o.Upstreams == 0 {
		o.Upstreams = 3
	}
	if o.Instances == 0 {
		o.Instances = 10
	}
	if o.Rounds == 0 {
		o.Rounds = 3
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	if len(o.Servers) == 0 {
		o.Servers = []string{MeshopDelta, MeshopSotW, ConsulDelta, ConsulDeltaMax}
	}
	if o.CostFlips == 0 {
		o.CostFlips = 10
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
}

type runner struct {
	o       Options
	consul  *Consul
	cc      *consulClient
	report  *Report
	timeout int // connect-timeout counter: every fan-out round writes a new value
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.o.Log, "%s xdsload: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// Run starts Consul, runs every scenario and returns the report.
func Run(ctx context.Context, o Options) (*Report, error) {
	o.defaults()
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	r := &runner{o: o, report: &Report{Started: time.Now(), Profiles: map[string]string{}}}
	r.report.Machine = machine()
	r.report.Method = Method{Nodes: o.Nodes, Upstreams: o.Upstreams, Instances: o.Instances, Rounds: o.Rounds,
		SettleMs: o.Settle.Milliseconds(), Servers: o.Servers, ConsulMaxNodes: o.ConsulMaxNodes, ControlPlane: "binary", Catalog: o.Catalog,
		CatalogSims: o.CatalogSims, CostFlips: o.CostFlips}
	if o.ControlPlaneBin == "" {
		r.report.Method.ControlPlane = "in-process"
	}
	var err error
	r.logf("starting consul")
	if r.consul, err = StartConsul(ctx, filepath.Join(o.Dir, "consul")); err != nil {
		return nil, err
	}
	defer r.consul.stop()
	if r.cc, err = newConsulClient(r.consul.HTTPAddr); err != nil {
		return nil, err
	}
	if err := r.cc.HTTPProtocol(); err != nil {
		return nil, err
	}
	for i, n := range o.Nodes {
		if err := r.fleets(ctx, n, o.Profile && i == len(o.Nodes)-1); err != nil {
			return r.report, fmt.Errorf("N=%d: %w", n, err)
		}
	}
	for _, size := range o.Catalog {
		if err := r.catalog(ctx, size); err != nil {
			return r.report, fmt.Errorf("catalog %s: %w", size, err)
		}
	}
	r.report.Finished = time.Now()
	return r.report, nil
}

// meshop starts Meshop's control plane (binary or in-process).
func (r *runner) meshop(ctx context.Context) (server, func(), error) {
	if r.o.ControlPlaneBin == "" {
		p, err := startInProcess(r.consul)
		if err != nil {
			return nil, nil, err
		}
		return p, p.stop, nil
	}
	cp, err := StartControlPlane(ctx, r.o.ControlPlaneBin, r.consul, r.o.Dir)
	if err != nil {
		return nil, nil, err
	}
	return binaryServer{cp}, cp.stop, nil
}

func (r *runner) fleets(ctx context.Context, n int, profile bool) error {
	topo := FanIn(n, r.o.Upstreams, r.o.Instances)
	r.logf("N=%d: registering %d apps", n, topo.Endpoints())
	if err := r.cc.RegisterApps(ctx, topo); err != nil {
		return err
	}
	if err := r.cc.PutPolicy("up-0", time.Second); err != nil {
		return err
	}
	var (
		cp     server
		stopCP func()
	)
	defer func() {
		if stopCP != nil {
			stopCP()
		}
	}()
	proxies := false // Consul's connect-proxies registered
	var consulIdle *Memory
	for _, name := range r.o.Servers {
		var (
			s     server
			fl    flavor
			delta = true
		)
		if (name == ConsulDelta || name == ConsulDeltaMax) && r.o.ConsulMaxNodes > 0 && n > r.o.ConsulMaxNodes {
			r.logf("N=%d: %s skipped (over -consul-max-nodes %d)", n, name, r.o.ConsulMaxNodes)
			continue
		}
		switch name {
		case MeshopDelta, MeshopSotW:
			// A fresh process per mode, so each one's memory is its own
			// (go-control-plane keeps a status entry per node after its
			// stream ends).
			if stopCP != nil {
				stopCP()
			}
			var err error
			r.logf("N=%d: starting meshop control plane", n)
			if cp, stopCP, err = r.meshop(ctx); err != nil {
				return err
			}
			s, fl, delta = cp, flavorMeshop, name == MeshopDelta
		case ConsulDelta, ConsulDeltaMax:
			if stopCP != nil { // measured alone
				stopCP()
				stopCP = nil
			}
			if !proxies {
				r.logf("N=%d: registering %d connect-proxies", n, topo.Endpoints())
				if err := r.cc.RegisterProxies(ctx, topo); err != nil {
					return err
				}
				proxies = true
			}
			rate := float64(ConsulDefaultXDSRate)
			if name == ConsulDeltaMax {
				rate = ConsulUnlimitedXDSRate
			}
			if err := r.consul.SetXDSRate(ctx, rate); err != nil {
				return err
			}
			s, fl = consulServer{r.consul}, flavorConsul
		default:
			return fmt.Errorf("unknown server %q", name)
		}
		res, err := r.fleet(ctx, name, s, fl, delta, topo, profile, consulIdle)
		if fl == flavorConsul && consulIdle == nil {
			// Consul's second setting runs in the same process after the
			// first, whose caches a GC does not all return at once: its
			// idle reading would be the first run's leftovers. Both use
			// the reading taken before Consul served any Envoy.
			consulIdle = &res.Idle
		}
		r.report.Fleets = append(r.report.Fleets, res)
		if err != nil {
			return err
		}
	}
	if proxies {
		if err := r.cc.DeregisterProxies(ctx, topo); err != nil {
			return err
		}
	}
	if stopCP != nil {
		stopCP()
		stopCP = nil
	}
	r.logf("N=%d: deregistering", n)
	return r.cc.DeregisterApps(ctx, topo)
}

func (r *runner) settle() { time.Sleep(r.o.Settle) }

// fleet measures one server with topo's simulated Envoys. idle, when
// set, is the server's idle memory read earlier (otherwise it is read
// first).
func (r *runner) fleet(ctx context.Context, name string, s server, fl flavor, delta bool, topo Topology, profile bool, idle *Memory) (Fleet, error) {
	k := r.o.Instances
	res := Fleet{Server: name, Nodes: len(topo.Sims()), Endpoints: r.o.Upstreams * k}
	note := func(what string, missed int, err error) {
		if missed > 0 || err != nil {
			msg := fmt.Sprintf("%s: %d of %d nodes did not converge within %s", what, missed, res.Nodes, r.o.Timeout)
			if err != nil {
				msg += fmt.Sprintf(" (%v)", err)
			}
			res.Errors = append(res.Errors, msg)
			r.logf("%s N=%d: %s", name, res.Nodes, msg)
		}
	}
	var err error
	if idle != nil {
		res.Idle = *idle
	} else if res.Idle, err = s.memory(ctx); err != nil {
		return res, fmt.Errorf("memory: %w", err)
	}
	f := newFleet(topo, s.xdsAddr(), fl, delta)
	defer f.close()

	r.logf("%s N=%d: connect", name, res.Nodes)
	lat, missed, err := f.waitGoal(ctx, r.o.Timeout, complete(k), f.connect)
	res.Connect = distribution(lat, missed, false)
	note("connect", missed, err)
	if missed == res.Nodes {
		return res, fmt.Errorf("no node got its configuration: %v", err)
	}
	r.settle()
	if res.Connected, err = s.memory(ctx); err != nil {
		return res, fmt.Errorf("memory: %w", err)
	}
	if profile {
		r.heapProfile(ctx, s, fmt.Sprintf("%s-%d", name, res.Nodes))
	}

	r.logf("%s N=%d: reconnect storm", name, res.Nodes)
	f.close()
	r.settle()
	lat, missed, err = f.waitGoal(ctx, r.o.Timeout, complete(k), f.connect)
	res.Storm = distribution(lat, missed, true)
	note("storm", missed, err)
	r.settle()

	up := topo.Service("up-0")
	var eds, restore []time.Duration
	var edsMissed, restoreMissed int
	for round := range r.o.Rounds {
		victim := up.Instances[round%len(up.Instances)]
		r.logf("%s N=%d: eds round %d (%s critical)", name, res.Nodes, round+1, victim.ID)
		lat, missed, err := f.waitGoal(ctx, r.o.Timeout, endpointsOf("up-0", victim.IP, false, k-1), func() (time.Time, error) {
			t0 := time.Now()
			return t0, r.cc.SetHealth(victim.ID, false)
		})
		eds, edsMissed = append(eds, lat...), edsMissed+missed
		note("eds", missed, err)
		r.settle()
		lat, missed, err = f.waitGoal(ctx, r.o.Timeout, endpointsOf("up-0", victim.IP, true, k), func() (time.Time, error) {
			t0 := time.Now()
			return t0, r.cc.SetHealth(victim.ID, true)
		})
		restore, restoreMissed = append(restore, lat...), restoreMissed+missed
		note("restore", missed, err)
		r.settle()
	}
	res.EDS = distribution(eds, edsMissed, true)
	res.Restore = distribution(restore, restoreMissed, false)

	for round := range r.o.Rounds {
		r.timeout++
		d := time.Duration(11+r.timeout%40) * time.Second
		r.logf("%s N=%d: fan-out round %d (connect timeout %s)", name, res.Nodes, round+1, d)
		lat, missed, err := f.waitGoal(ctx, r.o.Timeout, connectTimeout("up-0", d), func() (time.Time, error) {
			t0 := time.Now()
			if fl == flavorConsul {
				return t0, r.cc.PutResolver("up-0", d)
			}
			return t0, r.cc.PutPolicy("up-0", d)
		})
		note("fan-out", missed, err)
		fo := FanOutRound{Nodes: len(lat), Missed: missed}
		if len(lat) > 0 {
			fo.SecondsToAll = lat[len(lat)-1].Seconds()
			fo.P50Ms = distribution(lat, 0, false).P50
			if fo.SecondsToAll > 0 {
				fo.UpdatesPerSec = float64(len(lat)) / fo.SecondsToAll
			}
		}
		res.FanOut = append(res.FanOut, fo)
		r.settle()
	}

	if profile {
		r.profileRound(ctx, name, s, f, k, up)
	}
	return res, nil
}

// profileRound runs one storm and one EDS flip while the server's CPU
// profile is taken (not measured: profiling costs CPU).
func (r *runner) profileRound(ctx context.Context, name string, s server, f *fleet, k int, up *Service) {
	base := ""
	switch s := s.(type) {
	case binaryServer:
		base = s.cp.DebugURL
	case consulServer:
		base = "http://" + s.c.HTTPAddr
	default:
		return
	}
	const seconds = 20
	path := filepath.Join(r.o.Dir, name+".cpu.pprof")
	done := make(chan error, 1)
	go func() { done <- fetch(ctx, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, seconds), path) }()
	start := time.Now()
	time.Sleep(200 * time.Millisecond)
	r.logf("%s: profiling a storm and an EDS round", name)
	f.close()
	_, _, _ = f.waitGoal(ctx, seconds*time.Second, complete(k), f.connect)
	victim := up.Instances[0]
	_, _, _ = f.waitGoal(ctx, seconds*time.Second, endpointsOf("up-0", victim.IP, false, k-1), func() (time.Time, error) {
		return time.Now(), r.cc.SetHealth(victim.ID, false)
	})
	_ = r.cc.SetHealth(victim.ID, true)
	if err := <-done; err != nil {
		r.logf("%s: profile: %v", name, err)
		return
	}
	r.report.Profiles[name] = path
	r.logf("%s: profile of %s written to %s", name, time.Since(start).Round(time.Second), path)
	_, _, _ = f.waitGoal(ctx, r.o.Timeout, endpointsOf("up-0", victim.IP, true, k), func() (time.Time, error) { return time.Now(), nil })
}

func fetch(ctx context.Context, url, path string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: status %d", url, resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	return err
}

// catalog measures Meshop's control plane with a large catalog: memory
// with and without connected Envoys, and the CPU cost of one change.
func (r *runner) catalog(ctx context.Context, size CatalogSize) error {
	k := size.Instances
	topo := Ring(size.Services, k, 3, r.o.CatalogSims)
	res := Catalog{Server: MeshopDelta, Services: size.Services, Instances: k, Endpoints: topo.Endpoints(), Sims: len(topo.Sims())}
	r.logf("catalog %s: registering %d apps", size, topo.Endpoints())
	if err := r.cc.RegisterAppsCatalog(ctx, topo); err != nil {
		return err
	}
	s, stop, err := r.meshop(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	r.settle()
	if res.Idle, err = s.memory(ctx); err != nil {
		return err
	}
	if r.o.Profile {
		r.heapProfile(ctx, s, "catalog-"+size.String()+"-idle")
	}
	f := newFleet(topo, s.xdsAddr(), flavorMeshop, true)
	defer f.close()
	r.logf("catalog %s: connecting %d envoys", size, len(f.nodes))
	_, missed, err := f.waitGoal(ctx, r.o.Timeout, complete(k), f.connect)
	if missed > 0 {
		res.Errors = append(res.Errors, fmt.Sprintf("connect: %d nodes missed (%v)", missed, err))
	}
	r.settle()
	if res.Connected, err = s.memory(ctx); err != nil {
		return err
	}
	res.Missing = -1
	if b, ok := s.(binaryServer); ok {
		if res.Missing, err = missingServices(ctx, b.cp.DebugURL, topo); err != nil {
			return err
		}
		if res.Missing > 0 {
			res.Errors = append(res.Errors, fmt.Sprintf("%d of %d services missing from the control plane's model", res.Missing, size.Services))
		}
	}
	if r.o.Profile {
		r.heapProfile(ctx, s, "catalog-"+size.String())
	}

	// One change: svc-3's first instance flips; its callers (svc-0..2,
	// connected) must see it. CPU is read around each flip, with the
	// server's idle rate subtracted.
	victim := topo.Service("svc-3").Instances[0]
	callers := f.callers("svc-3")
	idle0, _ := s.cpu()
	idleStart := time.Now()
	time.Sleep(2 * time.Second)
	idle1, _ := s.cpu()
	idleRate := float64(idle1-idle0) / float64(time.Since(idleStart))
	var lat []time.Duration
	var total time.Duration
	window := max(time.Second, r.o.Settle)
	for i := range r.o.CostFlips {
		passing := i%2 == 1
		c0, _ := s.cpu()
		var t0 time.Time
		l, m, err := callers.waitGoal(ctx, r.o.Timeout, endpointsOf("svc-3", victim.IP, passing, map[bool]int{true: k, false: k - 1}[passing]), func() (time.Time, error) {
			t0 = time.Now()
			return t0, r.cc.SetHealthCatalog(victim, passing)
		})
		if m > 0 {
			res.Errors = append(res.Errors, fmt.Sprintf("change %d: %d callers missed (%v)", i, m, err))
		}
		lat = append(lat, l...)
		time.Sleep(time.Until(t0.Add(window))) // the server is done with this change
		c1, _ := s.cpu()
		total += c1 - c0 - time.Duration(idleRate*float64(time.Since(t0)))
	}
	res.Flips = r.o.CostFlips
	res.ChangeCPUMs = float64(total.Microseconds()) / 1000 / float64(r.o.CostFlips)
	res.Change = distribution(lat, 0, false)
	r.report.Catalog = append(r.report.Catalog, res)
	f.close()
	stop()
	stop = nil
	r.logf("catalog %s: deregistering", size)
	return r.cc.DeregisterCatalog(ctx, topo)
}

// heapProfile writes the heap profile of a Meshop binary server (after a
// forced GC) as <name>.heap.pprof.
func (r *runner) heapProfile(ctx context.Context, s server, name string) {
	b, ok := s.(binaryServer)
	if !ok {
		return
	}
	path := filepath.Join(r.o.Dir, name+".heap.pprof")
	if err := fetch(ctx, b.cp.DebugURL+"/debug/pprof/heap?gc=1", path); err != nil {
		r.logf("%s: heap profile: %v", name, err)
		return
	}
	r.report.Profiles[name+"-heap"] = path
}

// missingServices counts the services of topo that the control plane at
// debugURL does not hold with every instance passing (GET /debug/model).
func missingServices(ctx context.Context, debugURL string, topo Topology) (int, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, debugURL+"/debug/model", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s/debug/model: status %d", debugURL, resp.StatusCode)
	}
	var m struct {
		Services map[string]struct {
			Instances []struct{ Status string }
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		return 0, fmt.Errorf("%s/debug/model: %w", debugURL, err)
	}
	missing := 0
	for _, svc := range topo.Services {
		passing := 0
		for _, in := range m.Services[svc.Name].Instances {
			if in.Status == "passing" {
				passing++
			}
		}
		if passing != len(svc.Instances) {
			missing++
		}
	}
	return missing, nil
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH, Consul: consulVersion()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPUModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		m.MemTotal = strings.Join(strings.Fields(strings.TrimPrefix(line, "MemTotal:")), " ")
	}
	return m
}

// Servers returns the servers of a report in a stable order.
func (rep *Report) Servers() []string {
	var out []string
	for _, f := range rep.Fleets {
		if !slices.Contains(out, f.Server) {
			out = append(out, f.Server)
		}
	}
	return out
}
