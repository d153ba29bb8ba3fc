package localenv

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestConsulACLsDenyByDefault checks the ACL setup every local run and
// test gets: nothing anonymous writes the catalog or the mesh's KV, a
// service's token registers only its own service, and the control
// plane's token (consul/acl/controlplane.hcl) reads mesh/ and writes only
// mesh/state/.
func TestConsulACLsDenyByDefault(t *testing.T) {
	c := ConsulT(t)
	ctx := context.Background()
	send := func(token, method, path, body string) int {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, "http://"+c.HTTPAddr()+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("X-Consul-Token", token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	register := func(name, id string) string { return `{"Name":"` + name + `","ID":"` + id + `","Port":20000}` }
	payment, err := c.ServiceToken(ctx, "payment")
	if err != nil {
		t.Fatal(err)
	}
	controlPlane, err := c.ControlPlaneToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if code := send(c.ManagementToken(), http.MethodPut, "/v1/kv/mesh/policy/payment", `{"timeout":"1s"}`); code != http.StatusOK {
		t.Fatalf("management token: KV put = %d", code)
	}

	tests := []struct {
		name, token, method, path, body string
		want                            int
	}{
		{"anonymous registers a rogue auth", "", http.MethodPut, "/v1/agent/service/register", register("auth", "auth-rogue"), http.StatusForbidden},
		{"anonymous writes a policy", "", http.MethodPut, "/v1/kv/mesh/policy/payment", `{}`, http.StatusForbidden},
		{"anonymous reads a policy", "", http.MethodGet, "/v1/kv/mesh/policy/payment", "", http.StatusForbidden},
		{"payment registers payment", payment, http.MethodPut, "/v1/agent/service/register", register("payment", "payment-1"), http.StatusOK},
		{"payment registers order", payment, http.MethodPut, "/v1/agent/service/register", register("order", "order-1"), http.StatusForbidden},
		{"payment writes a policy", payment, http.MethodPut, "/v1/kv/mesh/policy/payment", `{}`, http.StatusForbidden},
		{"control plane reads a policy", controlPlane, http.MethodGet, "/v1/kv/mesh/policy/payment", "", http.StatusOK},
		{"control plane reads health", controlPlane, http.MethodGet, "/v1/health/service/payment", "", http.StatusOK},
		{"control plane writes a policy", controlPlane, http.MethodPut, "/v1/kv/mesh/policy/payment", `{}`, http.StatusForbidden},
		{"control plane writes its state", controlPlane, http.MethodPut, "/v1/kv/mesh/state/leader", `x`, http.StatusOK},
		{"control plane registers a service", controlPlane, http.MethodPut, "/v1/agent/service/register", register("auth", "auth-rogue"), http.StatusForbidden},
	}
	for _, tt := range tests {
		if got := send(tt.token, tt.method, tt.path, tt.body); got != tt.want {
			t.Errorf("%s: %s %s = %d, want %d", tt.name, tt.method, tt.path, got, tt.want)
		}
	}
}
