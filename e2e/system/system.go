// Package system starts the whole local Meshop system as real processes:
// Consul and Jaeger (localenv), NATS with JetStream embedded in this
// process, the control plane, then each service built from this workspace,
// with SQLite, each registered in Consul. Without Envoy the services run
// proxyless (DESIGN §8): each gets a gRPC xDS bootstrap naming its
// instance and the control plane, so grpc-go's xDS client in every app
// executes what the control plane serves. `make run` starts it on the
// fixed local port plan; system tests start it on free ports.
//
//	Start ──▶ build binaries ──▶ Consul ──▶ Jaeger ──▶ NATS ──▶ control plane ──▶ services (wait /ready)
//	Stop  ──▶ services (SIGTERM: drain, deregister) ──▶ control plane ──▶ NATS ──▶ Jaeger ──▶ Consul
//
// Proxyless, there is no edge: API clients call the apps' HTTP ports
// (printed in the plan). The control plane still keeps every sidecar's and
// the edge's configuration ready: /debug/config_dump shows what each would
// get.
package system

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshop/meshop/localenv"
	"github.com/meshop/meshop/services/kit/rpc"
	"github.com/meshop/meshop/services/kit/workload"
)

// Services in start order.
var Services = []string{"user", "auth", "product", "payment", "order", "notification"}

// Plan is the port plan of one local system.
type Plan struct {
	Consul localenv.ConsulOptions
	Jaeger localenv.JaegerOptions
	NATS   localenv.NATSOptions
	// ControlPlaneXDS and ControlPlaneDebug are the control plane's ADS
	// (gRPC) and debug HTTP ports.
	ControlPlaneXDS, ControlPlaneDebug int
	Services                           map[string]int // app HTTP port per service
	GRPC                               map[string]int // app gRPC port per service

	// Envoy, when set, is the envoy binary: every service then runs in
	// sidecar mode behind its own Envoy (ports in Sidecars) and an edge
	// Envoy serves the API on Edge. Empty means proxyless mode.
	Envoy                        string
	Sidecars                     map[string]SidecarPorts
	Edge, EdgeAdmin, EdgeMetrics int

	// Env is added to every service's environment (after the plan's own
	// settings, so it may override them), e.g. OTEL_TRACES_SAMPLER_ARG.
	Env []string
	// Plaintext turns the control plane's MESH_MTLS off: no mutual TLS
	// and no intentions between the apps (a benchmark's baseline).
	Plaintext bool
}

// FixedPlan is the port plan of `make run` (DESIGN §7 where it can be kept
// on one host; the apps get 81xx since the edge owns 8080).
func FixedPlan(dir string) Plan {
	return Plan{
		Consul: localenv.ConsulOptions{Dir: filepath.Join(dir, "consul"), HTTPPort: 8500, ServerPort: 8300, SerfLANPort: 8301, GRPCPort: 8502},
		Jaeger: localenv.JaegerOptions{Dir: filepath.Join(dir, "jaeger"), OTLPGRPCPort: 4317, OTLPHTTPPort: 4318,
			UIPort: 16686, QueryGRPCPort: 16685, HealthPort: 13133},
		// 14222, not 4222: a machine may run its own NATS on the default port.
		NATS:            localenv.NATSOptions{Dir: filepath.Join(dir, "nats"), Port: 14222},
		ControlPlaneXDS: 18000, ControlPlaneDebug: 18080,
		Services: map[string]int{"auth": 8101, "user": 8102, "product": 8103, "order": 8104, "payment": 8105, "notification": 8106},
		GRPC:     map[string]int{"auth": 9101, "user": 9102, "product": 9103, "order": 9104, "payment": 9105, "notification": 9106},
		// Sidecars: inbound 151xx, egress 152xx, expose 154xx, admin 153xx,
		// metrics 155xx, xx as the app's 81xx.
		Sidecars: map[string]SidecarPorts{
			"auth": {15101, 15201, 15401, 15301, 15501}, "user": {15102, 15202, 15402, 15302, 15502},
			"product": {15103, 15203, 15403, 15303, 15503}, "order": {15104, 15204, 15404, 15304, 15504},
			"payment": {15105, 15205, 15405, 15305, 15505}, "notification": {15106, 15206, 15406, 15306, 15506},
		},
		Edge: 8080, EdgeAdmin: 9901, EdgeMetrics: 15090,
	}
}

// FreePlan picks free ports for every part.
func FreePlan(dir string) (Plan, error) {
	ports, err := localenv.FreePorts(15 + 7*len(Services))
	if err != nil {
		return Plan{}, err
	}
	p := Plan{
		Consul: localenv.ConsulOptions{Dir: filepath.Join(dir, "consul"), HTTPPort: ports[0], ServerPort: ports[1], SerfLANPort: ports[2], GRPCPort: ports[3]},
		Jaeger: localenv.JaegerOptions{Dir: filepath.Join(dir, "jaeger"), OTLPGRPCPort: ports[4], OTLPHTTPPort: ports[5],
			UIPort: ports[6], QueryGRPCPort: ports[7], HealthPort: ports[8]},
		NATS:            localenv.NATSOptions{Dir: filepath.Join(dir, "nats"), Port: ports[9]},
		ControlPlaneXDS: ports[10], ControlPlaneDebug: ports[11],
		Edge: ports[12], EdgeAdmin: ports[13], EdgeMetrics: ports[14],
		Services: map[string]int{}, GRPC: map[string]int{}, Sidecars: map[string]SidecarPorts{},
	}
	for i, svc := range Services {
		at := 15 + 7*i
		p.Services[svc] = ports[at]
		p.Sidecars[svc] = SidecarPorts{Inbound: ports[at+1], Outbound: ports[at+2], Expose: ports[at+3], Admin: ports[at+4], Metrics: ports[at+5]}
		p.GRPC[svc] = ports[at+6]
	}
	return p, nil
}

// System is a running local system.
type System struct {
	Plan   Plan
	Dir    string
	Consul *localenv.Consul
	Jaeger *localenv.Jaeger
	NATS   *localenv.NATS
	// ControlPlane is the xDS control plane process.
	ControlPlane *localenv.Process
	edge         *localenv.Process // sidecar mode only

	mu        sync.Mutex
	instances map[string]*Instance // by instance ID
	binDir    string
	// authKey is auth's AUTH_KEY_ENCRYPTION_KEY, kept in the run's
	// directory: the signing keys in auth's database open after a restart.
	authKey string
}

// forgetPreviousRun deregisters every service instance the system's
// Consul still holds (issue 12): the local Consul keeps its data across
// runs and instance IDs are fixed, so a previous run's auth-local would
// otherwise show as passing, on its last check, before anything listens
// again, and be routed to and reported ready.
func (s *System) forgetPreviousRun(ctx context.Context) error {
	client, err := api.NewClient(&api.Config{Address: s.Consul.HTTPAddr(), Token: s.Consul.ManagementToken()})
	if err != nil {
		return err
	}
	services, err := client.Agent().ServicesWithFilterOpts("", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("system: Consul's services of a previous run: %w", err)
	}
	for id := range services {
		if err := client.Agent().ServiceDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
			return fmt.Errorf("system: deregistering %s of a previous run: %w", id, err)
		}
	}
	return nil
}

// Start builds the service binaries and starts Consul, Jaeger and every
// service in Services, each waited for until ready. dir holds logs,
// databases and binaries.
func Start(ctx context.Context, plan Plan, dir string) (*System, error) {
	s := &System{Plan: plan, Dir: dir, instances: map[string]*Instance{}, binDir: filepath.Join(dir, "bin")}
	for _, d := range []string{plan.Consul.Dir, plan.Jaeger.Dir, s.binDir, filepath.Join(dir, "data"), filepath.Join(dir, "logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := s.build(ctx); err != nil {
		return nil, err
	}
	var err error
	if s.authKey, err = localenv.KeptSecret(filepath.Join(dir, "auth-key-encryption-key"), randomKey); err != nil {
		return nil, fmt.Errorf("system: auth's key encryption key: %w", err)
	}
	if s.Consul, err = localenv.StartConsul(ctx, plan.Consul); err != nil {
		return nil, err
	}
	if err := s.forgetPreviousRun(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	if s.Jaeger, err = localenv.StartJaeger(ctx, plan.Jaeger); err != nil {
		s.Stop()
		return nil, err
	}
	if s.NATS, err = localenv.StartNATS(plan.NATS); err != nil {
		s.Stop()
		return nil, err
	}
	if err := s.startControlPlane(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	for _, svc := range Services {
		if _, err := s.StartService(ctx, svc, nil); err != nil {
			s.Stop()
			return nil, err
		}
	}
	if plan.Envoy != "" {
		edge := SidecarPorts{Admin: plan.EdgeAdmin, Metrics: plan.EdgeMetrics}
		if s.edge, err = s.startEnvoy(ctx, "edge", "edge-1", "edge", edge); err != nil {
			s.Stop()
			return nil, err
		}
	}
	return s, nil
}

// build compiles every service binary into the system's bin directory.
func (s *System) build(ctx context.Context) error {
	root, err := localenv.RepoRoot()
	if err != nil {
		return err
	}
	args := []string{"build", "-o", s.binDir + string(filepath.Separator), "./controlplane/cmd/controlplane"}
	for _, svc := range Services {
		args = append(args, "./services/"+svc+"/cmd/"+svc)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("system: go build: %w\n%s", err, out)
	}
	return nil
}

// randomKey is 32 random bytes, base64-encoded: an AES-256 key.
func randomKey() string {
	key := make([]byte, 32)
	rand.Read(key)
	return base64.StdEncoding.EncodeToString(key)
}

// ControlPlaneURL is the control plane's debug HTTP base URL.
func (s *System) ControlPlaneURL() string {
	return "http://127.0.0.1:" + strconv.Itoa(s.Plan.ControlPlaneDebug)
}

// startControlPlane runs the control plane against the system's Consul,
// with Envoys' spans going to the system's Jaeger.
func (s *System) startControlPlane(ctx context.Context) error {
	token, err := s.Consul.ControlPlaneToken(ctx)
	if err != nil {
		return err
	}
	env := []string{
		"CONSUL_HTTP_ADDR=" + s.Consul.HTTPAddr(),
		"CONSUL_HTTP_TOKEN=" + token,
		"XDS_ADDR=127.0.0.1:" + strconv.Itoa(s.Plan.ControlPlaneXDS),
		"DEBUG_ADDR=127.0.0.1:" + strconv.Itoa(s.Plan.ControlPlaneDebug),
		"MESH_COLLECTOR_ADDR=127.0.0.1:" + strconv.Itoa(s.Plan.Jaeger.OTLPGRPCPort),
		"MESH_EDGE_PORT=" + strconv.Itoa(s.Plan.Edge),
		"MESH_MTLS=" + strconv.FormatBool(!s.Plan.Plaintext),
		// Local Envoys have no edge certificate: the local edge speaks HTTP.
		"MESH_EDGE_TLS=false",
	}
	p, err := localenv.StartProcess("controlplane", filepath.Join(s.Dir, "logs", "controlplane.log"), env, filepath.Join(s.binDir, "controlplane"))
	if err != nil {
		return err
	}
	s.ControlPlane = p
	waitCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	return p.WaitHTTP(waitCtx, s.ControlPlaneURL()+"/ready", 200)
}

// Instance is one running service instance.
type Instance struct {
	Service string
	ID      string // Consul instance ID
	Port    int
	*localenv.Process
	sidecar *localenv.Process // sidecar mode only
}

// URL is the instance's base URL.
func (i *Instance) URL() string { return "http://127.0.0.1:" + strconv.Itoa(i.Port) }

// Env returns the environment of service svc's instance id on its HTTP
// and gRPC ports, with a new Consul token of svc's service identity in a
// file of the instance's own directory. Proxyless, it writes the
// instance's xDS bootstrap, whose certificate files go in that directory
// too.
func (s *System) Env(ctx context.Context, svc, id string, port, grpcPort int) ([]string, error) {
	token, err := s.Consul.ServiceToken(ctx, svc)
	if err != nil {
		return nil, fmt.Errorf("system: Consul token of %s: %w", svc, err)
	}
	dir := filepath.Join(s.Dir, "instances", id)
	tokenFile := filepath.Join(dir, "consul-token")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		return nil, err
	}
	var mode []string
	if s.Plan.Envoy != "" {
		sc := s.Plan.Sidecars[svc]
		mode = []string{"MESH_MODE=sidecar", "MESH_EGRESS_URL=http://127.0.0.1:" + strconv.Itoa(sc.Outbound), "MESH_EXPOSE_PORT=" + strconv.Itoa(sc.Expose),
			"ADVERTISE_ADDR=127.0.0.1", "ADVERTISE_PORT=" + strconv.Itoa(sc.Inbound)}
	} else {
		bootstrap := filepath.Join(dir, "xds-bootstrap.json")
		controlPlane := "127.0.0.1:" + strconv.Itoa(s.Plan.ControlPlaneXDS)
		if err := rpc.WriteBootstrap(bootstrap, rpc.NewBootstrap(controlPlane, id, svc, tokenFile, workload.FilesIn(dir))); err != nil {
			return nil, fmt.Errorf("system: xDS bootstrap of %s: %w", id, err)
		}
		mode = []string{"MESH_MODE=proxyless", rpc.BootstrapEnv + "=" + bootstrap}
	}
	if svc == "auth" {
		mode = append(mode, "AUTH_KEY_ENCRYPTION_KEY="+s.authKey)
	}
	return append(mode,
		"HTTP_ADDR=127.0.0.1:"+strconv.Itoa(port),
		"GRPC_ADDR=127.0.0.1:"+strconv.Itoa(grpcPort),
		"INSTANCE_ID="+id,
		"CONSUL_HTTP_ADDR="+s.Consul.HTTPAddr(),
		"CONSUL_HTTP_TOKEN_FILE="+tokenFile,
		"MESH_CONTROLPLANE_URL="+s.ControlPlaneURL(),
		"DATABASE_URL=sqlite:"+filepath.Join(s.Dir, "data", svc+".db"),
		"OTEL_EXPORTER_OTLP_ENDPOINT="+s.Jaeger.OTLPEndpoint(),
		"NATS_URL="+s.NATS.ServiceURL(svc),
		"CHECK_INTERVAL=1s", "CHECK_TIMEOUT=1s", "DEREGISTER_AFTER=1m",
		"DRAIN_TIMEOUT=5s",
	), nil
}

// PrimaryID is the Consul instance ID of svc's first instance, the one on
// the plan's ports.
func PrimaryID(svc string) string { return svc + "-local" }

// StartService starts svc's primary instance on its planned port and
// waits until it is ready, that is registered in Consul and passing.
func (s *System) StartService(ctx context.Context, svc string, extraEnv []string) (*Instance, error) {
	return s.StartInstance(ctx, svc, PrimaryID(svc), s.Binary(svc), extraEnv)
}

// Binary is the path of svc's binary, as the system built it.
func (s *System) Binary(svc string) string { return filepath.Join(s.binDir, svc) }

// StartServiceBinary is StartService with another build of the service's
// binary (the crash-point tests' failpoint build, say).
func (s *System) StartServiceBinary(ctx context.Context, svc, bin string, extraEnv []string) (*Instance, error) {
	return s.StartInstance(ctx, svc, PrimaryID(svc), bin, extraEnv)
}

// StartReplica starts another instance of svc, id <svc>-local-<n>, on
// free ports and with the same database as the primary: what a second
// replica of a deployment is (issue 12's rolling restarts and racing
// order instances). Proxyless mode only: the plan has one sidecar per
// service.
func (s *System) StartReplica(ctx context.Context, svc string, n int, extraEnv []string) (*Instance, error) {
	return s.StartInstance(ctx, svc, fmt.Sprintf("%s-%d", PrimaryID(svc), n), s.Binary(svc), extraEnv)
}

// StartInstance starts instance id of svc from bin (its ports: the plan's
// for the primary, free ones for a replica) and waits until it is ready
// and passing in Consul.
func (s *System) StartInstance(ctx context.Context, svc, id, bin string, extraEnv []string) (*Instance, error) {
	port, grpcPort := s.Plan.Services[svc], s.Plan.GRPC[svc]
	if id != PrimaryID(svc) {
		if s.Plan.Envoy != "" {
			return nil, fmt.Errorf("system: replica %s: sidecar mode has one instance per service", id)
		}
		ports, err := localenv.FreePorts(2)
		if err != nil {
			return nil, err
		}
		port, grpcPort = ports[0], ports[1]
	}
	env, err := s.Env(ctx, svc, id, port, grpcPort)
	if err != nil {
		return nil, err
	}
	env = append(append(env, s.Plan.Env...), extraEnv...)
	p, err := localenv.StartProcess(id, filepath.Join(s.Dir, "logs", id+".log"), env, bin)
	if err != nil {
		return nil, err
	}
	inst := &Instance{Service: svc, ID: id, Port: port, Process: p}
	waitCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := p.WaitHTTP(waitCtx, inst.URL()+"/ready", 200); err != nil {
		p.Stop(5 * time.Second)
		return nil, err
	}
	if s.Plan.Envoy != "" {
		// After registration: the control plane then has this node's
		// config for the sidecar's first request.
		if inst.sidecar, err = s.startEnvoy(ctx, "sidecar", id, svc, s.Plan.Sidecars[svc]); err != nil {
			p.Stop(5 * time.Second)
			return nil, err
		}
	}
	err = s.waitPassing(waitCtx, svc, id)
	if err == nil {
		err = s.waitSent(waitCtx, id)
	}
	if err != nil {
		p.Stop(5 * time.Second)
		if inst.sidecar != nil {
			inst.sidecar.Stop(5 * time.Second)
		}
		return nil, err
	}
	s.mu.Lock()
	s.instances[id] = inst
	s.mu.Unlock()
	return inst, nil
}

// waitPassing waits until Consul's health checks of instance id pass:
// only then do other services (and Envoys) route to it, so a system
// reported as started answers at once.
func (s *System) waitPassing(ctx context.Context, svc, id string) error {
	url := "http://" + s.Consul.HTTPAddr() + "/v1/health/checks/" + svc
	for {
		var checks []struct{ ServiceID, Status string }
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		req.Header.Set("X-Consul-Token", s.Consul.ManagementToken())
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&checks)
			resp.Body.Close()
		}
		// Every check of the instance (HTTP and gRPC) must pass: the
		// control plane routes only to instances whose checks all do.
		own, passing := 0, 0
		for _, c := range checks {
			if c.ServiceID == id {
				own++
				if c.Status == "passing" {
					passing++
				}
			}
		}
		if own > 0 && passing == own {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("system: %s never passed its Consul health checks: %v", id, checks)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitSent waits until the control plane sends instance id as an
// endpoint (GET /debug/endpoints/<id>): a restarted replica then takes
// calls before the next one of a rolling restart stops.
func (s *System) waitSent(ctx context.Context, id string) error {
	url := s.ControlPlaneURL() + "/debug/endpoints/" + id
	for {
		var body struct{ Endpoint bool }
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
		}
		if body.Endpoint {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("system: the control plane never sent %s as an endpoint", id)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// GrantAdmin makes the registered user with email an admin, as an
// operator does (user grant-admin on user's database); their next login
// carries the role.
func (s *System) GrantAdmin(ctx context.Context, email string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(s.binDir, "user"), "grant-admin", email)
	cmd.Env = append(os.Environ(), "DATABASE_URL=sqlite:"+filepath.Join(s.Dir, "data", "user.db"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("system: user grant-admin %s: %w\n%s", email, err, out)
	}
	return nil
}

// Instance returns svc's primary instance, or nil when it is not running.
func (s *System) Instance(svc string) *Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.instances[PrimaryID(svc)]
}

// Instances returns svc's running instances, by ID.
func (s *System) Instances(svc string) []*Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*Instance
	for _, inst := range s.instances {
		if inst.Service == svc {
			out = append(out, inst)
		}
	}
	slices.SortFunc(out, func(a, b *Instance) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// StopService stops every instance of svc gracefully (SIGTERM: withdraw,
// drain, deregister).
func (s *System) StopService(svc string) error {
	var errs []error
	for _, inst := range s.Instances(svc) {
		errs = append(errs, s.StopInstance(inst.ID))
	}
	return errors.Join(errs...)
}

// StopInstance stops instance id gracefully (SIGTERM: withdraw, drain,
// deregister) and checks it exited cleanly.
func (s *System) StopInstance(id string) error {
	inst := s.forget(id)
	if inst == nil {
		return nil
	}
	if err := inst.Stop(15 * time.Second); err != nil {
		return err
	}
	if inst.sidecar != nil {
		if err := inst.sidecar.Stop(10 * time.Second); err != nil {
			return err
		}
	}
	// A service stops cleanly on SIGTERM: exit status 0, after draining.
	if err := inst.ExitError(); err != nil {
		return fmt.Errorf("system: %s exited with %v after SIGTERM:\n%s", id, err, inst.Tail(2000))
	}
	return nil
}

// KillInstance kills instance id (SIGKILL: no drain, no deregistration;
// Consul's checks find it gone) and waits until it has ended.
func (s *System) KillInstance(id string) error {
	inst := s.forget(id)
	if inst == nil {
		return fmt.Errorf("system: %s is not running", id)
	}
	if err := inst.Signal(syscall.SIGKILL); err != nil && !inst.Exited() {
		return err
	}
	<-inst.Done()
	if inst.sidecar != nil {
		return inst.sidecar.Stop(10 * time.Second)
	}
	return nil
}

// forget removes instance id from the running set and returns it.
func (s *System) forget(id string) *Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	inst := s.instances[id]
	delete(s.instances, id)
	return inst
}

// Stop stops everything, services first.
func (s *System) Stop() error {
	var errs []error
	if s.edge != nil {
		errs = append(errs, s.edge.Stop(10*time.Second))
	}
	for i := len(Services) - 1; i >= 0; i-- {
		errs = append(errs, s.StopService(Services[i]))
	}
	if s.ControlPlane != nil {
		errs = append(errs, s.ControlPlane.Stop(10*time.Second))
	}
	if s.NATS != nil {
		s.NATS.Shutdown()
	}
	if s.Jaeger != nil {
		errs = append(errs, s.Jaeger.Stop(10*time.Second))
	}
	if s.Consul != nil {
		errs = append(errs, s.Consul.Stop(10*time.Second))
	}
	return errors.Join(errs...)
}
