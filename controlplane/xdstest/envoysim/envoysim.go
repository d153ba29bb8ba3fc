// Package envoysim is a simulated Envoy for tests: it speaks ADS to a
// control plane with go-control-plane's generated client stubs, state of
// the world or delta, the way Envoy does, and keeps what it accepted.
//
//	Start ──CDS, LDS (wildcard)──▶ control plane
//	  ◀── clusters ── ACK, then EDS for every EDS cluster named
//	  ◀── listeners ─ ACK, then RDS for every route config named
//	  ◀── anything Reject refuses ── NACK with the reason; state unchanged
//
// It is not Envoy: it checks no listener binds, opens no connection and
// routes no request. What only a real Envoy can check is listed in the
// control plane's README ("Envoy behaviour not exercised without Envoy").
package envoysim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshop/meshop/controlplane/xdstest/adsclient"
)

// Options describe the simulated node.
type Options struct {
	ID       string
	Cluster  string
	Metadata map[string]any
	// Delta selects incremental xDS instead of state of the world.
	Delta bool
	// Reject, when it returns a non-empty message, makes the Envoy NACK
	// the response with that message instead of applying it.
	Reject func(typeURL string, resources map[string]proto.Message) string
	// Token is the Consul ACL token the stream presents (x-consul-token),
	// as an Envoy bootstrap's initial_metadata does.
	Token string
	// TLS, when set, is how the connection to the control plane is
	// secured (nil: plaintext).
	TLS *tls.Config
	// Secrets names the SDS secrets to ask for (state of the world only),
	// as the TLS contexts of a real Envoy's listeners and clusters do.
	Secrets []string
}

// Received is one response as it arrived.
type Received struct {
	TypeURL string
	Version string
	Nonce   string
	// Names are the resources in the response; Removed the delta removals.
	Names   []string
	Removed []string
	// Endpoints counts the endpoints of each load assignment in an EDS
	// response.
	Endpoints map[string]int
	Nacked    bool
	At        time.Time
}

// State is what the Envoy has accepted.
type State struct {
	Versions  map[string]string
	Clusters  map[string]*clusterv3.Cluster
	Endpoints map[string]*endpointv3.ClusterLoadAssignment
	Listeners map[string]*listenerv3.Listener
	Routes    map[string]*routev3.RouteConfiguration
	Secrets   map[string]*tlsv3.Secret
}

// Names returns the sorted names of a resource map.
func Names[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Hosts returns the hostnames (instance IDs) in a load assignment, sorted;
// nil when the Envoy has no such assignment.
func (s State) Hosts(cluster string) []string {
	cla := s.Endpoints[cluster]
	if cla == nil {
		return nil
	}
	out := []string{}
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			out = append(out, e.GetEndpoint().GetHostname())
		}
	}
	slices.Sort(out)
	return out
}

type typeState struct {
	sub       adsclient.Subscription
	resources map[string]proto.Message
	// delta: per-resource versions accepted
	resVersions map[string]string
}

// Envoy is one simulated node with one ADS stream at a time.
type Envoy struct {
	opts Options
	conn *grpc.ClientConn
	node *corev3.Node

	mu       sync.Mutex
	cond     *sync.Cond
	types    map[string]*typeState
	history  []Received
	streamOK bool
	lastErr  error
	// deltaSub queues subscription changes for the delta stream.
	deltaSub []adsclient.Change

	cancel context.CancelFunc
	done   chan struct{}
}

// Start connects to the ADS server at addr and opens a stream.
func Start(addr string, o Options) (*Envoy, error) {
	creds := insecure.NewCredentials()
	if o.TLS != nil {
		creds = credentials.NewTLS(o.TLS)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	md, err := structpb.NewStruct(o.Metadata)
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	if o.Metadata == nil {
		md = nil
	}
	e := &Envoy{
		opts:  o,
		conn:  conn,
		node:  &corev3.Node{Id: o.ID, Cluster: o.Cluster, Metadata: md, UserAgentName: "envoysim"},
		types: map[string]*typeState{},
	}
	e.cond = sync.NewCond(&e.mu)
	for _, t := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType, resource.SecretType} {
		e.types[t] = &typeState{sub: adsclient.Subscription{TypeURL: t}, resources: map[string]proto.Message{}, resVersions: map[string]string{}}
	}
	e.types[resource.SecretType].sub.Names = slices.Clone(o.Secrets)
	if err := e.open(); err != nil {
		conn.Close()
		return nil, err
	}
	return e, nil
}

// StartT starts an Envoy for a test and closes it at the end.
func StartT(t testing.TB, addr string, o Options) *Envoy {
	t.Helper()
	e, err := Start(addr, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

func (e *Envoy) open() error {
	ctx, cancel := context.WithCancel(context.Background())
	if e.opts.Token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "x-consul-token", e.opts.Token)
	}
	client := discoveryv3.NewAggregatedDiscoveryServiceClient(e.conn)
	e.cancel = cancel
	e.done = make(chan struct{})
	if e.opts.Delta {
		st, err := client.DeltaAggregatedResources(ctx)
		if err != nil {
			cancel()
			return err
		}
		go e.runDelta(st)
		return nil
	}
	st, err := client.StreamAggregatedResources(ctx)
	if err != nil {
		cancel()
		return err
	}
	go e.runSotW(st)
	return nil
}

// Reconnect closes the stream and opens a new one that announces what the
// Envoy has (SotW: last versions; delta: initial resource versions), as
// Envoy does after losing its control plane.
func (e *Envoy) Reconnect() error {
	e.cancel()
	<-e.done
	e.mu.Lock()
	e.streamOK = false
	e.mu.Unlock()
	return e.open()
}

// Close ends the stream and the connection.
func (e *Envoy) Close() {
	e.cancel()
	<-e.done
	e.conn.Close()
}

// streamErr turns a Send's io.EOF (the server ended the stream) into the
// status the server ended it with, which only Recv reports.
func streamErr(err error, recv func() error) error {
	if errors.Is(err, io.EOF) {
		if rerr := recv(); rerr != nil {
			return rerr
		}
	}
	return err
}

func (e *Envoy) setErr(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lastErr = err
	e.streamOK = false
	e.cond.Broadcast()
}

// Err is the error that ended the last stream (nil while it runs).
func (e *Envoy) Err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lastErr
}

// --- state of the world ---

func (e *Envoy) runSotW(st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient) {
	defer close(e.done)
	send := func(typeURL string, nack *statuspb.Status) error {
		e.mu.Lock()
		req := e.types[typeURL].sub.Request(e.node, nack)
		e.mu.Unlock()
		return streamErr(st.Send(req), func() error { _, err := st.Recv(); return err })
	}
	// Like Envoy: clusters and listeners first; endpoints and routes once
	// they are named (or at once on a reconnect that already knows them).
	for _, t := range []string{resource.ClusterType, resource.ListenerType, resource.EndpointType, resource.RouteType, resource.SecretType} {
		e.mu.Lock()
		skip := (t == resource.EndpointType || t == resource.RouteType || t == resource.SecretType) && len(e.types[t].sub.Names) == 0
		e.mu.Unlock()
		if skip {
			continue
		}
		if err := send(t, nil); err != nil {
			e.setErr(err)
			return
		}
	}
	e.mu.Lock()
	e.streamOK, e.lastErr = true, nil
	e.mu.Unlock()
	for {
		resp, err := st.Recv()
		if err != nil {
			e.setErr(err)
			return
		}
		follow, nack, err := e.applySotW(resp)
		if err != nil {
			e.setErr(err)
			return
		}
		if err := send(resp.GetTypeUrl(), nack); err != nil { // ACK or NACK
			e.setErr(err)
			return
		}
		for _, t := range follow { // subscriptions that changed
			if err := send(t, nil); err != nil {
				e.setErr(err)
				return
			}
		}
	}
}

// applySotW applies (or rejects) a response and returns the types whose
// subscriptions changed, and the NACK status if it was rejected.
func (e *Envoy) applySotW(resp *discoveryv3.DiscoveryResponse) ([]string, *statuspb.Status, error) {
	typeURL := resp.GetTypeUrl()
	res, err := unpack(resp.GetResources())
	if err != nil {
		return nil, nil, err
	}
	rec := Received{TypeURL: typeURL, Version: resp.GetVersionInfo(), Nonce: resp.GetNonce(), Names: Names(res), At: time.Now()}
	rec.Endpoints = endpointCounts(res)
	refusal := e.refusal(typeURL, res)
	e.mu.Lock()
	defer e.mu.Unlock()
	defer e.cond.Broadcast()
	ts, nack := e.receiveLocked(rec, refusal)
	if nack != nil {
		return nil, nack, nil
	}
	if typeURL == resource.ClusterType || typeURL == resource.ListenerType {
		ts.resources = res // state of the world: the response is the whole set
	} else {
		for k, v := range res {
			ts.resources[k] = v
		}
		// Names no longer subscribed are dropped by Envoy itself.
		for k := range ts.resources {
			if !slices.Contains(ts.sub.Names, k) {
				delete(ts.resources, k)
			}
		}
	}
	return e.resubscribeLocked(typeURL), nil, nil
}

// refusal is Options.Reject's message for a response; "" accepts it.
func (e *Envoy) refusal(typeURL string, res map[string]proto.Message) string {
	if e.opts.Reject == nil {
		return ""
	}
	return e.opts.Reject(typeURL, res)
}

// receiveLocked records a response (rec) in the history and takes its
// nonce. A non-empty refusal NACKs it: receiveLocked returns the status
// to send and the caller applies nothing. Otherwise its version is
// accepted and the caller applies its resources to the returned state.
func (e *Envoy) receiveLocked(rec Received, refusal string) (*typeState, *statuspb.Status) {
	ts := e.types[rec.TypeURL]
	ts.sub.Nonce = rec.Nonce
	if refusal != "" {
		rec.Nacked = true
		e.history = append(e.history, rec)
		return ts, &statuspb.Status{Code: 3, Message: refusal}
	}
	e.history = append(e.history, rec)
	ts.sub.Version = rec.Version
	return ts, nil
}

// resubscribeLocked updates EDS/RDS subscriptions from clusters/listeners.
func (e *Envoy) resubscribeLocked(typeURL string) []string {
	var dep string
	var names []string
	switch typeURL {
	case resource.ClusterType:
		dep = resource.EndpointType
		for _, m := range e.types[typeURL].resources {
			if n := adsclient.EDSName(m.(*clusterv3.Cluster)); n != "" {
				names = append(names, n)
			}
		}
	case resource.ListenerType:
		dep = resource.RouteType
		for _, m := range e.types[typeURL].resources {
			names = append(names, adsclient.RouteNames(m.(*listenerv3.Listener))...)
		}
	default:
		return nil
	}
	ts := e.types[dep]
	change, changed := ts.sub.Resubscribe(names)
	if !changed {
		return nil
	}
	for k := range ts.resources {
		if !slices.Contains(ts.sub.Names, k) {
			delete(ts.resources, k)
			delete(ts.resVersions, k)
		}
	}
	if e.opts.Delta {
		e.deltaSub = append(e.deltaSub, change)
	}
	return []string{dep}
}

func unpack(as []*anypb.Any) (map[string]proto.Message, error) {
	out := make(map[string]proto.Message, len(as))
	for _, a := range as {
		m, err := a.UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("envoysim: unpack %s: %w", a.GetTypeUrl(), err)
		}
		out[name(m)] = m
	}
	return out, nil
}

func name(m proto.Message) string {
	switch r := m.(type) {
	case *clusterv3.Cluster:
		return r.GetName()
	case *endpointv3.ClusterLoadAssignment:
		return r.GetClusterName()
	case *listenerv3.Listener:
		return r.GetName()
	case *routev3.RouteConfiguration:
		return r.GetName()
	case *tlsv3.Secret:
		return r.GetName()
	}
	return ""
}

func endpointCounts(res map[string]proto.Message) map[string]int {
	var out map[string]int
	for n, m := range res {
		if cla, ok := m.(*endpointv3.ClusterLoadAssignment); ok {
			if out == nil {
				out = map[string]int{}
			}
			c := 0
			for _, l := range cla.GetEndpoints() {
				c += len(l.GetLbEndpoints())
			}
			out[n] = c
		}
	}
	return out
}

// --- delta ---

func (e *Envoy) runDelta(st discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient) {
	defer close(e.done)
	first := true
	for _, t := range []string{resource.ClusterType, resource.ListenerType, resource.EndpointType, resource.RouteType} {
		e.mu.Lock()
		ts := e.types[t]
		req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: t, InitialResourceVersions: cloneMap(ts.resVersions)}
		if first {
			req.Node = e.node
		}
		explicit := t == resource.EndpointType || t == resource.RouteType
		if explicit {
			req.ResourceNamesSubscribe = slices.Clone(ts.sub.Names)
		}
		e.deltaSub = nil
		e.mu.Unlock()
		if explicit && len(req.ResourceNamesSubscribe) == 0 {
			continue
		}
		if err := st.Send(req); err != nil {
			e.setErr(streamErr(err, func() error { _, err := st.Recv(); return err }))
			return
		}
		first = false
	}
	e.mu.Lock()
	e.streamOK, e.lastErr = true, nil
	e.mu.Unlock()
	for {
		resp, err := st.Recv()
		if err != nil {
			e.setErr(err)
			return
		}
		nack, err := e.applyDelta(resp)
		if err != nil {
			e.setErr(err)
			return
		}
		if err := st.Send(adsclient.DeltaReply(resp, nack)); err != nil {
			e.setErr(err)
			return
		}
		e.mu.Lock()
		subs := e.deltaSub
		e.deltaSub = nil
		e.mu.Unlock()
		for _, c := range subs {
			if err := st.Send(c.Request()); err != nil {
				e.setErr(err)
				return
			}
		}
	}
}

func (e *Envoy) applyDelta(resp *discoveryv3.DeltaDiscoveryResponse) (*statuspb.Status, error) {
	typeURL := resp.GetTypeUrl()
	res := map[string]proto.Message{}
	versions := map[string]string{}
	for _, r := range resp.GetResources() {
		m, err := r.GetResource().UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("envoysim: unpack %s: %w", r.GetName(), err)
		}
		n := r.GetName()
		if n == "" {
			n = name(m)
		}
		res[n] = m
		versions[n] = r.GetVersion()
	}
	rec := Received{TypeURL: typeURL, Version: resp.GetSystemVersionInfo(), Nonce: resp.GetNonce(),
		Names: Names(res), Removed: slices.Clone(resp.GetRemovedResources()), Endpoints: endpointCounts(res), At: time.Now()}
	refusal := e.refusal(typeURL, res)
	e.mu.Lock()
	defer e.mu.Unlock()
	defer e.cond.Broadcast()
	ts, nack := e.receiveLocked(rec, refusal)
	if nack != nil {
		return nack, nil
	}
	for n, m := range res {
		ts.resources[n] = m
		ts.resVersions[n] = versions[n]
	}
	for _, n := range resp.GetRemovedResources() {
		delete(ts.resources, n)
		delete(ts.resVersions, n)
	}
	e.resubscribeLocked(typeURL)
	return nil, nil
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// --- state access ---

// State returns a copy of what the Envoy accepted.
func (e *Envoy) State() State {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stateLocked()
}

func (e *Envoy) stateLocked() State {
	s := State{
		Versions:  map[string]string{},
		Clusters:  map[string]*clusterv3.Cluster{},
		Endpoints: map[string]*endpointv3.ClusterLoadAssignment{},
		Listeners: map[string]*listenerv3.Listener{},
		Routes:    map[string]*routev3.RouteConfiguration{},
		Secrets:   map[string]*tlsv3.Secret{},
	}
	for t, ts := range e.types {
		s.Versions[t] = ts.sub.Version
		for n, m := range ts.resources {
			switch r := m.(type) {
			case *clusterv3.Cluster:
				s.Clusters[n] = r
			case *endpointv3.ClusterLoadAssignment:
				s.Endpoints[n] = r
			case *listenerv3.Listener:
				s.Listeners[n] = r
			case *routev3.RouteConfiguration:
				s.Routes[n] = r
			case *tlsv3.Secret:
				s.Secrets[n] = r
			}
		}
	}
	return s
}

// History returns every response received so far.
func (e *Envoy) History() []Received {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.history)
}

// ErrTimeout is returned by WaitFor when the condition did not hold in time.
var ErrTimeout = errors.New("envoysim: condition not met in time")

// WaitFor blocks until cond holds for the accepted state or timeout
// passes; it wakes on every response, so it never sleeps blindly.
func (e *Envoy) WaitFor(timeout time.Duration, cond func(State) bool) error {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		e.mu.Lock()
		e.cond.Broadcast()
		e.mu.Unlock()
	})
	defer timer.Stop()
	e.mu.Lock()
	defer e.mu.Unlock()
	for {
		if cond(e.stateLocked()) {
			return nil
		}
		if !time.Now().Before(deadline) {
			return ErrTimeout
		}
		e.cond.Wait()
	}
}

// Must is WaitFor for tests: it fails t with the state it saw.
func (e *Envoy) Must(t testing.TB, timeout time.Duration, what string, cond func(State) bool) {
	t.Helper()
	if err := e.WaitFor(timeout, cond); err != nil {
		s := e.State()
		t.Fatalf("%s %s: %s not reached within %s (stream err: %v)\nclusters %v\nendpoints %v\nlisteners %v\nroutes %v\nversions %v",
			e.opts.ID, modeName(e.opts.Delta), what, timeout, e.Err(),
			Names(s.Clusters), Names(s.Endpoints), Names(s.Listeners), Names(s.Routes), s.Versions)
	}
}

func modeName(delta bool) string {
	if delta {
		return "(delta)"
	}
	return "(sotw)"
}
