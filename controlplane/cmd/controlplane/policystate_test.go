package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshop/meshop/controlplane/internal/consultest"
	"github.com/meshop/meshop/controlplane/internal/poll"
	"github.com/meshop/meshop/controlplane/model"
	"github.com/meshop/meshop/controlplane/policystate"
	"github.com/meshop/meshop/controlplane/xdstest/envoysim"
)

// debugModel is what the policy tests read of /debug/model.
type debugModel struct {
	Services map[string]struct {
		Policy struct {
			Timeout string `json:"timeout"`
		} `json:"policy"`
	} `json:"services"`
	Policies map[string]model.PolicyStatus `json:"policies"`
	Problems []model.Problem               `json:"problems"`
}

func (c *cp) model(t *testing.T) (debugModel, string) {
	t.Helper()
	var m debugModel
	code, body := c.get(t, "/debug/model")
	if code == http.StatusOK {
		if err := json.Unmarshal([]byte(body), &m); err != nil {
			t.Fatalf("/debug/model: %v\n%s", err, body)
		}
	}
	return m, body
}

// problem is the model's problem about service's policy, or "".
func (m debugModel) problem(service string) string {
	for _, p := range m.Problems {
		if p.Kind == model.KindPolicy && p.Service == service && p.Field == "mesh/policy/"+service {
			return p.Message
		}
	}
	return ""
}

// TestLastGoodPolicySurvivesARestart (issue 13): the last good policy of
// a service is kept in Consul under mesh/state/policy/, so a control plane
// restarted with a bad mesh/policy/<svc> keeps serving it (source
// last_good, problem reported); a service with no kept policy falls back
// to the defaults; one whose policy was deleted while the control plane
// was down is back to the defaults, its kept policy deleted.
func TestLastGoodPolicySurvivesARestart(t *testing.T) {
	agent, consul := consultest.Start(t)
	registerShop(agent)
	good := `{"timeout":"2s"}`
	agent.PutPolicy("user", good)
	agent.PutPolicy("order", `{"timeout":"7s"}`)
	agent.PutPolicy("product", `{"timeout":"never"}`) // bad from the start
	kv := agent.Client.KV()
	stored := func(svc string) (string, bool) {
		p, _, err := kv.Get(policystate.Prefix+svc, nil)
		if err != nil {
			t.Fatal(err)
		}
		if p == nil {
			return "", false
		}
		return string(p.Value), true
	}
	userTimeout := func(e *envoysim.Envoy, want string) {
		t.Helper()
		e.Must(t, 10*time.Second, "user timeout "+want, func(s envoysim.State) bool {
			for _, vh := range s.Routes["outbound"].GetVirtualHosts() {
				if vh.GetName() == "user" {
					return vh.GetRoutes()[0].GetRoute().GetTimeout().AsDuration().String() == want
				}
			}
			return false
		})
	}

	t.Run("first run", func(t *testing.T) {
		c := startCP(t, consul)
		poll.Until(t, 10*time.Second, func() (bool, string) {
			m, body := c.model(t)
			return m.Policies["user"].Source == model.PolicyKV && m.Policies["order"].Source == model.PolicyKV, body
		})
		userTimeout(c.envoy(t, envoysim.Options{ID: "order-1", Cluster: "order"}), "2s")
		// The accepted policies are kept, the rejected one is not.
		poll.Until(t, 10*time.Second, func() (bool, string) {
			u, _ := stored("user")
			o, _ := stored("order")
			return u == good && o == `{"timeout":"7s"}`, fmt.Sprintf("stored user %q, order %q", u, o)
		})
		if v, ok := stored("product"); ok {
			t.Errorf("a rejected policy was kept: %q", v)
		}
		m, body := c.model(t)
		if st := m.Policies["product"]; st.Source != model.PolicyDefault || st.Rejected == "" {
			t.Errorf("product with a bad policy and nothing kept = %+v, want default with the reason:\n%s", st, body)
		}
	}) // the control plane stops here

	// While it is down: user's policy goes bad, order's is deleted.
	agent.PutPolicy("user", `{"timeout":"2s","retries":{"attempts":"many"}}`)
	if _, err := kv.Delete("mesh/policy/order", nil); err != nil {
		t.Fatal(err)
	}

	t.Run("restart with a bad policy", func(t *testing.T) {
		c := startCP(t, consul)
		m, body := c.model(t)
		if st := m.Policies["user"]; st.Source != model.PolicyLastGood || !strings.Contains(st.Rejected, "attempts") {
			t.Errorf("user after the restart = %+v, want last_good with the reason:\n%s", st, body)
		}
		if got := m.Services["user"].Policy.Timeout; got != "2s" {
			t.Errorf("user's policy in force has timeout %q, want the last good 2s", got)
		}
		if p := m.problem("user"); !strings.Contains(p, "the last good policy stays in force") {
			t.Errorf("user's problem = %q, want the rejection with the last good policy in force:\n%s", p, body)
		}
		if st := m.Policies["product"]; st.Source != model.PolicyDefault || !strings.Contains(m.problem("product"), "the default policy stays in force") {
			t.Errorf("product = %+v (%q), want default with the problem", st, m.problem("product"))
		}
		if st, ok := m.Policies["order"]; ok {
			t.Errorf("order (its policy deleted) = %+v, want no policy", st)
		}
		if l := grep(c.logs.String(), `"msg":"last good policies restored"`); !strings.Contains(l, `"prefix":"mesh/state/policy/","restored":2,"ignored":0`) {
			t.Errorf("restore not logged:\n%s", grep(c.logs.String(), "policystate"))
		}
		userTimeout(c.envoy(t, envoysim.Options{ID: "order-1", Cluster: "order"}), "2s")
		poll.Until(t, 10*time.Second, func() (bool, string) {
			v, ok := stored("order")
			return !ok, "order's kept policy not deleted: " + v
		})
		if v, _ := stored("user"); v != good {
			t.Errorf("user's kept policy = %q, want still the last good one", v)
		}
	})

	// A kept value that no longer parses is ignored, with one line.
	if _, err := kv.Put(&api.KVPair{Key: policystate.Prefix + "user", Value: []byte(`{"timeout":"2s",`)}, nil); err != nil {
		t.Fatal(err)
	}
	t.Run("restart with a kept value that does not parse", func(t *testing.T) {
		c := startCP(t, consul)
		m, body := c.model(t)
		if st := m.Policies["user"]; st.Source != model.PolicyDefault || st.Rejected == "" {
			t.Errorf("user = %+v, want default with the reason:\n%s", st, body)
		}
		if l := grep(c.logs.String(), `"msg":"stored last good policy ignored"`); strings.Count(l, "\n") != 0 ||
			!strings.Contains(l, `"key":"mesh/state/policy/user","err":"policy is not valid JSON`) {
			t.Errorf("want one line for the ignored kept value, with its key and why:\n%s", grep(c.logs.String(), "policystate"))
		}
	})
}
