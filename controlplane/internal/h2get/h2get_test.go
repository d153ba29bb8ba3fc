package h2get

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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
		<-release
		w.Header().Set("X-Consul-Index", r.URL.Query().Get("i"))
		fmt.Fprintf(w, "answer %s for %s", r.URL.Query().Get("i"), r.Header.Get("X-Consul-Token"))
	})
	const requests = 35 // more than the 4 × 10 streams: some wait for room
	var wg sync.WaitGroup
	errs := make(chan error, requests)
	for i := range requests {
		wg.Go(func() {
			resp, err := c.Get(t.Context(), fmt.Sprintf("/v1/x?i=%d", i), "X-Consul-Token", "secret")
			switch {
			case err != nil:
				errs <- err
			case resp.Status != 200 || resp.Header.Get("X-Consul-Index") != fmt.Sprint(i) || string(resp.Body) != fmt.Sprintf("answer %d for secret", i):
				errs <- fmt.Errorf("request %d: %d %v %q", i, resp.Status, resp.Header, resp.Body)
			}
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for waiting.Load() < requests && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // poll: every request held by the server
	}
	if n := waiting.Load(); n != requests {
		t.Fatalf("%d of %d requests reached the server", n, requests)
	}
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
		resp, err := c.Get(t.Context(), "/big")
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
		_, err := c.Get(ctx, "/hold")
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
	if resp, err := c.Get(t.Context(), "/other"); err != nil || string(resp.Body) != "ok" {
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
	if _, err := c.Get(t.Context(), "/first"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Get(t.Context(), "/hold")
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
	if resp, err := c.Get(t.Context(), "/again"); err != nil || string(resp.Body) != "ok" {
		t.Fatalf("no new connection after the old one broke: %v", err)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (the broken one and its replacement)", n)
	}
}
