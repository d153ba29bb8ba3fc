package xdsload

import (
	"context"
	"slices"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshop/meshop/controlplane/xdstest/adsclient"
)

// node is one simulated Envoy, leaner than xdstest/envoysim: it decodes
// only what the scenarios look at (cluster names, EDS names and connect
// timeouts; listeners' RDS names; endpoint addresses), keeps no history,
// and ACKs every response as soon as it is applied, the way Envoy does,
// so that what is measured is the server and not the client. After each
// ACK it evaluates the goal of the running scenario.
type node struct {
	id, cluster string
	// ups are the upstream services the node's service calls.
	ups   []string
	delta bool
	fl    flavor

	conn   *grpc.ClientConn
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	types map[string]*adsclient.Subscription
	// What the node has accepted.
	clusters  map[string]clusterInfo
	listeners map[string][]string // listener → RDS route names
	endpoints map[string][]string // load assignment → addresses of healthy endpoints
	routes    map[string]bool
	// goal is the running scenario's condition; met is when it first
	// held after an ACK (zero until then).
	goal   func(n *node) bool
	met    time.Time
	onMet  func()
	err    error
	closed bool
	// pending are delta subscription changes to send after the ACK.
	pending []adsclient.Change
}

type clusterInfo struct {
	eds            string // load assignment name; "" for non-EDS clusters
	connectTimeout time.Duration
}

var xdsTypes = []string{resource.ClusterType, resource.ListenerType, resource.EndpointType, resource.RouteType}

func newNode(id, cluster string, ups []string, delta bool, fl flavor) *node {
	n := &node{id: id, cluster: cluster, ups: ups, delta: delta, fl: fl, types: map[string]*adsclient.Subscription{}}
	n.reset()
	return n
}

// reset forgets everything the node accepted (a fresh Envoy).
func (n *node) reset() {
	n.types = map[string]*adsclient.Subscription{}
	for _, t := range xdsTypes {
		n.types[t] = &adsclient.Subscription{TypeURL: t}
	}
	n.clusters = map[string]clusterInfo{}
	n.listeners = map[string][]string{}
	n.endpoints = map[string][]string{}
	n.routes = map[string]bool{}
	n.pending = nil
}

// start dials addr and opens one ADS stream. It returns once the stream
// is open and the first requests are sent.
func (n *node) start(addr string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.mu.Lock()
	n.reset()
	n.conn, n.cancel, n.done = conn, cancel, make(chan struct{})
	n.err, n.closed = nil, false
	n.mu.Unlock()
	client := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	var run func() error
	if n.delta {
		st, err := client.DeltaAggregatedResources(ctx)
		if err != nil {
			cancel()
			conn.Close()
			return err
		}
		if err := n.deltaHello(st); err != nil {
			cancel()
			conn.Close()
			return err
		}
		run = func() error { return n.runDelta(st) }
	} else {
		st, err := client.StreamAggregatedResources(ctx)
		if err != nil {
			cancel()
			conn.Close()
			return err
		}
		if err := n.sotwHello(st); err != nil {
			cancel()
			conn.Close()
			return err
		}
		run = func() error { return n.runSotW(st) }
	}
	go func() {
		defer close(n.done)
		err := run()
		n.mu.Lock()
		if !n.closed && n.err == nil {
			n.err = err
		}
		n.mu.Unlock()
	}()
	return nil
}

// stop ends the stream and the connection and forgets what was accepted.
func (n *node) stop() {
	n.mu.Lock()
	if n.cancel == nil || n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	cancel, done, conn := n.cancel, n.done, n.conn
	n.mu.Unlock()
	cancel()
	<-done
	conn.Close()
	n.mu.Lock()
	n.reset() // a reconnecting Envoy starts from nothing here
	n.mu.Unlock()
}

func (n *node) streamErr() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.err
}

// setGoal installs a scenario's condition; onMet runs once, when it first
// holds after an ACK (or at once if it already holds).
func (n *node) setGoal(goal func(*node) bool, onMet func()) {
	n.mu.Lock()
	n.goal, n.onMet, n.met = goal, onMet, time.Time{}
	n.checkGoalLocked()
	n.mu.Unlock()
}

func (n *node) metAt() time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.met
}

func (n *node) checkGoalLocked() {
	if n.goal == nil || !n.met.IsZero() || !n.goal(n) {
		return
	}
	n.met = time.Now()
	if n.onMet != nil {
		n.onMet()
	}
}

func (n *node) envoyNode() *corev3.Node {
	return &corev3.Node{Id: n.id, Cluster: n.cluster, UserAgentName: "xdsload"}
}

// --- state of the world ---

type sotwStream = discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient

func (n *node) sotwRequest(typeURL string) *discoveryv3.DiscoveryRequest {
	return n.types[typeURL].Request(n.envoyNode(), nil)
}

func (n *node) sotwHello(st sotwStream) error {
	// Like Envoy: clusters and listeners first (wildcard); endpoints and
	// routes once clusters and listeners name them.
	for _, t := range []string{resource.ClusterType, resource.ListenerType} {
		n.mu.Lock()
		req := n.sotwRequest(t)
		n.mu.Unlock()
		if err := st.Send(req); err != nil {
			return err
		}
	}
	return nil
}

func (n *node) runSotW(st sotwStream) error {
	for {
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		typeURL := resp.GetTypeUrl()
		n.mu.Lock()
		follow, aerr := n.applyLocked(typeURL, resp.GetResources(), nil, nil, true)
		ts := n.types[typeURL]
		if ts == nil {
			ts = &adsclient.Subscription{TypeURL: typeURL}
			n.types[typeURL] = ts
		}
		ts.Nonce = resp.GetNonce()
		if aerr == nil {
			ts.Version = resp.GetVersionInfo()
		}
		ack := n.sotwRequest(typeURL)
		var subs []*discoveryv3.DiscoveryRequest
		for _, t := range follow {
			subs = append(subs, n.sotwRequest(t))
		}
		n.mu.Unlock()
		if aerr != nil {
			return aerr
		}
		if err := st.Send(ack); err != nil {
			return err
		}
		for _, r := range subs {
			if err := st.Send(r); err != nil {
				return err
			}
		}
		n.mu.Lock()
		n.checkGoalLocked()
		n.mu.Unlock()
	}
}

// --- delta ---

type deltaStream = discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient

func (n *node) deltaHello(st deltaStream) error {
	first := true
	for _, t := range []string{resource.ClusterType, resource.ListenerType} {
		req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: t}
		if first {
			req.Node = n.envoyNode()
			first = false
		}
		if err := st.Send(req); err != nil {
			return err
		}
	}
	return nil
}

func (n *node) runDelta(st deltaStream) error {
	for {
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		typeURL := resp.GetTypeUrl()
		anys := make([]*anypb.Any, 0, len(resp.GetResources()))
		names := make([]string, 0, len(resp.GetResources()))
		for _, r := range resp.GetResources() {
			anys = append(anys, r.GetResource())
			names = append(names, r.GetName())
		}
		n.mu.Lock()
		_, aerr := n.applyLocked(typeURL, anys, names, resp.GetRemovedResources(), false)
		subs := n.pending
		n.pending = nil
		n.mu.Unlock()
		if aerr != nil {
			return aerr
		}
		if err := st.Send(adsclient.DeltaReply(resp, nil)); err != nil {
			return err
		}
		for _, c := range subs {
			if err := st.Send(c.Request()); err != nil {
				return err
			}
		}
		n.mu.Lock()
		n.checkGoalLocked()
		n.mu.Unlock()
	}
}

// --- applying resources ---

// applyLocked decodes and applies one response. sotw responses carry the
// whole set of a wildcard type; delta responses carry changes and
// removals. It returns the dependent types whose subscriptions changed.
func (n *node) applyLocked(typeURL string, anys []*anypb.Any, names, removed []string, sotw bool) ([]string, error) {
	switch typeURL {
	case resource.ClusterType:
		if sotw {
			n.clusters = map[string]clusterInfo{}
		}
		for _, a := range anys {
			var c clusterv3.Cluster
			if err := proto.Unmarshal(a.GetValue(), &c); err != nil {
				return nil, err
			}
			n.clusters[c.GetName()] = clusterInfo{eds: adsclient.EDSName(&c), connectTimeout: c.GetConnectTimeout().AsDuration()}
		}
		for _, r := range removed {
			delete(n.clusters, r)
		}
		var eds []string
		for _, c := range n.clusters {
			if c.eds != "" {
				eds = append(eds, c.eds)
			}
		}
		return n.resubscribeLocked(resource.EndpointType, eds), nil
	case resource.ListenerType:
		if sotw {
			n.listeners = map[string][]string{}
		}
		for _, a := range anys {
			var l listenerv3.Listener
			if err := proto.Unmarshal(a.GetValue(), &l); err != nil {
				return nil, err
			}
			n.listeners[l.GetName()] = adsclient.RouteNames(&l)
		}
		for _, r := range removed {
			delete(n.listeners, r)
		}
		var rds []string
		for _, rs := range n.listeners {
			rds = append(rds, rs...)
		}
		return n.resubscribeLocked(resource.RouteType, rds), nil
	case resource.EndpointType:
		for _, a := range anys {
			var cla endpointv3.ClusterLoadAssignment
			if err := proto.Unmarshal(a.GetValue(), &cla); err != nil {
				return nil, err
			}
			n.endpoints[cla.GetClusterName()] = healthyAddresses(&cla)
		}
		for _, r := range removed {
			delete(n.endpoints, r)
		}
		if sotw {
			for k := range n.endpoints {
				if !slices.Contains(n.types[typeURL].Names, k) {
					delete(n.endpoints, k)
				}
			}
		}
	case resource.RouteType:
		for i := range anys {
			name := ""
			if names != nil {
				name = names[i]
			} else {
				name = routeName(anys[i])
			}
			n.routes[name] = true
		}
		for _, r := range removed {
			delete(n.routes, r)
		}
	default:
		// Secrets and anything else: accepted, not looked at.
	}
	return nil, nil
}

// resubscribeLocked sets the explicit subscription of an EDS or RDS type
// and reports whether it changed.
func (n *node) resubscribeLocked(typeURL string, names []string) []string {
	ts := n.types[typeURL]
	change, changed := ts.Resubscribe(names)
	if !changed {
		return nil
	}
	if n.delta {
		n.pending = append(n.pending, change)
	}
	names = ts.Names
	if typeURL == resource.EndpointType {
		for k := range n.endpoints {
			if !slices.Contains(names, k) {
				delete(n.endpoints, k)
			}
		}
	} else {
		for k := range n.routes {
			if !slices.Contains(names, k) {
				delete(n.routes, k)
			}
		}
	}
	return []string{typeURL}
}

func routeName(a *anypb.Any) string {
	var rc routev3.RouteConfiguration
	_ = proto.Unmarshal(a.GetValue(), &rc)
	return rc.GetName()
}

func healthyAddresses(cla *endpointv3.ClusterLoadAssignment) []string {
	var out []string
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			switch e.GetHealthStatus() {
			case corev3.HealthStatus_UNHEALTHY, corev3.HealthStatus_DRAINING, corev3.HealthStatus_TIMEOUT:
				continue
			}
			out = append(out, e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
		}
	}
	slices.Sort(out)
	return out
}
