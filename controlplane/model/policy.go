package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxPolicyBytes is the default size limit of one policy document. Consul
// accepts values up to 512 KiB; a policy is a few hundred bytes, so anything
// near the limit is a mistake, not a policy.
const MaxPolicyBytes = 16 << 10

// Policy is how callers treat one service: the timeouts, retries, circuit
// breaker and outlier detection of every route and cluster that leads to
// it, and an optional split of its traffic by version. The zero value is not
// useful; start from DefaultPolicy.
type Policy struct {
	// Timeout bounds a whole request to the service, retries included.
	Timeout time.Duration
	// ConnectTimeout bounds one TCP connect to an instance.
	ConnectTimeout time.Duration
	Retries        Retries
	CircuitBreaker CircuitBreaker
	Outlier        OutlierDetection
	// Split sends each version its weight (percent, summing to 100) of the
	// traffic. Empty means no split: every healthy instance is eligible.
	Split []Split
}

// Retries says how often and how fast a failed request is tried again.
// Which failures are retried is fixed by the mesh (see README): only
// failures where retrying is safe.
type Retries struct {
	Attempts      int
	PerTryTimeout time.Duration // 0: each try may use what is left of Timeout
	BackoffBase   time.Duration
	BackoffMax    time.Duration
	// GRPCOn are the gRPC status names (Envoy's and gRPC's retry_on
	// spelling: unavailable, resource-exhausted, ...) a gRPC call is
	// retried on.
	GRPCOn []string
}

// GRPCRetryable are the gRPC status names retries.grpc_retry_on accepts:
// those both Envoy and gRPC's xDS client retry on.
var GRPCRetryable = []string{"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}

// CircuitBreaker holds the per-cluster limits of the default priority.
type CircuitBreaker struct {
	MaxConnections     uint32
	MaxPendingRequests uint32
	MaxRequests        uint32
	MaxRetries         uint32
}

// OutlierDetection ejects instances that keep failing.
type OutlierDetection struct {
	Consecutive5xx            uint32
	ConsecutiveGatewayFailure uint32
	Interval                  time.Duration
	BaseEjectionTime          time.Duration
	MaxEjectionPercent        uint32
	// FailurePercentageThreshold ejects an instance whose share of failed
	// requests in an interval reaches it (percent; 0 is off), once at
	// least FailurePercentageMinimumHosts instances each had
	// FailurePercentageRequestVolume requests. Envoy and gRPC clients
	// both honour it; gRPC clients honour no consecutive-failure rule.
	FailurePercentageThreshold     uint32
	FailurePercentageMinimumHosts  uint32
	FailurePercentageRequestVolume uint32
}

// Split is one version's share of the traffic.
type Split struct {
	Version string
	Weight  uint32
}

// DefaultPolicy is the policy of a service that has none in KV.
func DefaultPolicy() Policy {
	return Policy{
		Timeout:        5 * time.Second,
		ConnectTimeout: time.Second,
		Retries: Retries{
			Attempts:    2,
			BackoffBase: 25 * time.Millisecond,
			BackoffMax:  250 * time.Millisecond,
			GRPCOn:      []string{"unavailable"},
		},
		CircuitBreaker: CircuitBreaker{
			MaxConnections:     1024,
			MaxPendingRequests: 1024,
			MaxRequests:        1024,
			MaxRetries:         3,
		},
		Outlier: OutlierDetection{
			Consecutive5xx:            5,
			ConsecutiveGatewayFailure: 5,
			Interval:                  10 * time.Second,
			BaseEjectionTime:          30 * time.Second,
			MaxEjectionPercent:        50,
			// Envoy's defaults for the rule; it is off until a threshold
			// is set.
			FailurePercentageMinimumHosts:  5,
			FailurePercentageRequestVolume: 50,
		},
	}
}

// policyDoc is the JSON shape of a policy; pointers tell "absent" (take
// the default) from zero.
type policyDoc struct {
	Timeout          *duration   `json:"timeout,omitempty"`
	ConnectTimeout   *duration   `json:"connect_timeout,omitempty"`
	Retries          *retriesDoc `json:"retries,omitempty"`
	CircuitBreaker   *breakerDoc `json:"circuit_breaker,omitempty"`
	OutlierDetection *outlierDoc `json:"outlier_detection,omitempty"`
	TrafficSplit     []splitDoc  `json:"traffic_split,omitempty"`
	Comment          *string     `json:"comment,omitempty"` // free text for operators
}

type retriesDoc struct {
	Attempts      *int      `json:"attempts,omitempty"`
	PerTryTimeout *duration `json:"per_try_timeout,omitempty"`
	BackoffBase   *duration `json:"backoff_base,omitempty"`
	BackoffMax    *duration `json:"backoff_max,omitempty"`
	GRPCRetryOn   []string  `json:"grpc_retry_on,omitempty"`
}

type breakerDoc struct {
	MaxConnections     *uint32 `json:"max_connections,omitempty"`
	MaxPendingRequests *uint32 `json:"max_pending_requests,omitempty"`
	MaxRequests        *uint32 `json:"max_requests,omitempty"`
	MaxRetries         *uint32 `json:"max_retries,omitempty"`
}

type outlierDoc struct {
	Consecutive5xx            *uint32   `json:"consecutive_5xx,omitempty"`
	ConsecutiveGatewayFailure *uint32   `json:"consecutive_gateway_failure,omitempty"`
	Interval                  *duration `json:"interval,omitempty"`
	BaseEjectionTime          *duration `json:"base_ejection_time,omitempty"`
	MaxEjectionPercent        *uint32   `json:"max_ejection_percent,omitempty"`
	FailurePercentage         *uint32   `json:"failure_percentage_threshold,omitempty"`
	FailureMinimumHosts       *uint32   `json:"failure_percentage_minimum_hosts,omitempty"`
	FailureRequestVolume      *uint32   `json:"failure_percentage_request_volume,omitempty"`
}

type splitDoc struct {
	Version string `json:"version"`
	Weight  uint32 `json:"weight"`
}

// duration is a time.Duration written as a Go duration string ("250ms").
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string like \"250ms\", got %s", truncate(string(b), 40))
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration string like \"250ms\", got %q", truncate(s, 40))
	}
	*d = duration(v)
	return nil
}

func (d duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// Limits a policy must respect. They keep Envoy's own validation (which a
// policy could otherwise fail, and with it the whole node's snapshot) and
// common sense (a 3-day timeout is a typo).
const (
	maxTimeout       = 5 * time.Minute
	maxAttempts      = 10
	maxSplitEntries  = 16
	maxEjectionTime  = time.Hour
	maxOutlierPeriod = time.Hour
)

var versionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// ParsePolicy decodes and checks a policy document. Absent fields take
// their default; unknown fields, trailing data, a document larger than
// maxBytes (0 means MaxPolicyBytes) and out-of-range values are errors. The
// error lists every problem found, not just the first.
func ParsePolicy(data []byte, maxBytes int) (Policy, error) {
	if maxBytes <= 0 {
		maxBytes = MaxPolicyBytes
	}
	if len(data) > maxBytes {
		return Policy{}, fmt.Errorf("policy is %d bytes, the limit is %d", len(data), maxBytes)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return Policy{}, errors.New("policy is empty; delete the key to use the defaults")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var doc policyDoc
	if err := dec.Decode(&doc); err != nil {
		return Policy{}, fmt.Errorf("policy is not valid JSON for the schema: %s", truncate(err.Error(), 200))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Policy{}, errors.New("policy has data after the JSON object")
	}
	p := DefaultPolicy()
	doc.apply(&p)
	if err := p.Validate(); err != nil {
		return Policy{}, err
	}
	return p, nil
}

func (doc *policyDoc) apply(p *Policy) {
	setDur := func(dst *time.Duration, src *duration) {
		if src != nil {
			*dst = time.Duration(*src)
		}
	}
	setU32 := func(dst *uint32, src *uint32) {
		if src != nil {
			*dst = *src
		}
	}
	setDur(&p.Timeout, doc.Timeout)
	setDur(&p.ConnectTimeout, doc.ConnectTimeout)
	if r := doc.Retries; r != nil {
		if r.Attempts != nil {
			p.Retries.Attempts = *r.Attempts
		}
		setDur(&p.Retries.PerTryTimeout, r.PerTryTimeout)
		setDur(&p.Retries.BackoffBase, r.BackoffBase)
		setDur(&p.Retries.BackoffMax, r.BackoffMax)
		if r.GRPCRetryOn != nil {
			p.Retries.GRPCOn = r.GRPCRetryOn
		}
	}
	if c := doc.CircuitBreaker; c != nil {
		setU32(&p.CircuitBreaker.MaxConnections, c.MaxConnections)
		setU32(&p.CircuitBreaker.MaxPendingRequests, c.MaxPendingRequests)
		setU32(&p.CircuitBreaker.MaxRequests, c.MaxRequests)
		setU32(&p.CircuitBreaker.MaxRetries, c.MaxRetries)
	}
	if o := doc.OutlierDetection; o != nil {
		setU32(&p.Outlier.Consecutive5xx, o.Consecutive5xx)
		setU32(&p.Outlier.ConsecutiveGatewayFailure, o.ConsecutiveGatewayFailure)
		setDur(&p.Outlier.Interval, o.Interval)
		setDur(&p.Outlier.BaseEjectionTime, o.BaseEjectionTime)
		setU32(&p.Outlier.MaxEjectionPercent, o.MaxEjectionPercent)
		setU32(&p.Outlier.FailurePercentageThreshold, o.FailurePercentage)
		setU32(&p.Outlier.FailurePercentageMinimumHosts, o.FailureMinimumHosts)
		setU32(&p.Outlier.FailurePercentageRequestVolume, o.FailureRequestVolume)
	}
	for _, s := range doc.TrafficSplit {
		p.Split = append(p.Split, Split(s))
	}
}

// Validate checks every field and returns all problems joined.
func (p Policy) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	inRange := func(field string, d, min, max time.Duration) {
		if d < min || d > max {
			bad("%s: %s is outside [%s, %s]", field, d, min, max)
		}
	}
	inRange("timeout", p.Timeout, time.Millisecond, maxTimeout)
	inRange("connect_timeout", p.ConnectTimeout, time.Millisecond, time.Minute)
	if p.Retries.Attempts < 0 || p.Retries.Attempts > maxAttempts {
		bad("retries.attempts: %d is outside [0, %d]", p.Retries.Attempts, maxAttempts)
	}
	if p.Retries.PerTryTimeout != 0 {
		inRange("retries.per_try_timeout", p.Retries.PerTryTimeout, time.Millisecond, maxTimeout)
		if p.Retries.PerTryTimeout > p.Timeout {
			bad("retries.per_try_timeout: %s is longer than timeout %s", p.Retries.PerTryTimeout, p.Timeout)
		}
	}
	inRange("retries.backoff_base", p.Retries.BackoffBase, time.Millisecond, time.Minute)
	inRange("retries.backoff_max", p.Retries.BackoffMax, time.Millisecond, time.Minute)
	if p.Retries.BackoffMax < p.Retries.BackoffBase {
		bad("retries.backoff_max: %s is shorter than backoff_base %s", p.Retries.BackoffMax, p.Retries.BackoffBase)
	}
	for field, v := range map[string]uint32{
		"circuit_breaker.max_connections":      p.CircuitBreaker.MaxConnections,
		"circuit_breaker.max_pending_requests": p.CircuitBreaker.MaxPendingRequests,
		"circuit_breaker.max_requests":         p.CircuitBreaker.MaxRequests,
	} {
		if v == 0 {
			bad("%s: must be at least 1 (0 would refuse every request)", field)
		}
	}
	for i, code := range p.Retries.GRPCOn {
		if !slices.Contains(GRPCRetryable, code) {
			bad("retries.grpc_retry_on[%d]: %q is not one of %s", i, truncate(code, 40), strings.Join(GRPCRetryable, ", "))
		}
	}
	if p.Outlier.Consecutive5xx == 0 && p.Outlier.ConsecutiveGatewayFailure == 0 && p.Outlier.FailurePercentageThreshold == 0 {
		bad("outlier_detection: consecutive_5xx, consecutive_gateway_failure and failure_percentage_threshold are all 0; set one to at least 1")
	}
	if p.Outlier.FailurePercentageThreshold > 100 {
		bad("outlier_detection.failure_percentage_threshold: %d is above 100", p.Outlier.FailurePercentageThreshold)
	}
	inRange("outlier_detection.interval", p.Outlier.Interval, time.Millisecond, maxOutlierPeriod)
	inRange("outlier_detection.base_ejection_time", p.Outlier.BaseEjectionTime, time.Millisecond, maxEjectionTime)
	if p.Outlier.MaxEjectionPercent > 100 {
		bad("outlier_detection.max_ejection_percent: %d is above 100", p.Outlier.MaxEjectionPercent)
	}
	if len(p.Split) > 0 {
		if len(p.Split) > maxSplitEntries {
			bad("traffic_split: %d entries, at most %d", len(p.Split), maxSplitEntries)
		}
		seen := map[string]bool{}
		var sum uint64
		for i, s := range p.Split {
			if !versionRE.MatchString(s.Version) {
				bad("traffic_split[%d].version: %q is not a version name (letters, digits, '.', '_', '-')", i, truncate(s.Version, 40))
			} else if seen[s.Version] {
				bad("traffic_split[%d].version: %q appears twice", i, s.Version)
			}
			seen[s.Version] = true
			if s.Weight == 0 {
				bad("traffic_split[%d].weight: must be at least 1 (remove the entry instead)", i)
			}
			sum += uint64(s.Weight)
		}
		if sum != 100 {
			bad("traffic_split: weights sum to %d, want 100", sum)
		}
	}
	return errors.Join(errs...)
}

// NotHonouredByGRPC lists, with why, the settings in p that a proxyless
// gRPC client does not apply: it ejects on failure percentage only, and
// of the circuit breaker it keeps only max_requests.
func (p Policy) NotHonouredByGRPC() []string {
	var out []string
	if p.Outlier.Consecutive5xx > 0 || p.Outlier.ConsecutiveGatewayFailure > 0 {
		why := "gRPC clients eject on failure_percentage_threshold only"
		if p.Outlier.FailurePercentageThreshold == 0 {
			why += ", which is off: they eject nothing"
		}
		out = append(out, "outlier_detection.consecutive_5xx/consecutive_gateway_failure: "+why)
	}
	out = append(out, "circuit_breaker.max_connections/max_pending_requests/max_retries: gRPC clients limit max_requests only")
	out = append(out, "connect_timeout: gRPC clients dial with their own connect timeout")
	if p.Retries.PerTryTimeout != 0 {
		out = append(out, "retries.per_try_timeout: gRPC clients bound the whole call (timeout) only")
	}
	return out
}

// MarshalJSON writes the policy in the same schema ParsePolicy reads.
func (p Policy) MarshalJSON() ([]byte, error) {
	return json.Marshal(p.doc())
}

func (p Policy) doc() policyDoc {
	d := func(v time.Duration) *duration { x := duration(v); return &x }
	u := func(v uint32) *uint32 { return &v }
	attempts := p.Retries.Attempts
	doc := policyDoc{
		Timeout:        d(p.Timeout),
		ConnectTimeout: d(p.ConnectTimeout),
		Retries: &retriesDoc{
			Attempts:    &attempts,
			BackoffBase: d(p.Retries.BackoffBase),
			BackoffMax:  d(p.Retries.BackoffMax),
			GRPCRetryOn: p.Retries.GRPCOn,
		},
		CircuitBreaker: &breakerDoc{
			MaxConnections:     u(p.CircuitBreaker.MaxConnections),
			MaxPendingRequests: u(p.CircuitBreaker.MaxPendingRequests),
			MaxRequests:        u(p.CircuitBreaker.MaxRequests),
			MaxRetries:         u(p.CircuitBreaker.MaxRetries),
		},
		OutlierDetection: &outlierDoc{
			Consecutive5xx:            u(p.Outlier.Consecutive5xx),
			ConsecutiveGatewayFailure: u(p.Outlier.ConsecutiveGatewayFailure),
			Interval:                  d(p.Outlier.Interval),
			BaseEjectionTime:          d(p.Outlier.BaseEjectionTime),
			MaxEjectionPercent:        u(p.Outlier.MaxEjectionPercent),
			FailurePercentage:         u(p.Outlier.FailurePercentageThreshold),
			FailureMinimumHosts:       u(p.Outlier.FailurePercentageMinimumHosts),
			FailureRequestVolume:      u(p.Outlier.FailurePercentageRequestVolume),
		},
	}
	if p.Retries.PerTryTimeout != 0 {
		doc.Retries.PerTryTimeout = d(p.Retries.PerTryTimeout)
	}
	for _, s := range p.Split {
		doc.TrafficSplit = append(doc.TrafficSplit, splitDoc(s))
	}
	return doc
}

func truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
