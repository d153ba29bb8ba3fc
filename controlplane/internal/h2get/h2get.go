// Package h2get sends many concurrent GET requests to one server over a
// few HTTP/2 connections (TLS, ALPN h2), keeping as little as possible
// per request in flight: a stream ID, the caller's channel and the
// answer's buffer. It is for long polls, such as one Consul blocking
// query per service held open all the time, where net/http keeps about
// 2.5 KiB and a goroutine per request in flight (its client stream, the
// request's contexts, a writer goroutine), which is most of the control
// plane's memory per service in a catalog of thousands.
//
// It speaks the part of HTTP/2 a client of GETs without bodies needs:
// SETTINGS (the server's concurrent-stream limit), flow control (every
// byte received is credited back at once), PING, RST_STREAM and GOAWAY.
// No redirects, no compression, no request bodies, no retries: a failed
// request returns its error and the caller decides.
package h2get

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// maxBody bounds an answer's body.
const maxBody = 64 << 20

// Response is a complete answer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Client sends GETs to one host over at most MaxConns connections.
type Client struct {
	addr     string // host:port
	tls      *tls.Config
	maxConns int

	mu      sync.Mutex
	conns   []*conn
	dialing bool
	// freed is closed (and replaced) when a stream ends, a connection
	// comes or goes: a request waiting for room looks again.
	freed chan struct{}
}

// New returns a client of the TLS server at addr (host:port). tlsConf
// may be nil (the system's roots); its NextProtos are set to h2.
func New(addr string, tlsConf *tls.Config, maxConns int) *Client {
	c := &tls.Config{}
	if tlsConf != nil {
		c = tlsConf.Clone()
	}
	c.NextProtos = []string{http2.NextProtoTLS}
	if c.ServerName == "" {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			c.ServerName = host
		}
	}
	return &Client{addr: addr, tls: c, maxConns: max(maxConns, 1), freed: make(chan struct{})}
}

// Get sends GET path (with its query) and the header fields given as
// name, value pairs, and returns the whole answer, or ctx's error once
// ctx ends (the stream is then reset).
func (c *Client) Get(ctx context.Context, path string, header ...string) (*Response, error) {
	cn, s, err := c.open(ctx, path, header)
	if err != nil {
		return nil, err
	}
	select {
	case <-s.done:
		if s.err != nil {
			return nil, s.err
		}
		return &Response{Status: s.status, Header: s.header, Body: s.body.Bytes()}, nil
	case <-ctx.Done():
		cn.cancel(s)
		return nil, ctx.Err()
	}
}

// Close closes every connection; requests in flight fail.
func (c *Client) Close() {
	c.mu.Lock()
	conns := c.conns
	c.mu.Unlock()
	for _, cn := range conns {
		cn.nc.Close()
	}
}

// open starts a stream on a connection with room for one, dialling one
// when all are full and fewer than maxConns are open, or waiting. One
// connection is dialled at a time, so that a burst of requests opens
// only the connections it fills.
func (c *Client) open(ctx context.Context, path string, header []string) (*conn, *stream, error) {
	for {
		c.mu.Lock()
		for _, cn := range c.conns {
			if cn.hasRoom() {
				s := cn.reserve()
				c.mu.Unlock()
				if err := cn.send(s, path, header); err != nil {
					return nil, nil, err
				}
				return cn, s, nil
			}
		}
		if !c.dialing && len(c.conns) < c.maxConns {
			c.dialing = true
			c.mu.Unlock()
			cn, err := c.dial(ctx)
			c.mu.Lock()
			c.dialing = false
			if err == nil {
				c.conns = append(c.conns, cn)
			}
			c.notifyLocked()
			c.mu.Unlock()
			if err != nil {
				return nil, nil, err
			}
			continue
		}
		freed := c.freed
		c.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
}

// notifyLocked wakes the requests waiting for room.
func (c *Client) notifyLocked() {
	close(c.freed)
	c.freed = make(chan struct{})
}

// dial opens a connection and reads the server's first SETTINGS (its
// stream limit) before any request is sent on it.
func (c *Client) dial(ctx context.Context) (*conn, error) {
	d := tls.Dialer{Config: c.tls, NetDialer: &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}}
	nc, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil, err
	}
	if p := nc.(*tls.Conn).ConnectionState().NegotiatedProtocol; p != http2.NextProtoTLS {
		nc.Close()
		return nil, fmt.Errorf("h2get: %s does not speak HTTP/2 (ALPN %q)", c.addr, p)
	}
	cn := &conn{client: c, nc: nc, fr: http2.NewFramer(nc, nc), nextID: 1, streams: map[uint32]*stream{}}
	cn.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	cn.fr.MaxHeaderListSize = 1 << 20
	cn.henc = hpack.NewEncoder(&cn.hbuf)
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	err = func() error {
		if _, err := nc.Write([]byte(http2.ClientPreface)); err != nil {
			return err
		}
		if err := cn.fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0}); err != nil {
			return err
		}
		// The connection's window is opened wide once; streams keep the
		// default and are credited as their data arrives.
		if err := cn.fr.WriteWindowUpdate(0, 1<<30); err != nil {
			return err
		}
		f, err := cn.fr.ReadFrame()
		if err != nil {
			return err
		}
		sf, ok := f.(*http2.SettingsFrame)
		if !ok || sf.IsAck() {
			return fmt.Errorf("h2get: %s sent %v before its SETTINGS", c.addr, f.Header().Type)
		}
		cn.settings(sf)
		return cn.fr.WriteSettingsAck()
	}()
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("h2get: %s: %w", c.addr, err)
	}
	_ = nc.SetDeadline(time.Time{})
	go cn.readLoop()
	return cn, nil
}

// conn is one HTTP/2 connection.
type conn struct {
	client *Client
	nc     net.Conn

	// wmu orders writes: frames, the header encoder, and stream IDs,
	// which must reach the server in increasing order.
	wmu  sync.Mutex
	fr   *http2.Framer
	henc *hpack.Encoder
	hbuf bytes.Buffer

	// Under client.mu:
	streams    map[uint32]*stream
	reserved   int    // streams counted before their ID is assigned
	maxStreams uint32 // the server's SETTINGS_MAX_CONCURRENT_STREAMS
	nextID     uint32
	closing    bool // GOAWAY received, IDs exhausted, or broken: no new streams
}

// stream is one request in flight.
type stream struct {
	id     uint32
	done   chan struct{}
	status int
	header http.Header
	body   bytes.Buffer
	err    error
}

// noLimit stands for a server that sent no stream limit.
const noLimit = 1 << 31

func (cn *conn) settings(sf *http2.SettingsFrame) {
	if v, ok := sf.Value(http2.SettingMaxConcurrentStreams); ok {
		cn.maxStreams = v
	} else if cn.maxStreams == 0 {
		cn.maxStreams = noLimit
	}
}

// hasRoom reports whether the connection takes one more stream (under
// client.mu).
func (cn *conn) hasRoom() bool {
	return !cn.closing && uint32(len(cn.streams)+cn.reserved) < cn.maxStreams && cn.nextID < 1<<31-1
}

// reserve counts a stream about to be sent (under client.mu).
func (cn *conn) reserve() *stream {
	cn.reserved++
	return &stream{done: make(chan struct{})}
}

// send assigns the stream its ID and writes its HEADERS frame.
func (cn *conn) send(s *stream, path string, header []string) error {
	c := cn.client
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	c.mu.Lock()
	cn.reserved--
	if cn.closing {
		c.mu.Unlock()
		return errors.New("h2get: connection closed before the request was sent")
	}
	s.id = cn.nextID
	cn.nextID += 2
	cn.streams[s.id] = s
	c.mu.Unlock()

	cn.hbuf.Reset()
	fields := append([]string{":method", "GET", ":scheme", "https", ":authority", c.addr, ":path", path}, header...)
	for i := 0; i+1 < len(fields); i += 2 {
		_ = cn.henc.WriteField(hpack.HeaderField{Name: strings.ToLower(fields[i]), Value: fields[i+1]})
	}
	err := cn.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: s.id, BlockFragment: cn.hbuf.Bytes(), EndStream: true, EndHeaders: true})
	if err != nil {
		// The stream is registered: the read loop fails it with every
		// other one once the closed connection breaks its read.
		cn.nc.Close()
	}
	return nil
}

// cancel resets a stream its caller gave up on.
func (cn *conn) cancel(s *stream) {
	if cn.end(s.id) == nil {
		return // already answered
	}
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	if cn.fr.WriteRSTStream(s.id, http2.ErrCodeCancel) != nil {
		cn.nc.Close()
	}
}

// end removes a stream and returns it (nil when it was gone already).
func (cn *conn) end(id uint32) *stream {
	c := cn.client
	c.mu.Lock()
	defer c.mu.Unlock()
	s := cn.streams[id]
	if s == nil {
		return nil
	}
	delete(cn.streams, id)
	if cn.closing && len(cn.streams) == 0 {
		cn.nc.Close()
	}
	c.notifyLocked()
	return s
}

// finish ends a stream with err (nil: answered).
func (cn *conn) finish(id uint32, err error) {
	if s := cn.end(id); s != nil {
		s.err = err
		close(s.done)
	}
}

// stream returns a stream in flight (nil when unknown or cancelled).
func (cn *conn) stream(id uint32) *stream {
	cn.client.mu.Lock()
	defer cn.client.mu.Unlock()
	return cn.streams[id]
}

// readLoop reads the server's frames until the connection breaks, then
// fails every stream still in flight.
func (cn *conn) readLoop() {
	err := cn.read()
	c := cn.client
	c.mu.Lock()
	cn.closing = true
	streams := cn.streams
	cn.streams = map[uint32]*stream{}
	c.conns = deleteConn(c.conns, cn)
	c.notifyLocked()
	c.mu.Unlock()
	cn.nc.Close()
	for _, s := range streams {
		s.err = fmt.Errorf("h2get: %s: %w", c.addr, err)
		close(s.done)
	}
}

func (cn *conn) read() error {
	for {
		f, err := cn.fr.ReadFrame()
		if err != nil {
			return err
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			s := cn.stream(f.StreamID)
			if s == nil {
				continue
			}
			if s.status == 0 { // trailers leave the status alone
				s.status, _ = strconv.Atoi(f.PseudoValue("status"))
				s.header = make(http.Header, len(f.RegularFields()))
			}
			for _, hf := range f.RegularFields() {
				s.header.Add(http.CanonicalHeaderKey(hf.Name), hf.Value)
			}
			if f.StreamEnded() {
				cn.finish(f.StreamID, nil)
			}
		case *http2.DataFrame:
			if err := cn.data(f); err != nil {
				return err
			}
		case *http2.RSTStreamFrame:
			cn.finish(f.StreamID, fmt.Errorf("h2get: stream reset by the server: %v", f.ErrCode))
		case *http2.SettingsFrame:
			if f.IsAck() {
				continue
			}
			cn.client.mu.Lock()
			cn.settings(f)
			cn.client.notifyLocked()
			cn.client.mu.Unlock()
			if err := cn.write(func() error { return cn.fr.WriteSettingsAck() }); err != nil {
				return err
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				if err := cn.write(func() error { return cn.fr.WritePing(true, f.Data) }); err != nil {
					return err
				}
			}
		case *http2.GoAwayFrame:
			cn.goAway(f.LastStreamID, f.ErrCode)
		}
	}
}

// data takes a DATA frame into its stream and credits its bytes back to
// the connection (always: even a cancelled stream's data counted
// against it) and to the stream, unless it ended.
func (cn *conn) data(f *http2.DataFrame) error {
	n := f.Header().Length
	s := cn.stream(f.StreamID)
	if s != nil {
		if s.body.Len()+len(f.Data()) > maxBody {
			cn.finish(f.StreamID, fmt.Errorf("h2get: answer larger than %d bytes", maxBody))
			if err := cn.write(func() error { return cn.fr.WriteRSTStream(f.StreamID, http2.ErrCodeCancel) }); err != nil {
				return err
			}
			s = nil
		} else {
			s.body.Write(f.Data())
		}
	}
	if n > 0 {
		err := cn.write(func() error {
			if err := cn.fr.WriteWindowUpdate(0, n); err != nil || s == nil || f.StreamEnded() {
				return err
			}
			return cn.fr.WriteWindowUpdate(f.StreamID, n)
		})
		if err != nil {
			return err
		}
	}
	if s != nil && f.StreamEnded() {
		cn.finish(f.StreamID, nil)
	}
	return nil
}

// goAway stops new streams on the connection and fails those the server
// will not answer (they may be sent again); the connection closes when
// its last stream ends.
func (cn *conn) goAway(last uint32, code http2.ErrCode) {
	c := cn.client
	c.mu.Lock()
	cn.closing = true
	var refused []uint32
	for id := range cn.streams {
		if id > last {
			refused = append(refused, id)
		}
	}
	if len(cn.streams) == 0 {
		cn.nc.Close()
	}
	c.notifyLocked()
	c.mu.Unlock()
	for _, id := range refused {
		cn.finish(id, fmt.Errorf("h2get: server going away (%v) before answering", code))
	}
}

// write runs one frame write under the write lock.
func (cn *conn) write(f func() error) error {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	return f()
}

func deleteConn(conns []*conn, cn *conn) []*conn {
	for i, x := range conns {
		if x == cn {
			return append(conns[:i:i], conns[i+1:]...)
		}
	}
	return conns
}
