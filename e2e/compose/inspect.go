package compose

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// client calls a JSON HTTP API (the edge, Jaeger's query API, the control
// plane's debug endpoints).
type client struct {
	base string
	http *http.Client
}

// do sends a JSON request and decodes a JSON answer into out (if not nil).
func (c *client) do(ctx context.Context, method, path string, headers map[string]string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %w: %s", method, path, err, raw)
		}
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(raw))
	}
	return resp.StatusCode, nil
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
// from the control plane (/debug/config_dump?node=edge-1), as host:port.
func edgeEndpoints(ctx context.Context, controlPlane, cluster string) ([]string, error) {
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
	c := &client{base: controlPlane, http: &http.Client{Timeout: 5 * time.Second}}
	if _, err := c.do(ctx, http.MethodGet, "/debug/config_dump?node=edge-1", nil, nil, &dump); err != nil {
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
func passing(ctx context.Context, consul, service string) ([]string, error) {
	var entries []struct {
		Service struct {
			ID string `json:"ID"`
		} `json:"Service"`
	}
	c := &client{base: consul, http: &http.Client{Timeout: 5 * time.Second}}
	if _, err := c.do(ctx, http.MethodGet, "/v1/health/service/"+service+"?passing=true", nil, nil, &entries); err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.Service.ID)
	}
	slices.Sort(ids)
	return ids, nil
}
