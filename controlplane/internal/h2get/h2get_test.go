package h2get

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/meshop/meshop/controlplane/internal/poll"
)

// server starts an HTTP/2 TLS test server that lets a client hold at
// most streams requests at once per connection, and counts connections.
func server(t *testing.T, streams uint32, h http.HandlerFunc) (*httptest.Server, *atomic.Int32, *Client) {
	t.Helper()
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.Config.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: int(streams)}
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c := New(strings.TrimPrefix(srv.URL, "https://"), srv.Client().Transport.(*http.Transport).TLSClientConfig, 4)
	t.Cleanup(c.Close)
	return srv, &conns, c
}

func TestLongPollsShareFewConnections(t *testing.T) {
	release := make(chan struct{})
	var waiting atomic.Int32
	_, conns, c := server(t, 10, func(w http.ResponseWriter, r *http.Request) {
		waiting.Add(1)
		select {
		case <-release:
		case <-r.Context().Done(): // the test failed before releasing it
			return
		}
		w.Header().Set("X-Consul-Index", r.URL.Query().Get("i"))
		fmt.Fprintf(w, "answer %s for %s", r.URL.Query().Get("i"), r.Header.Get("X-Consul-Token"))
	})
	const requests = 35 // more than the 4 × 10 streams: some wait for room
	var wg sync.WaitGroup
	errs := make(chan error, requests)
	for i := range requests {
		wg.Go(func() {
			resp, err := c.Get(t.Context(), fmt.Sprintf("/v1/x?i=%d", i), time.Minute, "X-Consul-Token", "secret")
			switch {
			case err != nil:
				errs <- err
			case resp.Status != 200 || resp.Header.Get("X-Consul-Index") != fmt.Sprint(i) || string(resp.Body) != fmt.Sprintf("answer %d for secret", i):
				errs <- fmt.Errorf("request %d: %d %v %q", i, resp.Status, resp.Header, resp.Body)
			}
		})
	}
	poll.Until(t, 10*time.Second, func() (bool, string) {
		n := waiting.Load()
		return n == requests, fmt.Sprintf("%d of %d requests reached the server", n, requests)
	})
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := conns.Load(); n != 4 {
		t.Errorf("%d connections for %d requests of at most 10 streams each, want 4", n, requests)
	}
}

func TestLargeAnswerIsFlowControlled(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB: 16 stream windows
	_, _, c := server(t, 100, func(w http.ResponseWriter, r *http.Request) { w.Write(body) })
	for range 3 { // the connection's window is credited back too
		resp, err := c.Get(t.Context(), "/big", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(resp.Body, body) {
			t.Fatalf("body of %d bytes, want %d", len(resp.Body), len(body))
		}
	}
}

func TestCancelledRequestIsReset(t *testing.T) {
	arrived, gone := make(chan struct{}), make(chan struct{})
	_, _, c := server(t, 100, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			close(arrived)
			<-r.Context().Done()
			close(gone)
			return
		}
		w.Write([]byte("ok"))
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := c.Get(ctx, "/hold", time.Minute)
		done <- err
	}()
	<-arrived
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Get returned %v", err)
	}
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the server's handler never saw the request end (no RST_STREAM?)")
	}
	if resp, err := c.Get(t.Context(), "/other", time.Minute); err != nil || string(resp.Body) != "ok" {
		t.Fatalf("the connection is unusable after a reset: %v", err)
	}
}

func TestServerGoneFailsRequestsInFlight(t *testing.T) {
	arrived := make(chan struct{})
	srv, conns, c := server(t, 100, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			close(arrived)
			<-r.Context().Done()
			return
		}
		w.Write([]byte("ok"))
	})
	if _, err := c.Get(t.Context(), "/first", time.Minute); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Get(t.Context(), "/hold", time.Minute)
		done <- err
	}()
	<-arrived
	srv.CloseClientConnections()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a request in flight on a closed connection returned no error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a request in flight on a closed connection never returned")
	}
	if resp, err := c.Get(t.Context(), "/again", time.Minute); err != nil || string(resp.Body) != "ok" {
		t.Fatalf("no new connection after the old one broke: %v", err)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (the broken one and its replacement)", n)
	}
}

func TestInformationalAnswerIsSkipped(t *testing.T) {
	_, _, c := server(t, 100, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Set("X-Consul-Index", "42")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte("[]"))
	})
	resp, err := c.Get(t.Context(), "/", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != http.StatusOK || resp.Header.Get("X-Consul-Index") != "42" {
		t.Errorf("status %d, index %q: want the final answer's 200 and 42", resp.Status, resp.Header.Get("X-Consul-Index"))
	}
}

func TestUnansweredRequestFailsAtItsDeadline(t *testing.T) {
	_, _, c := server(t, 100, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	c.keepAlive = 20 * time.Millisecond
	start := time.Now()
	_, err := c.Get(t.Context(), "/hold", 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "in time") {
		t.Fatalf("a request the server never answers returned %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("failed after %v; its deadline was 100ms", d)
	}
}

func TestSilentConnectionIsClosed(t *testing.T) {
	// The server completes the handshake, then reads but never answers,
	// not even PINGs: a dead peer, as a half-open TCP connection is.
	c := rawServer(t, func(fr *http2.Framer, enc func(...string) []byte) {
		for {
			if _, err := fr.ReadFrame(); err != nil {
				return
			}
		}
	})
	c.keepAlive = 20 * time.Millisecond
	_, err := c.Get(t.Context(), "/hold", time.Hour)
	if err == nil {
		t.Fatal("a request on a connection that stopped answering returned no error")
	}
}

func TestStreamErrorFailsOnlyItsStream(t *testing.T) {
	c := rawServer(t, func(fr *http2.Framer, enc func(...string) []byte) {
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			h, ok := f.(*http2.MetaHeadersFrame)
			if !ok {
				continue
			}
			switch h.PseudoValue("path") {
			case "/bad": // a header value HTTP/2 forbids
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h.StreamID, EndHeaders: true, EndStream: true,
					BlockFragment: enc(":status", "200", "x-bad", "a\x00b")})
			case "/good":
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h.StreamID, EndHeaders: true, EndStream: true,
					BlockFragment: enc(":status", "204")})
			}
		}
	})
	if _, err := c.Get(t.Context(), "/bad", time.Minute); err == nil {
		t.Fatal("an answer with a forbidden header value was accepted")
	}
	resp, err := c.Get(t.Context(), "/good", time.Minute)
	if err != nil || resp.Status != http.StatusNoContent {
		t.Fatalf("the connection did not survive another stream's error: %v", err)
	}
}

func TestConnectionWhoseStreamIDsRunOutIsReplaced(t *testing.T) {
	_, conns, c := server(t, 100, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	if _, err := c.Get(t.Context(), "/", time.Minute); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.conns[0].nextID = lastStreamID - 2 // as after a billion requests
	c.mu.Unlock()
	for range 3 { // the last two IDs, then a new connection
		if resp, err := c.Get(t.Context(), "/", time.Minute); err != nil || string(resp.Body) != "ok" {
			t.Fatalf("after the stream IDs ran out: %v", err)
		}
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// rawServer is a TLS server speaking HTTP/2 through serve, frame by
// frame, after the preface and its SETTINGS.
func rawServer(t *testing.T, serve func(fr *http2.Framer, enc func(...string) []byte)) *Client {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	srv.TLS = &tls.Config{NextProtos: []string{http2.NextProtoTLS}}
	srv.Config.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){
		http2.NextProtoTLS: func(_ *http.Server, tc *tls.Conn, _ http.Handler) {
			defer tc.Close()
			if _, err := io.ReadFull(tc, make([]byte, len(http2.ClientPreface))); err != nil {
				return
			}
			fr := http2.NewFramer(tc, tc)
			fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
			var buf bytes.Buffer
			henc := hpack.NewEncoder(&buf)
			enc := func(kv ...string) []byte {
				buf.Reset()
				for i := 0; i+1 < len(kv); i += 2 {
					henc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
				}
				return bytes.Clone(buf.Bytes())
			}
			if fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 100}) != nil {
				return
			}
			serve(fr, enc)
		},
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c := New(strings.TrimPrefix(srv.URL, "https://"), srv.Client().Transport.(*http.Transport).TLSClientConfig, 1)
	t.Cleanup(c.Close)
	return c
}
