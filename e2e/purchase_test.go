package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshop/meshop/controlplane/debug"
	"github.com/meshop/meshop/e2e/system"
	"github.com/meshop/meshop/localenv"
)

// TestPurchase starts the whole local system (real Consul, Jaeger, NATS and
// the six services, proxyless unless an envoy is on PATH) and drives what a client does: register,
// log in, browse, buy, see the order, its payment and its notifications;
// then a declined card; then the degraded and shutdown paths.
func TestPurchase(t *testing.T) {
	ctx := context.Background()
	sys := startSystem(t, nil)
	consul, err := api.NewClient(&api.Config{Address: sys.Consul.HTTPAddr(), Token: sys.Consul.ManagementToken()})
	if err != nil {
		t.Fatal(err)
	}
	url := func(svc, path string) string { return sys.Instance(svc).URL() + path }

	t.Run("every service registered and passing with mesh meta", func(t *testing.T) {
		upstreams := map[string]string{"user": "auth", "auth": "user", "product": "auth", "payment": "auth",
			"order": "auth,user,product,payment", "notification": "auth,user"}
		for _, svc := range system.Services {
			s := waitPassing(t, consul, svc, 1)[0].Service
			if s.ID != svc+"-local" || s.Port != sys.Instance(svc).Port || s.Address != "127.0.0.1" ||
				s.Meta["mesh_protocol"] != "http" || s.Meta["version"] != "v1" ||
				s.Meta["mesh_app_port"] != strconv.Itoa(sys.Instance(svc).Port) ||
				s.Meta["mesh_grpc_port"] != strconv.Itoa(sys.Plan.GRPC[svc]) {
				t.Errorf("%s registration: %+v", svc, s)
			}
			if s.Meta["mesh_upstreams"] != upstreams[svc] {
				t.Errorf("%s mesh_upstreams = %q, want %q", svc, s.Meta["mesh_upstreams"], upstreams[svc])
			}
		}
	})

	t.Run("every app is a connected proxyless node", func(t *testing.T) {
		if sys.Plan.Envoy != "" {
			t.Skip("sidecar mode: the apps' Envoys are the nodes")
		}
		var nodes struct {
			Nodes []struct {
				ID, Cluster, Type string
				Connected         bool
				Nacks             int
				Notes             []string
			}
		}
		getJSON(t, sys.ControlPlaneURL()+"/debug/nodes", &nodes)
		connected := map[string]bool{}
		for _, n := range nodes.Nodes {
			if n.Type == "proxyless" && n.Connected && n.Nacks == 0 && len(n.Notes) == 0 && n.Cluster+"-local" == n.ID {
				connected[n.ID] = true
			}
		}
		for _, svc := range system.Services {
			if !connected[svc+"-local"] {
				t.Errorf("%s-local is not a connected proxyless node without NACKs or notes: %+v", svc, nodes.Nodes)
			}
		}
	})

	t.Run("control plane holds each sidecar's and the edge's config", func(t *testing.T) {
		if sys.Plan.Envoy == "" {
			t.Skip("proxyless mode: the apps are gRPC nodes (previous test); sidecar snapshots are checked by the control plane's own tests")
		}
		upstreams := map[string][]string{"user": {"auth"}, "auth": {"user"}, "product": {"auth"}, "payment": {"auth"},
			"order": {"auth", "user", "product", "payment"}, "notification": {"auth", "user"}}
		for _, svc := range system.Services {
			want := []string{"local_app", "otel_collector"}
			for _, u := range upstreams[svc] {
				want = append(want, "svc_"+u)
			}
			waitClusters(t, sys, svc+"-local", want)
		}
		edge := []string{"otel_collector"}
		for _, svc := range system.Services {
			edge = append(edge, "svc_"+svc)
		}
		waitClusters(t, sys, "edge-1", edge)
	})

	// Register and log in.
	reg := call[map[string]any](t, "POST", url("auth", "/auth/register"), nil,
		`{"email":"grace@example.com","password":"correct horse battery","name":"Grace Hopper"}`, http.StatusCreated)
	userID := reg["user_id"].(string)
	login := call[map[string]any](t, "POST", url("auth", "/auth/login"), nil,
		`{"email":"grace@example.com","password":"correct horse battery"}`, http.StatusOK)
	bearer := map[string]string{"Authorization": "Bearer " + login["access_token"].(string)}

	// Browse.
	catalog := call[map[string]any](t, "GET", url("product", "/products?limit=100"), nil, "", http.StatusOK)
	items, _ := catalog["items"].([]any)
	if len(items) == 0 {
		t.Fatalf("empty catalog: %v", catalog)
	}
	product := items[0].(map[string]any)
	productID, price := product["id"].(string), int64(product["price_cents"].(float64))
	stockOf := func() int64 {
		p := call[map[string]any](t, "GET", url("product", "/products/"+productID), nil, "", http.StatusOK)
		return int64(p["stock"].(float64))
	}
	stockBefore := stockOf()

	// Buy, with a trace id we choose so we can find the trace afterwards.
	traceID := fmt.Sprintf("%032x", time.Now().UnixNano())
	checkoutHeaders := map[string]string{"Authorization": bearer["Authorization"], "Idempotency-Key": "buy-1",
		"traceparent": "00-" + traceID + "-00f067aa0ba902b7-01"}
	body := fmt.Sprintf(`{"items":[{"product_id":%q,"quantity":2}],"payment":{"card_token":"tok_visa"}}`, productID)
	order := call[map[string]any](t, "POST", url("order", "/orders"), checkoutHeaders, body, http.StatusCreated)
	orderID := order["id"].(string)
	if order["status"] != "CONFIRMED" || int64(order["total_cents"].(float64)) != 2*price || order["payment_id"] == nil {
		t.Fatalf("checkout: %v", order)
	}
	if u, _ := order["user"].(map[string]any); u["id"] != userID {
		t.Errorf("order's user = %v", order["user"])
	}
	if got := stockOf(); got != stockBefore-2 {
		t.Errorf("stock after purchase = %d, want %d", got, stockBefore-2)
	}
	payment := call[map[string]any](t, "GET", url("payment", "/payments/"+order["payment_id"].(string)), bearer, "", http.StatusOK)
	if payment["status"] != "SUCCEEDED" || int64(payment["amount_cents"].(float64)) != 2*price || payment["order_id"] != orderID {
		t.Errorf("payment = %v", payment)
	}
	mine := call[map[string]any](t, "GET", url("order", "/orders"), bearer, "", http.StatusOK)
	if list, _ := mine["items"].([]any); len(list) != 1 {
		t.Errorf("GET /orders = %v", mine)
	}
	waitNotification(t, url("notification", "/notifications"), bearer, "order.confirmed")
	waitNotification(t, url("notification", "/notifications"), bearer, "user.registered")

	t.Run("only an operator makes an admin", func(t *testing.T) {
		product := `{"name":"Operator Beans","description":"granted","price_cents":100,"currency":"USD","stock":1}`
		call[map[string]any](t, "POST", url("product", "/products"), bearer, product, http.StatusForbidden)
		if err := sys.GrantAdmin(context.Background(), "Grace@Example.com"); err != nil {
			t.Fatal(err)
		}
		relogin := call[map[string]any](t, "POST", url("auth", "/auth/login"), nil,
			`{"email":"grace@example.com","password":"correct horse battery"}`, http.StatusOK)
		admin := map[string]string{"Authorization": "Bearer " + relogin["access_token"].(string)}
		call[map[string]any](t, "POST", url("product", "/products"), admin, product, http.StatusCreated)
	})

	t.Run("declined card cancels and restores stock", func(t *testing.T) {
		stock := stockOf()
		declined := call[map[string]any](t, "POST", url("order", "/orders"),
			map[string]string{"Authorization": bearer["Authorization"], "Idempotency-Key": "buy-2"},
			fmt.Sprintf(`{"items":[{"product_id":%q,"quantity":1}],"payment":{"card_token":"tok_declined"}}`, productID),
			http.StatusPaymentRequired)
		e, _ := declined["error"].(map[string]any)
		details, _ := e["details"].(map[string]any)
		cancelledID, _ := details["order_id"].(string)
		if e["code"] != "payment_declined" || cancelledID == "" {
			t.Fatalf("declined answer = %v", declined)
		}
		o := call[map[string]any](t, "GET", url("order", "/orders/"+cancelledID), bearer, "", http.StatusOK)
		if o["status"] != "CANCELLED" || o["cancel_reason"] != "payment_declined" {
			t.Errorf("cancelled order = %v", o)
		}
		if got := stockOf(); got != stock {
			t.Errorf("stock after a declined order = %d, want %d (restored)", got, stock)
		}
		waitNotification(t, url("notification", "/notifications"), bearer, "order.cancelled")
	})

	t.Run("concurrent checkouts with one Idempotency-Key make one order and one charge", func(t *testing.T) {
		stock := stockOf()
		ordersBefore := len(call[map[string]any](t, "GET", url("order", "/orders?limit=100"), bearer, "", http.StatusOK)["items"].([]any))
		headers := map[string]string{"Authorization": bearer["Authorization"], "Idempotency-Key": "buy-concurrently"}
		body := fmt.Sprintf(`{"items":[{"product_id":%q,"quantity":1}],"payment":{"card_token":"tok_visa"}}`, productID)
		const n = 8
		ids := make(chan string, n)
		var wg sync.WaitGroup
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ids <- postOrder(t, url("order", "/orders"), headers, body)
			}()
		}
		wg.Wait()
		close(ids)
		var first string
		for id := range ids {
			if first == "" {
				first = id
			}
			if id != first {
				t.Fatalf("one Idempotency-Key made orders %s and %s", first, id)
			}
		}
		o := call[map[string]any](t, "GET", url("order", "/orders/"+first), bearer, "", http.StatusOK)
		if o["status"] != "CONFIRMED" {
			t.Errorf("order = %v, want CONFIRMED", o)
		}
		if got := stockOf(); got != stock-1 {
			t.Errorf("stock after %d concurrent identical checkouts = %d, want %d (reserved once)", n, got, stock-1)
		}
		after := call[map[string]any](t, "GET", url("order", "/orders?limit=100"), bearer, "", http.StatusOK)["items"].([]any)
		if len(after) != ordersBefore+1 {
			t.Errorf("orders went from %d to %d, want one more", ordersBefore, len(after))
		}
		payment := call[map[string]any](t, "GET", url("payment", "/payments/"+o["payment_id"].(string)), bearer, "", http.StatusOK)
		if payment["status"] != "SUCCEEDED" || payment["order_id"] != first {
			t.Errorf("payment = %v", payment)
		}
	})

	t.Run("the checkout trace spans order, product, payment and notification", func(t *testing.T) {
		want := []string{"order", "product", "payment", "notification"}
		var spans []localenv.Span
		deadline := time.Now().Add(30 * time.Second)
		for {
			spans, err = sys.Jaeger.Trace(ctx, traceID)
			if err != nil {
				t.Fatal(err)
			}
			if missing := missingServices(spans, want); len(missing) == 0 {
				break
			} else if time.Now().After(deadline) {
				t.Fatalf("trace %s lacks spans of %v; has %d spans", traceID, missing, len(spans))
			}
			<-time.After(250 * time.Millisecond)
		}
		orderSpan := findSpan(spans, "order", "POST /orders")
		if orderSpan == nil || orderSpan.ParentID() != "00f067aa0ba902b7" {
			t.Fatalf("no order server span under the caller's span in %+v", spans)
		}
		// order → product and order → payment are gRPC: a client span in
		// order and the server span in the provider below it.
		for _, provider := range []string{"product", "payment"} {
			if !hasGRPCHop(spans, "order", provider) {
				t.Errorf("no gRPC client span of order with a %s server span below it in %+v", provider, spans)
			}
		}
		for _, s := range spans {
			if s.Service != "order" && s.SpanID != orderSpan.SpanID && !descendsFrom(spans, s, orderSpan.SpanID) {
				t.Errorf("%s span %q is not below the order span", s.Service, s.OperationName)
			}
		}
	})

	t.Run("user down: orders still answer, degraded", func(t *testing.T) {
		if err := sys.StopService("user"); err != nil {
			t.Fatal(err)
		}
		got := call[map[string]any](t, "GET", url("order", "/orders/"+orderID), bearer, "", http.StatusOK)
		if got["user"] != nil {
			t.Errorf("user = %v, want null", got["user"])
		}
		if d, _ := got["degraded"].([]any); len(d) != 1 || d[0] != "user" {
			t.Errorf("degraded = %v, want [user]", got["degraded"])
		}
	})

	t.Run("graceful stop deregisters", func(t *testing.T) {
		order := sys.Instance("order")
		if err := sys.StopService("order"); err != nil {
			t.Fatalf("order did not stop cleanly: %v", err)
		}
		// In the mesh's order (issue 12): out of the mesh first, then drain.
		logs := order.Tail(20000)
		withdrawn := strings.Index(logs, "no longer sends this instance")
		draining := strings.Index(logs, "draining in-flight requests")
		if withdrawn < 0 || draining < 0 || withdrawn > draining {
			t.Errorf("stop order: withdrawn at %d, draining at %d in the log; want withdrawn first", withdrawn, draining)
		}
		entries, _, err := consul.Health().Service("order", "", false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 0 {
			t.Errorf("order still in Consul after a graceful stop: %+v", entries[0].Service)
		}
	})
}

// waitNotification polls the caller's notifications until one of eventType
// arrives (events are asynchronous).
func waitNotification(t *testing.T, url string, header map[string]string, eventType string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		page := call[map[string]any](t, "GET", url+"?limit=100", header, "", http.StatusOK)
		items, _ := page["items"].([]any)
		for _, it := range items {
			if it.(map[string]any)["event_type"] == eventType {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s notification within 20s; have %v", eventType, items)
		}
		<-time.After(200 * time.Millisecond)
	}
}

func missingServices(spans []localenv.Span, want []string) []string {
	have := map[string]bool{}
	for _, s := range spans {
		have[s.Service] = true
	}
	var missing []string
	for _, w := range want {
		if !have[w] {
			missing = append(missing, w)
		}
	}
	return missing
}

// waitClusters polls the control plane until node's config dump has
// exactly the clusters want (the catalog reaches it after a debounce).
func waitClusters(t *testing.T, sys *system.System, node string, want []string) {
	t.Helper()
	slices.Sort(want)
	deadline := time.Now().Add(20 * time.Second)
	var got []string
	for {
		req, _ := http.NewRequest(http.MethodGet, sys.ControlPlaneURL()+"/debug/config_dump?node="+node, nil)
		req.Header.Set("X-Consul-Token", sys.Consul.ManagementToken()) // an operator's
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		got = nil
		if err == nil && resp.StatusCode == http.StatusOK {
			got, _ = debug.ClusterNames(body)
		}
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s: clusters %v, want exactly %v", node, got, want)
		}
		<-time.After(200 * time.Millisecond)
	}
}

// hasGRPCHop reports whether spans hold a gRPC call from caller to
// provider: a client span of caller for a meshop.<provider>.v1 method with
// the provider's server span of the same method as its child.
func hasGRPCHop(spans []localenv.Span, caller, provider string) bool {
	prefix := "meshop." + provider + ".v1."
	for _, client := range spans {
		if client.Service != caller || !strings.HasPrefix(client.OperationName, prefix) || client.Tag("span.kind") != "client" {
			continue
		}
		for _, server := range spans {
			if server.Service == provider && server.OperationName == client.OperationName &&
				server.Tag("span.kind") == "server" && server.ParentID() == client.SpanID {
				return true
			}
		}
	}
	return false
}

// getJSON decodes the JSON answer of a GET.
func getJSON(t *testing.T, url string, out any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// postOrder posts a checkout that must end CONFIRMED (201) or, when it
// raced an identical request still in flight, be told to retry (503
// checkout_pending naming the order); it returns the order id.
func postOrder(t *testing.T, url string, header map[string]string, body string) string {
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Error(err)
		return ""
	}
	defer resp.Body.Close()
	var answer struct {
		ID, Status string
		Error      struct {
			Code    string
			Details struct {
				OrderID string `json:"order_id"`
			}
		}
	}
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &answer)
	switch {
	case resp.StatusCode == http.StatusCreated && answer.Status == "CONFIRMED":
		return answer.ID
	case resp.StatusCode == http.StatusServiceUnavailable && answer.Error.Code == "checkout_pending":
		return answer.Error.Details.OrderID
	}
	t.Errorf("POST /orders = %d %s", resp.StatusCode, raw)
	return ""
}
