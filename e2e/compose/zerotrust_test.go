//go:build e2e

package compose

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
)

// Zero trust through the real data plane (issue 11): the edge refuses
// what has no genuine token before any app sees it, and a destination's
// sidecar refuses a caller that Consul's intentions do not allow.

// forgedToken: a request under /api that needs a user is refused by the
// edge's jwt_authn, with 401 and the apps' JSON error body, when its
// token is forged (auth's current key id, issuer and audience, an admin's
// role, not expired, but signed with a key of ours) or missing. The same
// request with the buyer's genuine token reaches order, so the refusals
// are about the token. Envoy sets x-envoy-upstream-service-time on
// what came from an upstream only, which tells the edge's own answers
// from the app's (order would refuse a forged token too).
func forgedToken(ctx context.Context, t *testing.T, api *client, buyer session) {
	var jwks struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if _, err := api.do(ctx, http.MethodGet, "/api/auth/jwks", nil, nil, &jwks); err != nil || len(jwks.Keys) == 0 {
		t.Fatalf("auth's keys through the edge: %v (%d keys)", err, len(jwks.Keys))
	}
	forged, _, err := forgeToken(jwks.Keys[0].Kid, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	fromUpstream := func(resp response) bool { return resp.header.Get("X-Envoy-Upstream-Service-Time") != "" }

	genuine, err := api.send(ctx, http.MethodGet, "/api/orders", map[string]string{"Authorization": "Bearer " + buyer.token}, nil)
	if err != nil || genuine.code != http.StatusOK || !fromUpstream(genuine) {
		t.Fatalf("GET /api/orders with the buyer's token: %d %s (%v), upstream time %q; want 200 from order",
			genuine.code, genuine.body, err, genuine.header.Get("X-Envoy-Upstream-Service-Time"))
	}
	tests := []struct {
		name     string
		headers  map[string]string
		wantCode string
	}{
		{"a token signed by a key of ours", map[string]string{"Authorization": "Bearer " + forged}, "invalid_token"},
		{"no token", nil, "unauthenticated"},
	}
	for _, tt := range tests {
		resp, err := api.send(ctx, http.MethodGet, "/api/orders", tt.headers, nil)
		if err != nil {
			t.Errorf("%s: GET /api/orders: %v", tt.name, err)
			continue
		}
		e, jerr := jsonError(resp)
		if resp.code != http.StatusUnauthorized || jerr != nil || e.Error.Code != tt.wantCode {
			t.Errorf("%s: GET /api/orders answered %d %s (%v); want 401 with the JSON error %s", tt.name, resp.code, resp.body, jerr, tt.wantCode)
		}
		if fromUpstream(resp) {
			t.Errorf("%s: the 401 came from an app (x-envoy-upstream-service-time %q); want the edge's own", tt.name, resp.header.Get("X-Envoy-Upstream-Service-Time"))
		}
		t.Logf("%s: %d %s (WWW-Authenticate %q)", tt.name, resp.code, bytes.TrimSpace(resp.body), resp.header.Get("WWW-Authenticate"))
	}
}

// rbacFilter is the name of the HTTP filter that enforces intentions on
// a sidecar's inbound listener, and rbacDenied its counter of refusals.
const (
	rbacFilter = "envoy.filters.http.rbac"
	rbacDenied = "http.inbound.rbac.denied"
)

// deniedCall: intentions follow the declared upstreams, so no call the
// upstream graph allows is denied as the mesh stands. The check
// therefore removes order from payment's intentions (the management
// token, Consul's API): within 20 s payment's sidecar refuses order's
// charges (its RBAC counts them) and a checkout through the edge answers
// 503 checkout_pending naming payment; with the intention restored,
// checkouts succeed again. The intention is restored whatever happens.
func deniedCall(ctx context.Context, t *testing.T, s *stack, api, controlPlane *client, consul *consulapi.Client, buyer session) {
	dump, err := controlPlane.send(ctx, http.MethodGet, "/debug/config_dump?node=payment-1", nil, nil)
	if err != nil || dump.code != http.StatusOK {
		t.Fatalf("payment-1's config dump: %d %v", dump.code, err)
	}
	if !bytes.Contains(dump.body, []byte(`"`+rbacFilter+`"`)) {
		t.Fatalf("payment-1's configuration has no %s: the control plane does not enforce intentions (MESH_MTLS off?)", rbacFilter)
	}
	denied := func() (int64, error) {
		// The admin API listens on the sidecar's loopback; the image has
		// bash, not curl.
		out, err := s.exec(ctx, "payment-sidecar", "bash", "-c",
			`exec 3<>/dev/tcp/127.0.0.1/15000 && printf 'GET /stats?filter=rbac.denied HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n' >&3 && cat <&3`)
		if err != nil {
			return 0, fmt.Errorf("payment-sidecar's stats: %w: %s", err, out)
		}
		n, ok := envoyStat(out, rbacDenied)
		if !ok {
			return 0, fmt.Errorf("payment-sidecar has no counter %s: %s", rbacDenied, out)
		}
		return n, nil
	}
	before, err := denied()
	if err != nil {
		t.Fatal(err)
	}

	restore := dropIntention(ctx, t, consul, "payment", "order")
	start := time.Now()
	poll(ctx, t, 20*time.Second, "order's charge refused by payment's sidecar", func() (bool, string) {
		a := checkout(ctx, api, buyer)
		n, err := denied()
		return a.code == http.StatusServiceUnavailable && a.errCode == "checkout_pending" && a.dependency == "payment" && n > before,
			fmt.Sprintf("checkout %s; payment-sidecar's %s %d → %d (%v)", a, rbacDenied, before, n, err)
	})
	t.Logf("order → payment refused %s after the intention was removed", time.Since(start).Round(time.Millisecond))

	restore()
	poll(ctx, t, 30*time.Second, "checkouts succeeding with the intention restored", func() (bool, string) {
		a := checkout(ctx, api, buyer)
		return a.code == http.StatusCreated && a.status == "CONFIRMED", "checkout " + a.String()
	})
}

// consulAPI is a Consul API client over HTTPS (trusting only
// caPEM) with token.
func consulAPI(t *testing.T, addr string, caPEM []byte, token string) *consulapi.Client {
	c, err := consulapi.NewClient(&consulapi.Config{Address: addr, Scheme: "https", Token: token,
		TLSConfig: consulapi.TLSConfig{CAPem: caPEM}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// dropIntention removes source from the service-intentions entry of
// destination (check-and-set, so nothing written meanwhile is lost) and
// returns what puts the entry back as it was; the test's cleanup calls it
// too.
func dropIntention(ctx context.Context, t *testing.T, consul *consulapi.Client, destination, source string) (restore func()) {
	t.Helper()
	entry, _, err := consul.ConfigEntries().Get(consulapi.ServiceIntentions, destination, (&consulapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		t.Fatalf("%s's intentions: %v", destination, err)
	}
	kept := *entry.(*consulapi.ServiceIntentionsConfigEntry)
	without := kept
	without.Sources = slices.DeleteFunc(slices.Clone(kept.Sources), func(s *consulapi.SourceIntention) bool { return s.Name == source })
	if len(without.Sources) == len(kept.Sources) {
		t.Fatalf("%s's intentions name no source %s", destination, source)
	}
	if ok, _, err := consul.ConfigEntries().CAS(&without, kept.ModifyIndex, (&consulapi.WriteOptions{}).WithContext(ctx)); err != nil || !ok {
		t.Fatalf("writing %s's intentions without %s: %v (written: %v)", destination, source, err, ok)
	}
	var once sync.Once
	restore = func() {
		once.Do(func() {
			wctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			restored := kept
			restored.ModifyIndex = 0
			if _, _, err := consul.ConfigEntries().Set(&restored, (&consulapi.WriteOptions{}).WithContext(wctx)); err != nil {
				t.Errorf("restoring %s's intention for %s: %v", destination, source, err)
			}
		})
	}
	t.Cleanup(restore)
	return restore
}

// attempt is one checkout's answer.
type attempt struct {
	code                int
	status              string // the order's, on 201
	errCode, dependency string // the JSON error's, otherwise
	err                 error
}

func (a attempt) String() string {
	if a.code == http.StatusCreated {
		return fmt.Sprintf("%d %s", a.code, a.status)
	}
	return fmt.Sprintf("%d %s (dependency %q, %v)", a.code, a.errCode, a.dependency, a.err)
}

// checkout buys one of buyer's product through the edge, with a new
// idempotency key.
func checkout(ctx context.Context, api *client, buyer session) attempt {
	headers := map[string]string{"Authorization": "Bearer " + buyer.token, "Idempotency-Key": "e2e-" + randomHex(8)}
	body := map[string]any{
		"items":   []map[string]any{{"product_id": buyer.productID, "quantity": 1}},
		"payment": map[string]string{"card_token": "tok_visa"},
	}
	resp, err := api.send(ctx, http.MethodPost, "/api/orders", headers, body)
	if err != nil {
		return attempt{err: err}
	}
	a := attempt{code: resp.code}
	if resp.code == http.StatusCreated {
		var o struct {
			Status string `json:"status"`
		}
		a.err = json.Unmarshal(resp.body, &o)
		a.status = o.Status
		return a
	}
	e, err := jsonError(resp)
	a.errCode, a.err = e.Error.Code, err
	a.dependency, _ = e.Error.Details["dependency"].(string)
	return a
}
