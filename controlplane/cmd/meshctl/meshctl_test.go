package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/hashicorp/consul/api"
	"google.golang.org/protobuf/proto"

	"github.com/meshop/meshop/controlplane/internal/poll"
	"github.com/meshop/meshop/controlplane/translate"
	"github.com/meshop/meshop/controlplane/xdstest/envoysim"
)

var secrets = []string{translate.SecretIdentity, translate.SecretRoots}

// rejectListeners makes an Envoy NACK every listener update, as one
// whose inbound port is taken does.
func rejectListeners(typeURL string, _ map[string]proto.Message) string {
	if typeURL == resource.ListenerType {
		return "error adding listener 'inbound': cannot bind '0.0.0.0:15006': Address already in use"
	}
	return ""
}

// TestAgainstARunningSystem runs every command that reads a running
// system against a real Consul and control plane with three simulated
// Envoys: order-1 in sync, payment-1 NACKing its listeners, the edge;
// notification's only instance critical.
func TestAgainstARunningSystem(t *testing.T) {
	s := startSystem(t, registerShop)
	env := s.env()

	// A healthy system first: check passes.
	s.envoy(t, envoysim.Options{ID: "order-1", Cluster: "order", Secrets: secrets})
	s.waitNode(t, "order-1", synced, 5)
	r := meshctl(env, "check")
	mustCode(t, r, exitOK, "check")
	golden(t, "check_ok", r.stdout)

	// Then trouble: a NACKing node and a service with no passing instance.
	s.envoy(t, envoysim.Options{ID: "payment-1", Cluster: "payment", Delta: true, Reject: rejectListeners})
	s.envoy(t, envoysim.Options{ID: "edge-1", Cluster: "edge"})
	s.envoy(t, envoysim.Options{ID: "user-1", Cluster: "user", Metadata: map[string]any{translate.MetaFlavor: translate.FlavorProxyless}})
	s.agent.Fail("notification-1")
	s.waitNode(t, "payment-1", nacked, 2)
	s.waitNode(t, "edge-1", synced, 4)
	s.waitNode(t, "user-1", synced, 2)
	poll.Until(t, 20*time.Second, func() (bool, string) {
		r := meshctl(env, "describe", "service", "notification", "-o", "json")
		return strings.Contains(r.stdout, `"passing_instances": 0`) && strings.Contains(r.stdout, `"policy_source"`), r.stdout + r.stderr
	})
	poll.Until(t, 20*time.Second, func() (bool, string) {
		r := meshctl(env, "proxy-status", "-o", "json")
		return strings.Contains(r.stdout, `"services_without_passing_instances": [
    "notification"
  ]`), r.stdout + r.stderr
	})

	t.Run("proxy-status", func(t *testing.T) {
		r := meshctl(env, "proxy-status")
		mustCode(t, r, exitOK, "proxy-status")
		if testing.Verbose() {
			t.Logf("meshctl proxy-status:\n%s", r.stdout)
		}
		golden(t, "proxy_status", lastSeen.ReplaceAllString(r.stdout, "${1}<AGE>"))
		r = meshctl(env, "proxy-status", "-o", "json")
		mustCode(t, r, exitOK, "proxy-status -o json")
		var v statusView
		if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
			t.Fatalf("%v\n%s", err, r.stdout)
		}
		got := map[string]string{}
		for _, n := range v.Nodes {
			got[n.Name] = n.Sync
		}
		if got["order-1"] != synced || got["payment-1"] != nacked || got["edge-1"] != synced || got["user-1"] != synced {
			t.Errorf("sync = %v", got)
		}
	})

	t.Run("check fails", func(t *testing.T) {
		r := meshctl(env, "check")
		mustCode(t, r, exitFailed, "check")
		golden(t, "check_fail", r.stdout)
		if want := "meshctl: 3 of 5 checks failed: instances, sync, nacks\n"; r.stderr != want {
			t.Errorf("stderr = %q, want %q", r.stderr, want)
		}
	})

	t.Run("proxy-config", func(t *testing.T) {
		for _, kind := range []string{"clusters", "listeners", "routes", "endpoints", "secrets"} {
			r := meshctl(env, "proxy-config", kind, "order-1")
			mustCode(t, r, exitOK, "proxy-config", kind, "order-1")
			golden(t, "proxy_config_"+kind, r.stdout)
		}
		r := meshctl(env, "proxy-config", "routes", "edge-1")
		mustCode(t, r, exitOK, "proxy-config routes edge-1")
		golden(t, "proxy_config_routes_edge", r.stdout)

		// -o yaml: the full resources; the private key stays redacted.
		r = meshctl(env, "proxy-config", "secrets", "order-1", "-o", "yaml")
		mustCode(t, r, exitOK, "proxy-config secrets -o yaml")
		if !strings.Contains(r.stdout, "[redacted]") || strings.Contains(r.stdout, "PRIVATE KEY") {
			t.Errorf("secrets -o yaml: private key not redacted:\n%s", r.stdout)
		}
		r = meshctl(env, "proxy-config", "clusters", "order-1", "-o", "json")
		var clusters []map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &clusters); err != nil || len(clusters) != 5 {
			t.Errorf("clusters -o json: %d clusters, %v\n%s", len(clusters), err, r.stdout)
		}

		// Without a token the control plane refuses: exit 1, one line.
		noToken := map[string]string{"MESHCTL_CONTROLPLANE": env["MESHCTL_CONTROLPLANE"]}
		r = meshctl(noToken, "proxy-config", "clusters", "order-1")
		mustCode(t, r, exitFailed, "proxy-config without a token")
		golden(t, "proxy_config_no_token.stderr", r.stderr)
		r = meshctl(env, "proxy-config", "clusters", "ghost-1")
		mustCode(t, r, exitFailed, "proxy-config clusters ghost-1")
	})

	t.Run("completion", func(t *testing.T) {
		r := meshctl(env, "__complete", "proxy-config", "clusters", "")
		if r.code != 0 || !strings.Contains(r.stdout, "order-1\torder (envoy)") || !strings.Contains(r.stdout, "edge-1\tedge (edge)") {
			t.Errorf("node completion: exit %d\n%s", r.code, r.stdout)
		}
		r = meshctl(env, "__complete", "describe", "service", "")
		if r.code != 0 || !strings.Contains(r.stdout, "payment\n") {
			t.Errorf("service completion: exit %d\n%s", r.code, r.stdout)
		}
	})

	t.Run("describe", func(t *testing.T) {
		s.agent.PutIntentions("payment",
			&api.SourceIntention{Name: "order", Action: api.IntentionActionAllow},
			&api.SourceIntention{Name: "*", Action: api.IntentionActionDeny})
		s.agent.PutPolicy("payment", `{"timeout":"2s","retries":{"attempts":3}}`)
		poll.Until(t, 20*time.Second, func() (bool, string) {
			r := meshctl(env, "describe", "service", "payment", "-o", "json")
			return strings.Contains(r.stdout, `"policy_source": "kv"`), r.stdout + r.stderr
		})
		r := meshctl(env, "describe", "service", "payment")
		mustCode(t, r, exitOK, "describe service payment")
		golden(t, "describe_payment", r.stdout)
		r = meshctl(env, "describe", "service", "notification")
		mustCode(t, r, exitOK, "describe service notification")
		golden(t, "describe_notification", r.stdout)
		r = meshctl(env, "describe", "service", "ghost")
		mustCode(t, r, exitFailed, "describe service ghost")
		golden(t, "describe_ghost.stderr", r.stderr)
	})

	t.Run("policy set", func(t *testing.T) {
		dir := t.TempDir()
		file := filepath.Join(dir, "order.json")
		if err := os.WriteFile(file, []byte(`{"timeout":"3s"}`), 0o644); err != nil {
			t.Fatal(err)
		}
		r := meshctl(env, "policy", "set", "order", file)
		mustCode(t, r, exitOK, "policy set order")
		golden(t, "policy_set", r.stdout)
		if p := s.kv(t, "mesh/policy/order"); p == nil || string(p.Value) != `{"timeout":"3s"}` {
			t.Fatalf("mesh/policy/order = %+v", p)
		}

		// A stale index: someone wrote the key after it was read.
		read := s.kv(t, "mesh/policy/order").ModifyIndex
		s.agent.PutPolicy("order", `{"timeout":"4s"}`)
		r = meshctl(env, "policy", "set", "order", file, "--cas", fmt.Sprint(read))
		mustCode(t, r, exitFailed, "policy set --cas stale")
		if !strings.Contains(r.stderr, "changed since it was read") {
			t.Errorf("stderr = %q", r.stderr)
		}
		if p := s.kv(t, "mesh/policy/order"); string(p.Value) != `{"timeout":"4s"}` {
			t.Errorf("the concurrent edit was overwritten: %s", p.Value)
		}

		// Concurrent writers from the same index, each with a policy
		// different from the current one: exactly one wins. (A write of
		// the value already there is a no-op Consul's CAS accepts
		// without moving the index.)
		read = s.kv(t, "mesh/policy/order").ModifyIndex
		var wg sync.WaitGroup
		codes, outs := make([]int, 4), make([]string, 4)
		for i := range codes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				f := filepath.Join(dir, fmt.Sprintf("p%d.json", i))
				_ = os.WriteFile(f, []byte(fmt.Sprintf(`{"timeout":"%ds"}`, i+11)), 0o644)
				r := meshctl(env, "policy", "set", "order", f, "--cas", fmt.Sprint(read))
				codes[i], outs[i] = r.code, r.stdout+r.stderr
			}()
		}
		wg.Wait()
		wins := 0
		for _, c := range codes {
			if c == exitOK {
				wins++
			}
		}
		if wins != 1 {
			t.Errorf("exit codes of 4 concurrent writers from ModifyIndex %d = %v, want exactly one 0:\n%s", read, codes, strings.Join(outs, ""))
		}

		// An invalid policy is never written.
		bad := filepath.Join(dir, "bad.json")
		_ = os.WriteFile(bad, []byte(`{"timeout":"soon"}`), 0o644)
		before := s.kv(t, "mesh/policy/order").ModifyIndex
		r = meshctl(env, "policy", "set", "order", bad)
		mustCode(t, r, exitFailed, "policy set bad")
		if after := s.kv(t, "mesh/policy/order").ModifyIndex; after != before {
			t.Errorf("an invalid policy was written")
		}
	})
}

// TestCheckConsulDown: nothing answers; every check fails, exit 1.
func TestCheckConsulDown(t *testing.T) {
	env := map[string]string{"MESHCTL_CONTROLPLANE": "http://127.0.0.1:1", "CONSUL_HTTP_ADDR": "http://127.0.0.1:1"}
	r := meshctl(env, "check", "--timeout", "2s")
	mustCode(t, r, exitFailed, "check")
	golden(t, "check_down", r.stdout)
}

// TestProxyStatusMergesReplicas: two replicas know the same node; the
// one that saw it last wins, and a node only one knows is kept.
func TestProxyStatusMergesReplicas(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	replica := func(body string) *httptest.Server {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/debug/nodes" {
				http.NotFound(w, r)
				return
			}
			_, _ = w.Write([]byte(body))
		}))
		t.Cleanup(srv.Close)
		return srv
	}
	node := func(id string, connected bool, seen time.Time, acked string) string {
		return fmt.Sprintf(`{"id":%q,"cluster":"order","type":"sidecar","connected":%v,"last_seen":%q,
			"last_sent":{%q:{"version":"aaaaaaaa11","at":%q}},"last_ack":{%q:{"version":%q,"at":%q}}}`,
			id, connected, seen.Format(time.RFC3339), resource.ClusterType, seen.Format(time.RFC3339), resource.ClusterType, acked, seen.Format(time.RFC3339))
	}
	a := replica(`{"nodes":[` + node("order-1", false, t0, "bbbbbbbb22") + `,` + node("order-2", true, t0, "aaaaaaaa11") + `],"services_without_passing_instances":["payment"]}`)
	b := replica(`{"nodes":[` + node("order-1", true, t0.Add(time.Minute), "aaaaaaaa11") + `]}`)
	env := map[string]string{"MESHCTL_CONTROLPLANE": a.URL + "," + b.URL}
	r := meshctl(env, "proxy-status", "-o", "json")
	mustCode(t, r, exitOK, "proxy-status")
	var v statusView
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Nodes) != 2 || v.Nodes[0].Name != "order-1" || v.Nodes[0].ControlPlane != b.URL || v.Nodes[0].Sync != synced || v.Nodes[1].Name != "order-2" {
		t.Errorf("merged nodes = %+v", v.Nodes)
	}
	if len(v.ServicesWithoutPassing) != 1 || v.ServicesWithoutPassing[0] != "payment" {
		t.Errorf("services without passing instances = %v", v.ServicesWithoutPassing)
	}
	// One replica down: the table is printed, the exit code says so.
	env["MESHCTL_CONTROLPLANE"] = a.URL + ",http://127.0.0.1:1"
	r = meshctl(env, "proxy-status")
	mustCode(t, r, exitFailed, "proxy-status with a replica down")
	if !strings.Contains(r.stdout, "order-2") || !strings.Contains(r.stdout, "WARNING: no passing instance: payment") {
		t.Errorf("stdout:\n%s", r.stdout)
	}
}

// TestUsage: usage errors exit 2 with one line on stderr.
func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bogus"}, `meshctl: unknown command "bogus" for "meshctl"`},
		{[]string{"proxy-status", "--bogus"}, "meshctl: unknown flag: --bogus"},
		{[]string{"proxy-status", "-o", "xml"}, `meshctl: invalid output "xml": want table, json or yaml`},
		{[]string{"proxy-config", "clusters"}, "meshctl: meshctl proxy-config clusters: accepts 1 arg(s), received 0"},
		{[]string{"proxy-config", "pods", "x"}, `meshctl: unknown meshctl proxy-config subcommand "pods"; one of: clusters, endpoints, listeners, routes, secrets`},
		{[]string{"policy", "set", "Order", "x.json"}, `meshctl: "Order" is not a service name (lowercase letters, digits, '-')`},
		{[]string{"x", "translate"}, "meshctl: x translate: --catalog <file> is required"},
	} {
		r := meshctl(map[string]string{}, tc.args...)
		if r.code != exitUsage || r.stderr != tc.want+"\n" {
			t.Errorf("meshctl %s: exit %d, stderr %q; want exit 2, %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.want)
		}
	}
	// Every command has examples in its help.
	var missing []string
	var visit func(path []string)
	root := newRoot(func(string) string { return "" })
	visit = func(path []string) {
		c, _, err := root.Find(path)
		if err != nil {
			t.Fatal(err)
		}
		if c.Example == "" && c.Name() != "help" && !strings.HasPrefix(c.CommandPath(), "meshctl completion") {
			missing = append(missing, c.CommandPath())
		}
		for _, sub := range c.Commands() {
			visit(append(append([]string{}, path...), sub.Name()))
		}
	}
	visit(nil)
	if len(missing) > 0 {
		t.Errorf("commands without examples: %v", missing)
	}
	if r := meshctl(nil, "completion", "bash"); r.code != 0 || !strings.Contains(r.stdout, "__start_meshctl") {
		t.Errorf("completion bash: exit %d", r.code)
	}
}

// TestPolicyValidate is offline: the control plane's parser.
func TestPolicyValidate(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.json", `{"timeout":"2s","retries":{"attempts":3},"traffic_split":[{"version":"v1","weight":90},{"version":"v2","weight":10}]}`)
	r := meshctl(nil, "policy", "validate", good)
	mustCode(t, r, exitOK, "policy validate good")
	golden(t, "policy_validate_good", strings.ReplaceAll(r.stdout, dir, "<DIR>"))

	for _, tc := range []struct{ name, body, want string }{
		{"unknown.json", `{"timeot":"2s"}`, `unknown field "timeot"`},
		{"range.json", `{"traffic_split":[{"version":"v1","weight":90}]}`, "100"},
		{"empty.json", ``, "policy is empty"},
		{"big.json", `{"timeout":"2s"}` + strings.Repeat(" ", 20<<10), "the limit is 16384"},
	} {
		r := meshctl(nil, "policy", "validate", write(tc.name, tc.body))
		if r.code != exitFailed || !strings.Contains(r.stderr, tc.want) || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%s: exit %d, stderr %q; want exit 1, one line with %q", tc.name, r.code, r.stderr, tc.want)
		}
	}
}

// TestTranslate is offline: every golden input of the translator, through
// meshctl, gives exactly the golden outputs.
func TestTranslate(t *testing.T) {
	inputs, err := filepath.Glob("../../translate/testdata/in/*.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		for _, typ := range []string{"clusters", "endpoints", "listeners", "routes"} {
			r := meshctl(nil, "x", "translate", "--catalog", in, "--type", typ)
			mustCode(t, r, exitOK, "x translate", in, typ)
			want, err := os.ReadFile(filepath.Join("../../translate/testdata/out", name+"."+typ+".yaml"))
			if err != nil {
				t.Fatal(err)
			}
			if r.stdout != string(want) {
				t.Errorf("%s %s: meshctl x translate differs from the golden output", name, typ)
			}
		}
	}
	r := meshctl(nil, "x", "translate", "--catalog", "../../translate/testdata/in/mtls_sidecar.yaml", "--node", "order-1", "-o", "table")
	mustCode(t, r, exitOK, "x translate --node order-1")
	golden(t, "translate_order_table", r.stdout)
	r = meshctl(nil, "x", "translate", "--catalog", "../../translate/testdata/in/bad_input.yaml")
	mustCode(t, r, exitOK, "x translate bad_input")
	if !strings.Contains(r.stdout, "problems:") {
		t.Errorf("bad_input: no problems in the output:\n%s", r.stdout)
	}
	r = meshctl(nil, "x", "translate", "--catalog", "../../translate/testdata/in/mtls_sidecar.yaml", "--node", "ghost-1")
	mustCode(t, r, exitFailed, "x translate --node ghost-1")
}

// TestSyncStateWithoutServerFields: from a control plane that does not
// say sync, sync_by_type or last_seen, meshctl computes them from what
// was sent, ACKed and NACKed.
func TestSyncStateWithoutServerFields(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cds, lds := resource.ClusterType, resource.ListenerType
	for _, tc := range []struct {
		name      string
		n         nodeStatus
		want      string
		wantTypes map[string]string
		wantSeen  time.Time
	}{
		{"acked", nodeStatus{LastSent: map[string]sent{cds: {Version: "a", At: t0}}, LastAck: map[string]ack{cds: {Version: "a", At: t0.Add(time.Second)}}},
			synced, map[string]string{cds: synced}, t0.Add(time.Second)},
		{"sent, not acked yet", nodeStatus{LastSent: map[string]sent{cds: {Version: "b", At: t0.Add(2 * time.Second)}}, LastAck: map[string]ack{cds: {Version: "a", At: t0}}},
			stale, map[string]string{cds: stale}, t0.Add(2 * time.Second)},
		{"nacked", nodeStatus{LastSent: map[string]sent{cds: {Version: "a"}, lds: {Version: "x"}}, LastAck: map[string]ack{cds: {Version: "a"}},
			LastNack: &nack{TypeURL: lds, Version: "x", Message: "bad", At: t0}},
			nacked, map[string]string{cds: synced, lds: nacked}, t0},
		{"nacked, then a newer version sent", nodeStatus{LastSent: map[string]sent{lds: {Version: "y"}}, LastNack: &nack{TypeURL: lds, Version: "x"}},
			stale, map[string]string{lds: stale}, time.Time{}},
		{"nothing sent", nodeStatus{}, stale, map[string]string{}, time.Time{}},
		{"the server's word wins", nodeStatus{Sync: "nacked", SyncByType: map[string]string{cds: "NACKED"}, LastSent: map[string]sent{cds: {Version: "a"}},
			LastAck: map[string]ack{cds: {Version: "a"}}, LastSeen: &t0}, nacked, map[string]string{cds: nacked}, t0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.n.state(); got != tc.want {
				t.Errorf("state = %s, want %s", got, tc.want)
			}
			for url, want := range tc.wantTypes {
				if got := tc.n.typeState(url); got != want {
					t.Errorf("%s = %s, want %s", shortTypeURL(url), got, want)
				}
			}
			if got := tc.n.seen(); !got.Equal(tc.wantSeen) {
				t.Errorf("seen = %v, want %v", got, tc.wantSeen)
			}
		})
	}
}
