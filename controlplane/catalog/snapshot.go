package catalog

import (
	"slices"
	"time"

	"github.com/meshop/meshop/controlplane/internal/pmap"
)

// Snapshot is what Consul said at one moment: every registered service with
// all of its instances (whatever their health), the raw mesh policies, the
// raw service intentions and the Connect CA.
// A published Snapshot is never modified; readers share it without locks and
// must not modify it either.
//
// Its maps are persistent (pmap): each snapshot is the previous one with
// the services and policies that changed set, sharing the rest, so
// publishing costs O(changes), and pmap.Diff tells a consumer which
// services changed at the same cost. A service whose instances did not
// change keeps the very same slice.
type Snapshot struct {
	// Index is the highest Consul raft index among the answers this
	// snapshot was built from.
	Index uint64
	// SeenAt is when the answer that caused this snapshot arrived from
	// Consul: the start of the push-latency measurement.
	SeenAt time.Time
	// Services maps every service name in the catalog to its instances,
	// sorted by ID. A service with no instances maps to an empty slice.
	Services pmap.Map[[]Instance]
	// Policies maps a KV key below PolicyPrefix (for example "order" for
	// mesh/policy/order) to its raw value.
	Policies pmap.Map[[]byte]
	// Intentions maps a destination service name ("*" for every service)
	// to its service-intentions config entry, as JSON in Consul's field
	// names (the model parses it, as it parses policies).
	Intentions pmap.Map[[]byte]
	// CA is Consul's Connect CA: the trust domain and its roots.
	CA CA
}

// CA is what Consul's Connect CA says about the mesh's identities. It is
// compared by value (slices.Equal on the roots).
type CA struct {
	// TrustDomain is the SPIFFE trust domain of every leaf certificate,
	// the host of its URI SAN ("<cluster id>.consul"): a leaf of service
	// s in datacenter dc is spiffe://<TrustDomain>/ns/default/dc/<dc>/svc/<s>.
	// "" when Consul has no Connect CA (Connect disabled).
	TrustDomain string
	// RootPEMs are the CA's root certificates, PEM-encoded, the active one
	// first: what verifies a peer's leaf.
	RootPEMs []string
}

// Equal reports whether a and b hold the same trust domain and roots.
func (a CA) Equal(b CA) bool {
	return a.TrustDomain == b.TrustDomain && slices.Equal(a.RootPEMs, b.RootPEMs)
}

// SameInstances reports whether a and b are the same slice, not merely
// equal ones: what a snapshot keeps for a service whose instances did not
// change, so pmap.Diff(old.Services, new.Services, SameInstances) names
// the services that changed.
func SameInstances(a, b []Instance) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// Instance is one registration of a service, as the health endpoint
// returns it.
type Instance struct {
	ID      string
	Service string
	Node    string
	// Address is the service address, or the node address when the
	// registration left it empty (Consul's own rule).
	Address string
	Port    int
	Tags    []string
	Meta    map[string]string
	// Status is the aggregated status of the node and service checks:
	// passing, warning, critical or maintenance.
	Status string
	// CreateIndex is the raft index at which the instance was first
	// registered; the model uses it to decide who claimed a route first.
	CreateIndex uint64
}

// Passing reports whether every check of the instance passes: only such
// instances become endpoints (Consul's ?passing filter drops warning too).
func (i Instance) Passing() bool { return i.Status == StatusPassing }

// Check statuses as Consul reports them.
const (
	StatusPassing     = "passing"
	StatusWarning     = "warning"
	StatusCritical    = "critical"
	StatusMaintenance = "maintenance"
)

// PolicyPrefix is the KV folder holding one JSON policy per service.
const PolicyPrefix = "mesh/policy/"

// IntentionsKind is the kind of Consul config entry holding a destination
// service's intentions.
const IntentionsKind = "service-intentions"
