package serve

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshop/meshop/controlplane/model"
)

// Metrics are the control plane's pipeline metrics. Catalog and model
// report through the hooks ConsulIndex and ProblemFound; serve updates the
// rest.
type Metrics struct {
	// Pushes counts snapshots set in the cache, by node type.
	Pushes *prometheus.CounterVec
	// PushLatency is the time from a change seen in Consul to the
	// snapshot that carries it being set.
	PushLatency prometheus.Histogram
	// Connected is the number of connected Envoy nodes, by node type
	// (sidecar, edge, unknown).
	Connected *prometheus.GaugeVec
	// Responses counts xDS responses sent, by type URL.
	Responses *prometheus.CounterVec
	// Nacks counts NACKs received, by type URL.
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
			Help: "xDS NACKs received from Envoys, by type URL."}, []string{"type_url"}),
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
			m.ConsulIndex, m.ValidationFailures, m.Problems)
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
