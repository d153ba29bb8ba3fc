package compose

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// client calls a JSON HTTP API (the edge, Consul, Jaeger's query API, the
// control plane's debug endpoints).
type client struct {
	base string
	http *http.Client
	// header goes with every request (Consul's and the control plane's
	// X-Consul-Token).
	header map[string]string
}

// response is an answer as it came.
type response struct {
	code   int
	header http.Header
	body   []byte
}

// send sends a JSON request (body nil: none) and reads the whole answer.
func (c *client) send(ctx context.Context, method, path string, headers map[string]string, body any) (response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return response{}, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return response{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return response{code: resp.StatusCode, header: resp.Header, body: raw}, err
}

// do sends a JSON request and decodes a JSON answer into out (if not nil).
func (c *client) do(ctx context.Context, method, path string, headers map[string]string, body, out any) (int, error) {
	resp, err := c.send(ctx, method, path, headers, body)
	if err != nil {
		return resp.code, err
	}
	if out != nil && resp.code < 300 {
		if err := json.Unmarshal(resp.body, out); err != nil {
			return resp.code, fmt.Errorf("%s %s: %w: %s", method, path, err, resp.body)
		}
	}
	if resp.code >= 300 {
		return resp.code, fmt.Errorf("%s %s: %d %s: %s", method, path, resp.code, http.StatusText(resp.code), bytes.TrimSpace(resp.body))
	}
	return resp.code, nil
}

// apiError is the JSON error body of the apps, which the edge's own
// refusals (jwt_authn's 401) share.
type apiError struct {
	Error struct {
		Code    string         `json:"code"`
		Message string         `json:"message"`
		Details map[string]any `json:"details"`
	} `json:"error"`
}

// jsonError decodes resp as an apiError; anything else (another content
// type, no code) is an error.
func jsonError(resp response) (apiError, error) {
	var e apiError
	if ct := resp.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return e, fmt.Errorf("content type %q, want application/json: %s", ct, resp.body)
	}
	if err := json.Unmarshal(resp.body, &e); err != nil || e.Error.Code == "" {
		return e, fmt.Errorf("no JSON error body (%v): %s", err, resp.body)
	}
	return e, nil
}

// tlsClient is an HTTP client that trusts only the certificates in
// caPEM (the edge's development certificate, Consul's development CA).
func tlsClient(caPEM []byte, timeout time.Duration) (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no PEM certificate to trust")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Timeout: timeout, Transport: tr}, nil
}

// envValue is KEY's value in a compose .env file (KEY=value lines, the
// value optionally quoted; # starts a comment line).
func envValue(path, key string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(string(raw)) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok || strings.HasPrefix(k, "#") || strings.TrimSpace(k) != key {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		if v == "" {
			break
		}
		return v, nil
	}
	return "", fmt.Errorf("%s has no %s", path, key)
}

// forgeToken is an access token that looks like auth's in every way but
// its signature: ES256, auth's key id kid, auth's issuer and audience, an
// admin's role, not expired; signed with a key of our own, which the
// edge has never seen.
func forgeToken(kid string, now time.Time) (token string, key *ecdsa.PublicKey, err error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", nil, err
	}
	header, err := json.Marshal(map[string]string{"alg": "ES256", "typ": "JWT", "kid": kid})
	if err != nil {
		return "", nil, err
	}
	claims, err := json.Marshal(map[string]any{
		"iss": "meshop-auth", "aud": []string{"meshop"}, "sub": "forger",
		"email": "forger@example.com", "role": "admin",
		"iat": now.Unix(), "exp": now.Add(15 * time.Minute).Unix(),
	})
	if err != nil {
		return "", nil, err
	}
	b64 := base64.RawURLEncoding
	signed := b64.EncodeToString(header) + "." + b64.EncodeToString(claims)
	digest := sha256.Sum256([]byte(signed))
	r, s, err := ecdsa.Sign(rand.Reader, priv, digest[:])
	if err != nil {
		return "", nil, err
	}
	sig := make([]byte, 64) // JWS ES256: R and S, 32 bytes each
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signed + "." + b64.EncodeToString(sig), &priv.PublicKey, nil
}

// envoyStat reads counter name from the text of Envoy's admin /stats
// ("name: value" lines); ok is false when Envoy has no such counter.
func envoyStat(text, name string) (value int64, ok bool) {
	for line := range strings.Lines(text) {
		k, v, found := strings.Cut(strings.TrimSpace(line), ": ")
		if !found || k != name {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		return n, err == nil
	}
	return 0, false
}

// traceSummary is what a Jaeger trace says about who took part.
type traceSummary struct {
	spans    map[string]int             // service → span count
	clusters map[string]map[string]bool // service → upstream clusters of its Envoy spans
}

// fetchTrace reads a trace from Jaeger's query API; a trace not (yet)
// there is an error.
func fetchTrace(ctx context.Context, jaeger, traceID string) (traceSummary, error) {
	var resp struct {
		Data []struct {
			Spans []struct {
				ProcessID string `json:"processID"`
				Tags      []struct {
					Key   string `json:"key"`
					Value any    `json:"value"`
				} `json:"tags"`
			} `json:"spans"`
			Processes map[string]struct {
				ServiceName string `json:"serviceName"`
			} `json:"processes"`
		} `json:"data"`
	}
	c := &client{base: jaeger, http: &http.Client{Timeout: 10 * time.Second}}
	if _, err := c.do(ctx, http.MethodGet, "/api/traces/"+traceID, nil, nil, &resp); err != nil {
		return traceSummary{}, err
	}
	sum := traceSummary{spans: map[string]int{}, clusters: map[string]map[string]bool{}}
	for _, tr := range resp.Data {
		for _, sp := range tr.Spans {
			svc := tr.Processes[sp.ProcessID].ServiceName
			sum.spans[svc]++
			for _, tag := range sp.Tags {
				if strings.HasPrefix(tag.Key, "upstream_cluster") {
					if sum.clusters[svc] == nil {
						sum.clusters[svc] = map[string]bool{}
					}
					sum.clusters[svc][fmt.Sprint(tag.Value)] = true
				}
			}
		}
	}
	if len(sum.spans) == 0 {
		return sum, errors.New("trace not found yet")
	}
	return sum, nil
}

// edgeEndpoints reads the endpoints of cluster in the edge's configuration
// from the control plane (/debug/config_dump?node=edge-1, which needs a
// token with operator:read), as host:port.
func edgeEndpoints(ctx context.Context, controlPlane *client, cluster string) ([]string, error) {
	var dump struct {
		ConfigDump struct {
			Configs []struct {
				Type    string `json:"@type"`
				Dynamic []struct {
					EndpointConfig struct {
						ClusterName string `json:"cluster_name"`
						Endpoints   []struct {
							LbEndpoints []struct {
								Endpoint struct {
									Address struct {
										SocketAddress struct {
											Address   string `json:"address"`
											PortValue int    `json:"port_value"`
										} `json:"socket_address"`
									} `json:"address"`
								} `json:"endpoint"`
							} `json:"lb_endpoints"`
						} `json:"endpoints"`
					} `json:"endpoint_config"`
				} `json:"dynamic_endpoint_configs"`
			} `json:"configs"`
		} `json:"config_dump"`
	}
	if _, err := controlPlane.do(ctx, http.MethodGet, "/debug/config_dump?node=edge-1", nil, nil, &dump); err != nil {
		return nil, err
	}
	var out []string
	for _, cfg := range dump.ConfigDump.Configs {
		if !strings.HasSuffix(cfg.Type, "EndpointsConfigDump") {
			continue
		}
		for _, d := range cfg.Dynamic {
			if d.EndpointConfig.ClusterName != cluster {
				continue
			}
			for _, loc := range d.EndpointConfig.Endpoints {
				for _, lb := range loc.LbEndpoints {
					sa := lb.Endpoint.Address.SocketAddress
					out = append(out, net.JoinHostPort(sa.Address, strconv.Itoa(sa.PortValue)))
				}
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// passing lists the IDs of service's instances whose checks all pass in
// Consul, sorted.
func passing(ctx context.Context, consul *client, service string) ([]string, error) {
	var entries []struct {
		Service struct {
			ID string `json:"ID"`
		} `json:"Service"`
	}
	if _, err := consul.do(ctx, http.MethodGet, "/v1/health/service/"+service+"?passing=true", nil, nil, &entries); err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.Service.ID)
	}
	slices.Sort(ids)
	return ids, nil
}
