package serve

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshop/meshop/controlplane/internal/pmap"
	"github.com/meshop/meshop/controlplane/model"
)

// Metrics are the control plane's pipeline metrics. Catalog and model
// report through the hooks ConsulIndex and ProblemFound; serve updates the
// rest.
type Metrics struct {
	// Pushes counts snapshots set in the cache, by node type.
	Pushes *prometheus.CounterVec
	// PushLatency is the time from a change seen in Consul to the
	// snapshot that carries it being set (not yet sent or applied: see
	// Convergence for that).
	PushLatency prometheus.Histogram
	// Convergence is the time from a change seen in Consul to a node's
	// ACK of the version of a type that carries it, observed once per
	// node, type and version, for nodes connected when the version was
	// set (a node that connects later is not a push).
	Convergence prometheus.Histogram
	// NodeConfigBytes is the size of a node's configuration (every
	// resource of its snapshot, encoded), observed when it is set.
	NodeConfigBytes prometheus.Histogram
	// Nodes are the connected nodes by sync state and flavour, counted
	// when scraped (the server gives the count: SetNodesSource).
	Nodes *nodesCollector
	// ServicesWithoutPassing is the number of meshed services with no
	// passing instance (no endpoint); ServicePassing the passing
	// instances (endpoints) of each service.
	ServicesWithoutPassing prometheus.Gauge
	ServicePassing         *servicePassingCollector
	// Connected is the number of connected Envoy nodes, by node type
	// (sidecar, edge, unknown).
	Connected *prometheus.GaugeVec
	// Responses counts xDS responses sent, by type URL.
	Responses *prometheus.CounterVec
	// Nacks counts NACKs received, by type URL and node flavour
	// (sidecar, proxyless, edge, unknown).
	Nacks *prometheus.CounterVec
	// ConsulIndex is the highest Consul raft index the catalog has seen.
	ConsulIndex prometheus.Gauge
	// ValidationFailures counts rejected input and configuration, by
	// stage (model: bad Consul meta or policy; snapshot: a node's
	// resources failed translation, ValidateAll or Consistent) and kind.
	ValidationFailures *prometheus.CounterVec
	// Problems is the number of current model problems, by kind.
	Problems *prometheus.GaugeVec
}

// NewMetrics creates the metrics and registers them with reg (which may be
// nil for tests that do not look at them).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns = "meshop_controlplane"
	m := &Metrics{
		Pushes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "snapshot_pushes_total",
			Help: "Snapshots set in the xDS cache, by node type."}, []string{"node_type"}),
		PushLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "push_latency_seconds",
			Help:    "Time from a change seen in Consul to the snapshot carrying it being set.",
			Buckets: []float64{.01, .025, .05, .1, .15, .2, .3, .4, .5, .75, 1, 1.5, 2, 5}}),
		Connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "connected_nodes",
			Help: "Envoy nodes with at least one open xDS stream, by node type."}, []string{"node_type"}),
		Responses: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "xds_responses_total",
			Help: "xDS responses sent, by type URL."}, []string{"type_url"}),
		Nacks: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "xds_nacks_total",
			Help: "xDS NACKs received from nodes, by type URL and node flavour (sidecar, proxyless, edge, unknown)."}, []string{"type_url", "flavour"}),
		Convergence: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "convergence_seconds",
			Help:    "Time from a change seen in Consul to a connected node's ACK of the version carrying it, per node and type.",
			Buckets: []float64{.01, .025, .05, .1, .15, .2, .3, .4, .5, .75, 1, 1.5, 2, 5, 10, 30}}),
		NodeConfigBytes: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "node_config_bytes",
			Help:    "Size of a node's configuration (its snapshot's resources, encoded), observed each time one is set.",
			Buckets: prometheus.ExponentialBuckets(1024, 4, 10)}), // 1 KiB .. 256 MiB
		Nodes: newNodesCollector(prometheus.NewDesc(ns+"_nodes",
			"Connected nodes by sync state (SYNCED, NACKED, STALE) and flavour (sidecar, proxyless, edge, unknown).",
			[]string{"sync", "flavour"}, nil)),
		ServicesWithoutPassing: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "services_without_passing_instances",
			Help: "Meshed services with no passing instance: no endpoint to send their callers."}),
		ServicePassing: &servicePassingCollector{desc: prometheus.NewDesc(ns+"_service_passing_instances",
			"Passing instances (endpoints) of each meshed service.", []string{"service"}, nil)},
		ConsulIndex: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "consul_last_index",
			Help: "Highest Consul raft index seen by the catalog watcher."}),
		ValidationFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "validation_failures_total",
			Help: "Rejected input (stage=model) and node configurations that failed translation or validation (stage=snapshot)."},
			[]string{"stage", "kind"}),
		Problems: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "model_problems",
			Help: "Current problems in the Consul input, by kind."}, []string{"kind"}),
	}
	for _, t := range []string{nodeSidecar, nodeProxyless, nodeEdge, nodeUnknown} {
		m.Connected.WithLabelValues(t).Set(0)
	}
	if reg != nil {
		reg.MustRegister(m.Pushes, m.PushLatency, m.Connected, m.Responses, m.Nacks,
			m.ConsulIndex, m.ValidationFailures, m.Problems,
			m.Convergence, m.NodeConfigBytes, m.Nodes, m.ServicesWithoutPassing, m.ServicePassing)
	}
	return m
}

// ProblemFound is the model.Builder hook: it counts a new input problem.
func (m *Metrics) ProblemFound(p model.Problem) {
	m.ValidationFailures.WithLabelValues("model", p.Kind).Inc()
}

// SetConsulIndex is the catalog.Watcher hook.
func (m *Metrics) SetConsulIndex(i uint64) { m.ConsulIndex.Set(float64(i)) }

func (m *Metrics) setProblems(ps model.Problems) {
	m.Problems.Reset()
	for _, k := range []string{model.KindMeta, model.KindUpstream, model.KindPrefix, model.KindPort, model.KindPolicy} {
		m.Problems.WithLabelValues(k).Set(0)
	}
	for _, p := range ps {
		m.Problems.WithLabelValues(p.Kind).Inc()
	}
}

// nodesCollector is the nodes gauge: sync states depend on time (STALE),
// so they are counted when scraped, from the tracker.
type nodesCollector struct {
	desc *prometheus.Desc
	mu   sync.Mutex
	src  func() map[[2]string]int // {flavour, sync} → nodes
}

func newNodesCollector(d *prometheus.Desc) *nodesCollector { return &nodesCollector{desc: d} }

// Describe implements prometheus.Collector.
func (c *nodesCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector: every sync state and flavour,
// zeros included.
func (c *nodesCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	src := c.src
	c.mu.Unlock()
	var counts map[[2]string]int
	if src != nil {
		counts = src()
	}
	for _, fl := range []string{nodeSidecar, nodeProxyless, nodeEdge, nodeUnknown} {
		for _, st := range []string{SyncSynced, SyncNacked, SyncStale} {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(counts[[2]string{fl, st}]), st, fl)
		}
	}
}

// servicePassingCollector is the gauge of each service's passing
// instances: counted when scraped, from the services of the mesh last
// applied, so that no series is kept in memory per service.
type servicePassingCollector struct {
	desc     *prometheus.Desc
	mu       sync.Mutex
	services pmap.Map[*model.Service]
}

// Describe implements prometheus.Collector.
func (c *servicePassingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *servicePassingCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	services := c.services
	c.mu.Unlock()
	for name, svc := range services.All() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(svc.EndpointCount()), name)
	}
}

func (c *servicePassingCollector) set(services pmap.Map[*model.Service]) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.services = services
}

// setSource makes src the count the gauge reports (the last server
// created with these metrics).
func (c *nodesCollector) setSource(src func() map[[2]string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.src = src
}

// NodesBySync returns the connected nodes by flavour and sync state, as
// the nodes gauge reports them.
func (m *Metrics) NodesBySync() map[[2]string]int {
	m.Nodes.mu.Lock()
	src := m.Nodes.src
	m.Nodes.mu.Unlock()
	if src == nil {
		return nil
	}
	return src()
}
