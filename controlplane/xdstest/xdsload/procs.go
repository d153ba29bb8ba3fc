package xdsload

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/model"
	"github.com/meshop/meshop/controlplane/serve"
	"github.com/meshop/meshop/controlplane/translate"
	"github.com/meshop/meshop/localenv"
)

// proc is a child process (Consul, or the control plane binary) whose
// memory and CPU time the tool reads from /proc.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func startProc(name, logPath string, env []string, bin string, args ...string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// waitHTTP polls url until it answers 200.
func (p *proc) waitHTTP(ctx context.Context, url string, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			// Consul's leader endpoint answers "" until it has a leader.
			if resp.StatusCode == http.StatusOK && !bytes.Equal(bytes.TrimSpace(body), []byte(`""`)) {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before %s answered:\n%s", p.name, url, p.tail())
		case <-ctx.Done():
			return fmt.Errorf("%s: %s did not answer within %s:\n%s", p.name, url, within, p.tail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Consul is the Consul server the run uses: the catalog for Meshop's
// control plane, and the other xDS server measured.
type Consul struct {
	*proc
	HTTPAddr, GRPCAddr string
	// HTTPSAddr (https://host:port) is what Meshop's control plane reads
	// the catalog from, over HTTP/2; CAFile is its certificate's CA.
	HTTPSAddr, CAFile string
	// xdsFile holds the xds stanza SetXDSRate rewrites.
	xdsFile string
}

// StartConsul starts a single-node Consul server from ./bin/consul (built
// by make tools) on free ports, with service mesh on, its plaintext gRPC
// (xDS) port open and an HTTPS listener (HTTP/2) with a local CA. Its
// limits are Consul's defaults (http_max_conns_per_client = 200, xDS
// updates at 250 per second until SetXDSRate); the one departure,
// needed by the measurement, is enable_debug (pprof, to read its heap
// after a GC).
func StartConsul(ctx context.Context, dir string) (*Consul, error) {
	bin, err := localenv.Binary("consul")
	if err != nil {
		return nil, err
	}
	ports, err := localenv.FreePorts(5)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, err
	}
	tlsFiles, err := localenv.LocalTLS(filepath.Join(dir, "tls"))
	if err != nil {
		return nil, err
	}
	c := &Consul{HTTPAddr: "127.0.0.1:" + strconv.Itoa(ports[0]), GRPCAddr: "127.0.0.1:" + strconv.Itoa(ports[1]),
		HTTPSAddr: "https://127.0.0.1:" + strconv.Itoa(ports[4]), CAFile: tlsFiles.CAFile, xdsFile: filepath.Join(dir, "xds.hcl")}
	if err := c.writeXDSRate(ConsulDefaultXDSRate); err != nil {
		return nil, err
	}
	hcl := fmt.Sprintf(`performance { raft_multiplier = 1 }
ports { http = %d, https = %d, dns = -1, grpc = %d, grpc_tls = -1, serf_lan = %d, serf_wan = -1, server = %d }
tls { https { ca_file = %q, cert_file = %q, key_file = %q, verify_incoming = false } }
connect { enabled = true }
enable_debug = true
log_level = "warn"`, ports[0], ports[4], ports[1], ports[2], ports[3], tlsFiles.CAFile, tlsFiles.CertFile, tlsFiles.KeyFile)
	p, err := startProc("consul", filepath.Join(dir, "consul.log"), nil, bin, "agent", "-server", "-bootstrap-expect=1",
		"-node=xdsload", "-bind=127.0.0.1", "-client=127.0.0.1", "-data-dir="+filepath.Join(dir, "data"), "-hcl="+hcl,
		"-config-file="+c.xdsFile)
	if err != nil {
		return nil, err
	}
	c.proc = p
	if err := p.waitHTTP(ctx, "http://"+c.HTTPAddr+"/v1/status/leader", 2*time.Minute); err != nil {
		p.stop()
		return nil, err
	}
	return c, nil
}

// Consul's xDS update rates (xds.update_max_per_second): its default, and
// the highest it accepts. Any negative value means no limit at all
// (rate.Inf, agent/config/builder.go limitVal in v1.16.3).
const (
	ConsulDefaultXDSRate   = 250
	ConsulUnlimitedXDSRate = -1
)

func (c *Consul) writeXDSRate(perSecond float64) error {
	return os.WriteFile(c.xdsFile, []byte(fmt.Sprintf("xds { update_max_per_second = %g }\n", perSecond)), 0o644)
}

// SetXDSRate sets Consul's xds.update_max_per_second and reloads its
// configuration (the agent applies the rate on reload).
func (c *Consul) SetXDSRate(ctx context.Context, perSecond float64) error {
	if err := c.writeXDSRate(perSecond); err != nil {
		return err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+c.HTTPAddr+"/v1/agent/reload", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("consul reload: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("consul reload: %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	// Read it back: a reload that kept the old rate would measure the
	// wrong setting.
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.HTTPAddr+"/v1/agent/self", nil)
	resp2, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp2.Body.Close()
	var self struct {
		DebugConfig struct{ XDSUpdateRateLimit float64 }
	}
	if err := json.NewDecoder(resp2.Body).Decode(&self); err != nil {
		return fmt.Errorf("consul agent/self: %w", err)
	}
	got := self.DebugConfig.XDSUpdateRateLimit
	if (perSecond < 0 && got < math.MaxFloat64) || (perSecond >= 0 && got != perSecond) {
		return fmt.Errorf("consul reload: xds update rate is %g, want %g", got, perSecond)
	}
	return nil
}

// Version is what `consul version` prints first.
func consulVersion() string {
	bin, err := localenv.Binary("consul")
	if err != nil {
		return "unknown"
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}

// server is an xDS server under test.
type server interface {
	xdsAddr() string
	// memory returns live heap (read right after a forced GC) and RSS.
	memory(ctx context.Context) (Memory, error)
	// cpu returns the process's CPU time so far (user + system).
	cpu() (time.Duration, error)
}

// Memory is a process's memory at one moment.
type Memory struct {
	HeapBytes int64 `json:"heap_bytes"` // HeapAlloc right after a forced GC
	RSSBytes  int64 `json:"rss_bytes"`
}

type consulServer struct{ c *Consul }

func (s consulServer) xdsAddr() string { return s.c.GRPCAddr }
func (s consulServer) memory(ctx context.Context) (Memory, error) {
	return procMemory(ctx, s.c.pid(), "http://"+s.c.HTTPAddr)
}
func (s consulServer) cpu() (time.Duration, error) { return procCPU(s.c.pid()) }

// ControlPlane is Meshop's control plane, as the built binary.
type ControlPlane struct {
	*proc
	XDSAddr, DebugURL string
}

// StartControlPlane runs the control plane binary bin against consul's
// HTTPS listener with its default settings (debounce, keepalive, log level), except that
// it serves ADS in plaintext, as Consul's xDS server is measured: the
// simulated Envoys of the comparison speak plaintext to both. (Against
// this Consul without ACLs, streams need no token.)
func StartControlPlane(ctx context.Context, bin string, consul *Consul, dir string) (*ControlPlane, error) {
	ports, err := localenv.FreePorts(2)
	if err != nil {
		return nil, err
	}
	cp := &ControlPlane{XDSAddr: "127.0.0.1:" + strconv.Itoa(ports[0]), DebugURL: "http://127.0.0.1:" + strconv.Itoa(ports[1])}
	env := []string{"CONSUL_HTTP_ADDR=" + consul.HTTPSAddr, "CONSUL_CACERT=" + consul.CAFile, "XDS_ADDR=" + cp.XDSAddr, "DEBUG_ADDR=" + strings.TrimPrefix(cp.DebugURL, "http://"), "XDS_TLS=false"}
	cp.proc, err = startProc("controlplane", filepath.Join(dir, fmt.Sprintf("controlplane-%d.log", time.Now().UnixNano())), env, bin)
	if err != nil {
		return nil, err
	}
	if err := cp.waitHTTP(ctx, cp.DebugURL+"/ready", 2*time.Minute); err != nil {
		cp.stop()
		return nil, err
	}
	return cp, nil
}

type binaryServer struct{ cp *ControlPlane }

func (s binaryServer) xdsAddr() string { return s.cp.XDSAddr }
func (s binaryServer) memory(ctx context.Context) (Memory, error) {
	return procMemory(ctx, s.cp.pid(), s.cp.DebugURL)
}
func (s binaryServer) cpu() (time.Duration, error) { return procCPU(s.cp.pid()) }

// inProcess runs the control plane's stages in this process (for the
// smoke test: no binary to build). Its memory is this process's, sims
// included, so it reports none.
type inProcess struct {
	addr   string
	srv    *serve.Server
	cancel context.CancelFunc
	done   chan struct{}
}

func startInProcess(consul *Consul) (*inProcess, error) {
	// The load tool's Consul runs without ACLs.
	src, err := catalog.NewConsulSource(catalog.Connection{Address: consul.HTTPSAddr, CAFile: consul.CAFile})
	if err != nil {
		return nil, err
	}
	log := slog.New(slog.DiscardHandler)
	w := catalog.NewWatcher(src, catalog.Options{Logger: log, Wait: 30 * time.Second})
	srv := serve.New(serve.Options{Logger: log, Translate: translate.DefaultConfig(),
		Model: model.NewBuilder(model.BuilderOptions{Logger: log})})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &inProcess{addr: lis.Addr().String(), srv: srv, cancel: cancel, done: make(chan struct{})}
	go func() { _ = w.Run(ctx) }()
	go func() { _ = srv.Run(ctx, w) }()
	go func() { defer close(p.done); _ = srv.Serve(lis) }()
	deadline := time.Now().Add(time.Minute)
	for !srv.Ready() {
		if time.Now().After(deadline) {
			p.stop()
			return nil, errors.New("in-process control plane not ready within 1m")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return p, nil
}

func (p *inProcess) stop() {
	p.cancel()
	p.srv.Stop(2 * time.Second)
	<-p.done
}

func (p *inProcess) xdsAddr() string                        { return p.addr }
func (p *inProcess) memory(context.Context) (Memory, error) { return Memory{}, nil }
func (p *inProcess) cpu() (time.Duration, error)            { return procCPU(os.Getpid()) }

// procMemory forces a GC through the process's pprof heap endpoint (the
// debug=1 form also prints runtime.MemStats) and reads HeapAlloc from it,
// and VmRSS from /proc.
func procMemory(ctx context.Context, pid int, base string) (Memory, error) {
	var m Memory
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/debug/pprof/heap?gc=1&debug=1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return m, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return m, fmt.Errorf("%s/debug/pprof/heap: status %d", base, resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "# HeapAlloc = "); ok {
			m.HeapBytes, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	if m.HeapBytes == 0 {
		return m, fmt.Errorf("%s/debug/pprof/heap: no HeapAlloc", base)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			m.RSSBytes = kb << 10
		}
	}
	return m, nil
}

// procCPU returns the CPU time a process has used: the sum of its
// threads' run time from /proc/<pid>/task/*/schedstat (nanoseconds), or
// utime + stime from /proc/<pid>/stat (10ms ticks) where schedstat is
// missing.
func procCPU(pid int) (time.Duration, error) {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var total int64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // a thread that just exited
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			total = 0
			break
		}
		total += ns
	}
	if total > 0 {
		return time.Duration(total), nil
	}
	return procStatCPU(pid)
}

func procStatCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces: fields start after the last ')'.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}
