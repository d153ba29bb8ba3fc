package order

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/meshclient"
	"github.com/meshop/meshop/services/kit/telemetry"
	paymentclient "github.com/meshop/meshop/services/payment/client"
)

// TestSidecarRepliesAreNeverRefusals proves, with real HTTP/2 frames on a
// real socket, that what the local Envoy answers by itself for a call to
// payment (no route, no healthy upstream, a timeout, a reset, an RBAC
// denial, a rate limit) and what a hop that knows no gRPC answers (a bare
// HTTP 503 or 404) reach order as a "retry later" (Unavailable, the order
// stays PENDING), never as payment's refusal, which would cancel the order
// or skip its refund. The real meshclient (sidecar mode) dials a fake
// egress listener, the real payment client decodes, and order's own
// adapter and refusedBy classify. The control rows send payment's own
// refusals, encoded as payment's gRPC server encodes them: they must be
// refusals, so the test can fail.
//
// Where each Envoy reply comes from (envoyproxy/envoy):
//   - source/common/http/utility.cc, Utility::prepareLocalReply and
//     encodeLocalReply: a local reply to a gRPC request is trailers-only,
//     one HEADERS frame with END_STREAM: :status 200, content-type
//     application/grpc, grpc-status = Grpc::Utility::httpToGrpcStatus(code)
//     (source/common/grpc/status.cc: 401→16, 403→7, 404→12,
//     429/502/503/504→14), grpc-message = the body, percent-encoded, only
//     when the body is not empty; no content-length. To anything else it
//     is :status <code>, content-length, content-type text/plain, then the
//     body in DATA.
//   - source/common/http/conn_manager_impl.cc, ActiveStream::encodeHeaders:
//     every response gets date and server: envoy.
//   - source/common/router/router.cc: Filter::decodeHeaders, no route →
//     404 with an empty body; sendNoHealthyUpstreamResponse → 503 "no
//     healthy upstream"; onUpstreamTimeoutAbort → 504 "upstream request
//     timeout"; onUpstreamReset → 503 (502 for a protocol error) "upstream
//     connect error or disconnect/reset before headers. reset reason: ..."
//     (reasons from Http::Utility::resetReasonToString), and a reset for
//     overflow (circuit breaker) adds x-envoy-overloaded: true.
//   - source/extensions/filters/http/rbac/rbac_filter.cc: 403 "RBAC: access
//     denied".
//   - envoy.filters.http.local_ratelimit (docs local_rate_limit_filter.rst
//     and the local_ratelimit sandbox): 429 "local_rate_limited" with
//     x-envoy-ratelimited: true.
//
// The fake sends the same frames and header fields in Envoy's order; its
// HPACK bytes are x/net's encoding of them, not Envoy's encoder's.
//
// grpc-go maps an answer without gRPC's content-type by its HTTP status
// (internal/transport HTTPStatusConvTab: 404→Unimplemented,
// 503→Unavailable).
func TestSidecarRepliesAreNeverRefusals(t *testing.T) {
	const upstreamReset = "upstream connect error or disconnect/reset before headers. reset reason: "
	refusal := func(e *errs.Error) []hpack.HeaderField { // as grpc-go's server writes e's status
		st := e.GRPCStatus()
		bin, err := proto.Marshal(st.Proto())
		if err != nil {
			t.Fatal(err)
		}
		return []hpack.HeaderField{{Name: ":status", Value: "200"}, {Name: "content-type", Value: "application/grpc"},
			{Name: "grpc-status", Value: fmt.Sprint(int(st.Code()))}, {Name: "grpc-message", Value: pctEncode(st.Message())},
			{Name: "grpc-status-details-bin", Value: base64.RawStdEncoding.EncodeToString(bin)}}
	}
	for _, tc := range []struct {
		name    string
		headers []hpack.HeaderField // the HEADERS frame, before date and server
		body    string              // a DATA frame after it, if any
		code    codes.Code          // the status grpc-go must make of it
		msg     string              // a part of its message
		refusal string              // "": nobody's refusal; else the one call that must see a refusal
	}{
		{name: "no route", headers: envoyGRPC(12, ""), code: codes.Unimplemented},
		{name: "no healthy upstream", headers: envoyGRPC(14, "no healthy upstream"), code: codes.Unavailable, msg: "no healthy upstream"},
		{name: "upstream timeout", headers: envoyGRPC(14, "upstream request timeout"), code: codes.Unavailable, msg: "upstream request timeout"},
		{name: "connect failure", headers: envoyGRPC(14, upstreamReset+"remote connection failure, transport failure reason: delayed connect error: Connection refused"),
			code: codes.Unavailable, msg: "reset reason: remote connection failure"},
		{name: "circuit breaker", headers: append(envoyGRPC(14, upstreamReset+"overflow"), hpack.HeaderField{Name: "x-envoy-overloaded", Value: "true"}),
			code: codes.Unavailable, msg: "reset reason: overflow"},
		{name: "RBAC denial", headers: envoyGRPC(7, "RBAC: access denied"), code: codes.PermissionDenied, msg: "RBAC: access denied"},
		{name: "rate limited", headers: append(envoyGRPC(14, "local_rate_limited"), hpack.HeaderField{Name: "x-envoy-ratelimited", Value: "true"}),
			code: codes.Unavailable, msg: "local_rate_limited"},
		{name: "plain HTTP 503", headers: []hpack.HeaderField{{Name: ":status", Value: "503"}, {Name: "content-length", Value: "19"},
			{Name: "content-type", Value: "text/plain"}}, body: "no healthy upstream", code: codes.Unavailable, msg: "503"},
		{name: "plain HTTP 404", headers: []hpack.HeaderField{{Name: ":status", Value: "404"}}, code: codes.Unimplemented, msg: "404"},
		{name: "control: invalid card token", refusal: "Charge", code: codes.InvalidArgument, msg: "the card token is not valid",
			headers: refusal(errs.New(errs.Validation, paymentclient.ReasonInvalidCardToken, "the card token is not valid").
				WithDetails(map[string]any{"payment_id": "p1", "order_id": "o1"}))},
		{name: "control: nothing to refund", refusal: "Refund", code: codes.NotFound, msg: `order "o1" has no payment`,
			headers: refusal(errs.Newf(errs.NotFound, paymentclient.ReasonPaymentNotFound, "order %q has no payment", "o1"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			egress, requests := fakeEnvoy(t, tc.headers, tc.body)
			payments := paymentsVia(t, egress)
			for _, call := range []struct {
				method  string
				reasons []string // the ones order's checkout takes for this call's refusals
				do      func(context.Context) error
			}{
				{"Charge", chargeRefusals, func(ctx context.Context) error {
					_, err := payments.Charge(ctx, Charge{OrderID: "o1", UserID: "u1", AmountCents: 1000, Currency: "USD", CardToken: "tok_visa"})
					return err
				}},
				{"Refund", nothingToRefund, func(ctx context.Context) error { return payments.Refund(ctx, "o1") }},
			} {
				if tc.refusal != "" && tc.refusal != call.method {
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				err := call.do(ctx)
				if err == nil {
					t.Fatalf("%s: no error", call.method)
				}
				// The egress got the call as Envoy would (the upstream as
				// :authority), and the client read the reply (the status
				// check: not a deadline or a broken connection).
				select {
				case got := <-requests:
					if want := "payment /meshop.payment.v1.Payments/" + call.method; got != want {
						t.Errorf("%s: the egress got %q, want %q", call.method, got, want)
					}
				case <-ctx.Done():
					t.Fatalf("%s: the egress got no request (err %v)", call.method, err)
				}
				if st, _ := status.FromError(errs.As(err).Err); st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
					t.Fatalf("%s: the wire status is %v %q, want %v with %q (err %v)", call.method, st.Code(), st.Message(), tc.code, tc.msg, err)
				}
				refused := refusedBy(err, call.reasons)
				if want := tc.refusal == call.method; refused != want {
					t.Errorf("%s: refusedBy = %v, want %v (err %v)", call.method, refused, want, err)
				}
				if e := errs.As(err); !refused && (e.Kind != errs.Unavailable || e.Details["service"] != "payment") {
					t.Errorf("%s: kind %v, details %v; want Unavailable from service payment, which checkout leaves PENDING", call.method, e.Kind, e.Details)
				}
			}
		})
	}
}

// envoyGRPC is the HEADERS of Envoy's local reply to a gRPC request:
// trailers-only, grpc-message only for a non-empty body.
func envoyGRPC(grpcStatus int, body string) []hpack.HeaderField {
	h := []hpack.HeaderField{{Name: ":status", Value: "200"}, {Name: "content-type", Value: "application/grpc"},
		{Name: "grpc-status", Value: fmt.Sprint(grpcStatus)}}
	if body != "" {
		h = append(h, hpack.HeaderField{Name: "grpc-message", Value: pctEncode(body)})
	}
	return h
}

// pctEncode is gRPC's grpc-message encoding (and Envoy's
// PercentEncoding::encode): '%' and bytes outside ' '..'~' as %XX.
func pctEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c > '~' || c == '%' {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// fakeEnvoy is an h2c listener on 127.0.0.1 that answers every request
// stream with one HEADERS frame of headers plus Envoy's date and server
// (END_STREAM unless body follows in a DATA frame). It sends each
// request's ":authority :path" on the returned channel.
func fakeEnvoy(t *testing.T, headers []hpack.HeaderField, body string) (string, <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	requests := make(chan string, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serveH2C(c, headers, body, requests)
		}
	}()
	return "http://" + ln.Addr().String(), requests
}

func serveH2C(c net.Conn, headers []hpack.HeaderField, body string, requests chan<- string) {
	defer c.Close()
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c, preface); err != nil || string(preface) != http2.ClientPreface {
		return
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if fr.WriteSettings() != nil {
		return
	}
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block) // one per connection: the peer keeps the dynamic table
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				err = fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				err = fr.WritePing(true, f.Data)
			}
		case *http2.MetaHeadersFrame:
			select {
			case requests <- f.PseudoValue("authority") + " " + f.PseudoValue("path"):
			default:
			}
			block.Reset()
			all := append(append([]hpack.HeaderField(nil), headers...),
				hpack.HeaderField{Name: "date", Value: time.Now().UTC().Format(http.TimeFormat)},
				hpack.HeaderField{Name: "server", Value: "envoy"})
			for _, h := range all {
				if err := enc.WriteField(h); err != nil {
					return
				}
			}
			err = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.StreamID, BlockFragment: block.Bytes(),
				EndHeaders: true, EndStream: body == ""})
			if err == nil && body != "" {
				err = fr.WriteData(f.StreamID, true, []byte(body))
			}
		}
		if err != nil {
			return
		}
	}
}

// paymentsVia is order's Payments over the real payment client on the
// real mesh client, in sidecar mode with its egress at egress.
func paymentsVia(t *testing.T, egress string) Payments {
	t.Helper()
	tel, err := telemetry.New(context.Background(), telemetry.Config{Service: "order"})
	if err != nil {
		t.Fatal(err)
	}
	mc, err := meshclient.New(meshclient.Config{Mode: meshclient.Sidecar, EgressURL: egress, Upstreams: []string{"payment"},
		Timeout: 5 * time.Second, Telemetry: tel, Metrics: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mc.Close)
	conn, err := mc.Conn("payment")
	if err != nil {
		t.Fatal(err)
	}
	return NewPayments(paymentclient.New(conn))
}
