package serve

import (
	"fmt"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/internal/pmap"
	"github.com/meshop/meshop/controlplane/translate"
)

// TestMetadataOfUnknownNodesIsForgotten: nodes whose ID is no instance
// connect and leave; once they are gone, nothing of them stays (random
// IDs must not grow the control plane's memory).
func TestMetadataOfUnknownNodesIsForgotten(t *testing.T) {
	s := New(Options{Translate: translate.DefaultConfig()})
	cb := callbacks{s.tracker, s}
	snap := func(index uint64) *catalog.Snapshot {
		return &catalog.Snapshot{Index: index, Services: pmap.FromMap(map[string][]catalog.Instance{
			"user": {{ID: "user-1", Service: "user", Address: "10.0.0.1", Port: 1, Status: catalog.StatusPassing,
				Meta: map[string]string{"mesh_app_port": fmt.Sprint(8080 + index)}}},
		})}
	}
	s.Apply(snap(1), time.Time{})
	for i := range 100 {
		id := int64(i + 1)
		if err := cb.OnStreamOpen(t.Context(), id, ""); err != nil {
			t.Fatal(err)
		}
		node := &corev3.Node{Id: fmt.Sprintf("random-%d", i), Cluster: "x", Metadata: nil}
		if err := cb.OnStreamRequest(id, &discoveryv3.DiscoveryRequest{Node: node}); err != nil {
			t.Fatal(err)
		}
		cb.OnStreamClosed(id, node)
	}
	s.Apply(snap(2), time.Time{})
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.meta) != 0 || len(s.metaOrphans) != 0 {
		t.Errorf("after 100 unknown nodes came and went: %d metadata entries, %d orphans; want none", len(s.meta), len(s.metaOrphans))
	}
}
