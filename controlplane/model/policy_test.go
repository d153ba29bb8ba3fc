package model

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParsePolicy(t *testing.T) {
	def := DefaultPolicy()
	withTimeout := def
	withTimeout.Timeout = 2 * time.Second
	full := Policy{
		Timeout:        3 * time.Second,
		ConnectTimeout: 250 * time.Millisecond,
		Retries: Retries{Attempts: 3, PerTryTimeout: time.Second, BackoffBase: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
			GRPCOn: []string{"unavailable", "resource-exhausted"}},
		CircuitBreaker: CircuitBreaker{MaxConnections: 10, MaxPendingRequests: 20, MaxRequests: 30, MaxRetries: 1},
		Outlier: OutlierDetection{Consecutive5xx: 3, ConsecutiveGatewayFailure: 0, Interval: 5 * time.Second, BaseEjectionTime: 10 * time.Second, MaxEjectionPercent: 100,
			FailurePercentageThreshold: 40, FailurePercentageMinimumHosts: 2, FailurePercentageRequestVolume: 10},
		Split: []Split{{"v1", 90}, {"v2", 10}},
	}
	tests := []struct {
		name    string
		in      string
		want    Policy
		wantErr []string // substrings, all must appear
	}{
		{name: "empty object takes defaults", in: `{}`, want: def},
		{name: "one field", in: `{"timeout":"2s"}`, want: withTimeout},
		{name: "comment allowed", in: `{"comment":"canary for ticket 12","timeout":"2s"}`, want: withTimeout},
		{name: "everything", in: `{
			"timeout":"3s","connect_timeout":"250ms",
			"retries":{"attempts":3,"per_try_timeout":"1s","backoff_base":"10ms","backoff_max":"100ms","grpc_retry_on":["unavailable","resource-exhausted"]},
			"circuit_breaker":{"max_connections":10,"max_pending_requests":20,"max_requests":30,"max_retries":1},
			"outlier_detection":{"consecutive_5xx":3,"consecutive_gateway_failure":0,"interval":"5s","base_ejection_time":"10s","max_ejection_percent":100,
				"failure_percentage_threshold":40,"failure_percentage_minimum_hosts":2,"failure_percentage_request_volume":10},
			"traffic_split":[{"version":"v1","weight":90},{"version":"v2","weight":10}]}`, want: full},
		{name: "whitespace only", in: "  \n", wantErr: []string{"empty"}},
		{name: "not JSON", in: `timeout: 2s`, wantErr: []string{"not valid JSON"}},
		{name: "array", in: `[]`, wantErr: []string{"not valid JSON"}},
		{name: "unknown field", in: `{"timout":"2s"}`, wantErr: []string{"unknown field", "timout"}},
		{name: "trailing data", in: `{"timeout":"2s"} {}`, wantErr: []string{"data after"}},
		{name: "duration as number", in: `{"timeout":2}`, wantErr: []string{"duration string"}},
		{name: "bad duration", in: `{"timeout":"2 parsecs"}`, wantErr: []string{"duration string"}},
		{name: "negative attempts", in: `{"retries":{"attempts":-1}}`, wantErr: []string{"retries.attempts"}},
		{name: "every problem at once", in: `{"timeout":"0s","retries":{"attempts":99,"backoff_base":"1s","backoff_max":"10ms"},"circuit_breaker":{"max_requests":0},"outlier_detection":{"max_ejection_percent":101}}`,
			wantErr: []string{"timeout:", "retries.attempts", "backoff_max", "max_requests", "max_ejection_percent"}},
		{name: "per-try longer than timeout", in: `{"timeout":"1s","retries":{"per_try_timeout":"2s"}}`, wantErr: []string{"per_try_timeout"}},
		{name: "huge timeout", in: `{"timeout":"72h"}`, wantErr: []string{"timeout: 72h0m0s is outside"}},
		{name: "outlier disabled entirely", in: `{"outlier_detection":{"consecutive_5xx":0,"consecutive_gateway_failure":0}}`, wantErr: []string{"all 0"}},
		{name: "failure percentage alone", in: `{"outlier_detection":{"consecutive_5xx":0,"consecutive_gateway_failure":0,"failure_percentage_threshold":101}}`, wantErr: []string{"failure_percentage_threshold: 101 is above 100"}},
		{name: "unknown gRPC retry code", in: `{"retries":{"grpc_retry_on":["unavailable","not-found"]}}`, wantErr: []string{`grpc_retry_on[1]: "not-found"`}},
		{name: "split weights", in: `{"traffic_split":[{"version":"v1","weight":50},{"version":"v2","weight":40}]}`, wantErr: []string{"sum to 90"}},
		{name: "split duplicate and zero", in: `{"traffic_split":[{"version":"v1","weight":100},{"version":"v1","weight":0}]}`, wantErr: []string{"appears twice", "at least 1"}},
		{name: "split bad version", in: `{"traffic_split":[{"version":"v 1","weight":100}]}`, wantErr: []string{"not a version name"}},
		{name: "oversized", in: `{"comment":"` + strings.Repeat("x", MaxPolicyBytes) + `"}`, wantErr: []string{"bytes, the limit is"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePolicy([]byte(tt.in), 0)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("ParsePolicy() = %+v, want error", got)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePolicy() error: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParsePolicy() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPolicyJSONRoundTrip(t *testing.T) {
	p := DefaultPolicy()
	p.Retries.PerTryTimeout = 700 * time.Millisecond
	p.Split = []Split{{"v1", 1}, {"v2", 99}}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParsePolicy(b, 0)
	if err != nil {
		t.Fatalf("ParsePolicy(Marshal(p)): %v\n%s", err, b)
	}
	if diff := cmp.Diff(p, got); diff != "" {
		t.Errorf("round trip mismatch (-want +got):\n%s", diff)
	}
}

// FuzzParsePolicy checks that no input crashes the parser and that every
// accepted policy is valid and survives a round trip through its JSON.
// Seeds live in testdata/fuzz/FuzzParsePolicy; run with
// go test -fuzz=FuzzParsePolicy ./model.
func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"timeout":"2s","retries":{"attempts":1}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePolicy(data, 0)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("accepted policy does not validate: %v", err)
		}
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("marshal accepted policy: %v", err)
		}
		again, err := ParsePolicy(b, 0)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", b, err)
		}
		if diff := cmp.Diff(p, again); diff != "" {
			t.Fatalf("round trip mismatch (-first +second):\n%s", diff)
		}
	})
}

func TestNotHonouredByGRPC(t *testing.T) {
	def := DefaultPolicy()
	got := strings.Join(def.NotHonouredByGRPC(), "\n")
	for _, want := range []string{"consecutive_5xx", "they eject nothing", "max_connections", "connect_timeout"} {
		if !strings.Contains(got, want) {
			t.Errorf("default policy: %q not reported:\n%s", want, got)
		}
	}
	p := def
	p.Outlier.FailurePercentageThreshold = 50
	p.Retries.PerTryTimeout = time.Second
	got = strings.Join(p.NotHonouredByGRPC(), "\n")
	if strings.Contains(got, "eject nothing") || !strings.Contains(got, "per_try_timeout") {
		t.Errorf("with failure percentage and a per-try timeout:\n%s", got)
	}
}
