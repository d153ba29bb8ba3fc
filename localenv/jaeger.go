package localenv

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"time"
)

// JaegerOptions are the ports a Jaeger v2 process listens on.
type JaegerOptions struct {
	Dir           string // log lives here
	OTLPGRPCPort  int    // 4317 in the port plan
	OTLPHTTPPort  int    // 4318
	UIPort        int    // 16686: UI and HTTP query API
	QueryGRPCPort int    // 16685
	HealthPort    int    // 13133
}

// Jaeger is a Jaeger v2 process (observability/jaeger/config-local.yaml):
// OTLP in, traces in memory, query API out.
type Jaeger struct {
	Opts JaegerOptions
	*Process
}

// OTLPEndpoint is the value for OTEL_EXPORTER_OTLP_ENDPOINT.
func (j *Jaeger) OTLPEndpoint() string {
	return "http://127.0.0.1:" + strconv.Itoa(j.Opts.OTLPGRPCPort)
}

// UIURL is the UI and query API base URL.
func (j *Jaeger) UIURL() string { return "http://127.0.0.1:" + strconv.Itoa(j.Opts.UIPort) }

// StartJaeger starts Jaeger and waits until it is healthy.
func StartJaeger(ctx context.Context, o JaegerOptions) (*Jaeger, error) {
	bin, err := Binary("jaeger")
	if err != nil {
		return nil, err
	}
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	env := []string{
		"JAEGER_OTLP_GRPC_PORT=" + strconv.Itoa(o.OTLPGRPCPort),
		"JAEGER_OTLP_HTTP_PORT=" + strconv.Itoa(o.OTLPHTTPPort),
		"JAEGER_UI_PORT=" + strconv.Itoa(o.UIPort),
		"JAEGER_QUERY_GRPC_PORT=" + strconv.Itoa(o.QueryGRPCPort),
		"JAEGER_HEALTH_PORT=" + strconv.Itoa(o.HealthPort),
		// Jaeger must not trace itself into whatever listens on 4317.
		"OTEL_SDK_DISABLED=true", "OTEL_TRACES_EXPORTER=none",
	}
	config := filepath.Join(root, "observability", "jaeger", "config-local.yaml")
	p, err := StartProcess("jaeger", filepath.Join(o.Dir, "jaeger.log"), env, bin, "--config", config)
	if err != nil {
		return nil, err
	}
	j := &Jaeger{Opts: o, Process: p}
	waitCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := p.WaitHTTP(waitCtx, "http://127.0.0.1:"+strconv.Itoa(o.HealthPort)+"/status", http.StatusOK); err != nil {
		p.Stop(5 * time.Second)
		return nil, err
	}
	return j, nil
}

// Span is a span as Jaeger's query API returns it, with its service.
type Span struct {
	TraceID       string `json:"traceID"`
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	ProcessID string `json:"processID"`
	Service   string `json:"-"`
	Tags      []struct {
		Key   string `json:"key"`
		Value any    `json:"value"`
	} `json:"tags"`
}

// ParentID is the span's CHILD_OF parent, or "".
// Tag is the value of the span's tag key as a string ("" when absent),
// e.g. Tag("span.kind") is "client" or "server".
func (s Span) Tag(key string) string {
	for _, t := range s.Tags {
		if t.Key == key {
			return fmt.Sprint(t.Value)
		}
	}
	return ""
}

func (s Span) ParentID() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

// Trace returns the spans of traceID (hex), or an empty slice while Jaeger
// has not stored it yet.
func (j *Jaeger) Trace(ctx context.Context, traceID string) ([]Span, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, j.UIURL()+"/api/traces/"+url.PathEscape(traceID), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jaeger: GET trace %s: status %d", traceID, resp.StatusCode)
	}
	var body struct {
		Data []struct {
			Spans     []Span `json:"spans"`
			Processes map[string]struct {
				ServiceName string `json:"serviceName"`
			} `json:"processes"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("jaeger: decode trace %s: %w", traceID, err)
	}
	var spans []Span
	for _, t := range body.Data {
		for _, s := range t.Spans {
			s.Service = t.Processes[s.ProcessID].ServiceName
			spans = append(spans, s)
		}
	}
	return spans, nil
}
