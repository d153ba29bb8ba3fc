// Package h2get sends many concurrent GET requests to one server over a
// few HTTP/2 connections (TLS, ALPN h2), keeping as little as possible
// per request in flight: a stream ID, a deadline, the caller's channel and
// the answer's buffer. It is for long polls, such as one Consul blocking
// query per service held open all the time, where net/http keeps about
// 2.5 KiB and a goroutine per request in flight (its client stream, the
// request's contexts, a writer goroutine), which is most of the control
// plane's memory per service in a catalog of thousands.
//
// It speaks the part of HTTP/2 a client of GETs without bodies needs:
// SETTINGS (the server's concurrent-stream limit), flow control (every
// byte received is credited back at once), PING (answered, and sent on
// an idle connection to find a dead one), RST_STREAM and GOAWAY. No
// redirects, no compression, no request bodies, no retries: a failed
// request returns its error and the caller decides. No request waits
// forever: each has a deadline, and a connection that stops answering
// PINGs is closed, failing its requests.
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
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const (
	// maxBody bounds an answer's body.
	maxBody = 64 << 20
	// lastStreamID is the highest stream ID a client may use.
	lastStreamID = 1<<31 - 1
	// noLimit stands for a server that sent no stream limit.
	noLimit = 1 << 31
)

// keepAliveEvery is how often a connection's deadlines are checked and,
// when nothing was read for that long, a PING is sent; after twice as
// long without a frame the connection is taken for dead.
const keepAliveEvery = 15 * time.Second

// Response is a complete answer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Client sends GETs to one host over at most maxConns connections.
type Client struct {
	addr      string // host:port
	tls       *tls.Config
	maxConns  int
	keepAlive time.Duration // keepAliveEvery; shorter in tests

	mu      sync.Mutex
	conns   []*conn // those that may take new streams or still carry some
	dialing bool
	// freed is closed (and replaced) when a stream ends, a connection
	// comes or goes, or a dial ends: a request waiting for room looks
	// again.
	freed chan struct{}
	// failedDials counts dials that failed, and dialErr is the last
	// one's error: a request that waited while a dial failed fails too,
	// instead of dialling again after it.
	failedDials int
	dialErr     error
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
	return &Client{addr: addr, tls: c, maxConns: max(maxConns, 1), keepAlive: keepAliveEvery, freed: make(chan struct{})}
}

// Get sends GET path (with its query) and the header fields given as
// name, value pairs, and returns the whole answer. It fails once ctx
// ends (the stream is then reset) or timeout has passed without the
// whole answer.
func (c *Client) Get(ctx context.Context, path string, timeout time.Duration, header ...string) (*Response, error) {
	deadline := time.Now().Add(timeout)
	cn, s, err := c.open(ctx, path, deadline, header)
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
		cn.reset(s.id, ctx.Err())
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

// errNotSent: the connection closed between choosing it and sending.
var errNotSent = errors.New("h2get: connection closed before the request was sent")

// open starts a stream on a connection with room for one, dialling one
// when all are full and fewer than maxConns are open, or waiting. One
// connection is dialled at a time, so that a burst of requests opens
// only the connections it fills.
func (c *Client) open(ctx context.Context, path string, deadline time.Time, header []string) (*conn, *stream, error) {
	waitedAt := -1 // failedDials when this request began waiting
	for {
		c.mu.Lock()
		if cn := c.withRoomLocked(); cn != nil {
			s := cn.reserve(deadline)
			c.mu.Unlock()
			err := cn.send(s, path, header)
			if errors.Is(err, errNotSent) {
				continue
			}
			return cn, s, err
		}
		if waitedAt >= 0 && c.failedDials > waitedAt {
			err := c.dialErr
			c.mu.Unlock()
			return nil, nil, err
		}
		if !c.dialing && len(c.conns) < c.maxConns {
			c.dialing = true
			c.mu.Unlock()
			cn, err := c.dial(ctx)
			c.mu.Lock()
			c.dialing = false
			if err == nil {
				c.conns = append(c.conns, cn)
			} else {
				c.failedDials++
				c.dialErr = err
			}
			c.notifyLocked()
			c.mu.Unlock()
			if err != nil {
				return nil, nil, err
			}
			continue
		}
		waitedAt = c.failedDials
		freed := c.freed
		c.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
}

func (c *Client) withRoomLocked() *conn {
	for _, cn := range c.conns {
		if cn.hasRoom() {
			return cn
		}
	}
	return nil
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
		return nil, fmt.Errorf("h2get: %w", err)
	}
	if p := nc.(*tls.Conn).ConnectionState().NegotiatedProtocol; p != http2.NextProtoTLS {
		nc.Close()
		return nil, fmt.Errorf("h2get: %s does not speak HTTP/2 (ALPN %q)", c.addr, p)
	}
	cn := &conn{client: c, nc: nc, fr: http2.NewFramer(nc, nc), nextID: 1, streams: map[uint32]*stream{}, gone: make(chan struct{})}
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
			return fmt.Errorf("sent %v before its SETTINGS", f.Header().Type)
		}
		cn.settings(sf)
		return cn.fr.WriteSettingsAck()
	}()
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("h2get: %s: %w", c.addr, err)
	}
	_ = nc.SetDeadline(time.Time{})
	cn.lastRead.Store(time.Now().UnixNano())
	go cn.readLoop()
	go cn.keepAlive()
	return cn, nil
}

// conn is one HTTP/2 connection.
type conn struct {
	client *Client
	nc     net.Conn
	gone   chan struct{} // closed when the read loop ends
	// lastRead is when a frame was last read (Unix nanoseconds).
	lastRead atomic.Int64

	// wmu orders writes: frames, the header encoder, and stream IDs,
	// which must reach the server in increasing order. It is taken
	// before client.mu, never after.
	wmu  sync.Mutex
	fr   *http2.Framer
	henc *hpack.Encoder
	hbuf bytes.Buffer

	// Under client.mu:
	streams    map[uint32]*stream
	reserved   int    // streams counted before their ID is assigned
	maxStreams uint32 // the server's SETTINGS_MAX_CONCURRENT_STREAMS
	nextID     uint32
	closing    bool // GOAWAY received, IDs used up, or broken: no new streams
}

// stream is one request in flight.
type stream struct {
	id       uint32
	deadline int64 // Unix nanoseconds
	done     chan struct{}
	status   int
	header   http.Header
	body     bytes.Buffer
	err      error
}

func (cn *conn) settings(sf *http2.SettingsFrame) {
	if v, ok := sf.Value(http2.SettingMaxConcurrentStreams); ok {
		cn.maxStreams = v
	} else if cn.maxStreams == 0 {
		cn.maxStreams = noLimit
	}
}

// hasRoom reports whether the connection takes one more stream: under
// the server's limit, with a stream ID left for it and for those already
// reserved (under client.mu).
func (cn *conn) hasRoom() bool {
	return !cn.closing && uint32(len(cn.streams)+cn.reserved) < cn.maxStreams &&
		uint64(cn.nextID)+2*uint64(cn.reserved) <= lastStreamID
}

// reserve counts a stream about to be sent (under client.mu).
func (cn *conn) reserve(deadline time.Time) *stream {
	cn.reserved++
	return &stream{deadline: deadline.UnixNano(), done: make(chan struct{})}
}

// send assigns the stream its ID and writes its HEADERS frame. It
// returns errNotSent when the connection closed since it was chosen.
func (cn *conn) send(s *stream, path string, header []string) error {
	c := cn.client
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	c.mu.Lock()
	cn.reserved--
	if cn.closing {
		c.mu.Unlock()
		return errNotSent
	}
	s.id = cn.nextID
	cn.nextID += 2
	if cn.nextID > lastStreamID {
		cn.closing = true // its last ID: it closes once drained
		c.conns = deleteConn(c.conns, cn)
	}
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

// reset ends a stream with err (its caller gave up, or it is too large
// or late) and tells the server. The write lock is held from the
// stream's end to the reset, so that no new stream reaches the server
// before the reset frees its place.
func (cn *conn) reset(id uint32, err error) {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	if !cn.finish(id, err) {
		return // already answered
	}
	if cn.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
		cn.nc.Close()
	}
}

// finish ends a stream with err (nil: answered); false when it had ended
// already. A closing connection is closed once its last stream ended.
func (cn *conn) finish(id uint32, err error) bool {
	c := cn.client
	c.mu.Lock()
	s := cn.streams[id]
	if s == nil {
		c.mu.Unlock()
		return false
	}
	delete(cn.streams, id)
	drained := cn.closing && len(cn.streams) == 0
	c.notifyLocked()
	c.mu.Unlock()
	s.err = err
	close(s.done)
	if drained {
		cn.nc.Close()
	}
	return true
}

// stream returns a stream in flight (nil when unknown or ended).
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
	close(cn.gone)
	cn.nc.Close()
	for _, s := range streams {
		s.err = fmt.Errorf("h2get: %s: %w", c.addr, err)
		close(s.done)
	}
}

func (cn *conn) read() error {
	for {
		f, err := cn.fr.ReadFrame()
		var se http2.StreamError
		if errors.As(err, &se) { // one stream's fault: the others go on
			cn.reset(se.StreamID, fmt.Errorf("h2get: %w", se))
			continue
		}
		if err != nil {
			return err
		}
		cn.lastRead.Store(time.Now().UnixNano())
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			cn.headers(f)
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

// headers takes a HEADERS frame: the final status and header fields
// (informational 1xx answers are skipped), or trailers.
func (cn *conn) headers(f *http2.MetaHeadersFrame) {
	s := cn.stream(f.StreamID)
	if s == nil {
		return
	}
	if s.status == 0 {
		status, err := strconv.Atoi(f.PseudoValue("status"))
		if err != nil {
			cn.reset(f.StreamID, fmt.Errorf("h2get: answer with status %q", f.PseudoValue("status")))
			return
		}
		if status >= 100 && status < 200 && !f.StreamEnded() {
			return
		}
		s.status = status
		s.header = make(http.Header, len(f.RegularFields()))
	}
	for _, hf := range f.RegularFields() {
		s.header.Add(http.CanonicalHeaderKey(hf.Name), hf.Value)
	}
	if f.StreamEnded() {
		cn.finish(f.StreamID, nil)
	}
}

// data takes a DATA frame into its stream and credits its bytes back to
// the connection (always: even an ended stream's data counted against
// it) and to the stream, unless it ended.
func (cn *conn) data(f *http2.DataFrame) error {
	n := f.Header().Length
	s := cn.stream(f.StreamID)
	if s != nil && s.body.Len()+len(f.Data()) > maxBody {
		cn.reset(f.StreamID, fmt.Errorf("h2get: answer larger than %d bytes", maxBody))
		s = nil
	}
	if s != nil {
		s.body.Write(f.Data())
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

// goAway stops new streams on the connection (a new one may be dialled
// in its place) and fails those the server will not answer; the
// connection closes when its last stream ends.
func (cn *conn) goAway(last uint32, code http2.ErrCode) {
	c := cn.client
	c.mu.Lock()
	cn.closing = true
	c.conns = deleteConn(c.conns, cn)
	var refused []uint32
	for id := range cn.streams {
		if id > last {
			refused = append(refused, id)
		}
	}
	empty := len(cn.streams) == 0
	c.notifyLocked()
	c.mu.Unlock()
	if empty {
		cn.nc.Close()
	}
	for _, id := range refused {
		cn.finish(id, fmt.Errorf("h2get: server going away (%v) before answering", code))
	}
}

// keepAlive fails the streams past their deadline, and sends a PING when
// nothing was read for keepAliveEvery; when nothing came for twice that,
// the connection is dead and is closed (its streams fail).
func (cn *conn) keepAlive() {
	every := cn.client.keepAlive
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-cn.gone:
			return
		case now := <-t.C:
			switch idle := now.Sub(time.Unix(0, cn.lastRead.Load())); {
			case idle > 2*every:
				cn.nc.Close()
				return
			case idle >= every:
				if cn.write(func() error { return cn.fr.WritePing(false, [8]byte{}) }) != nil {
					cn.nc.Close()
					return
				}
			}
			cn.client.mu.Lock()
			var late []uint32
			for id, s := range cn.streams {
				if s.deadline < now.UnixNano() {
					late = append(late, id)
				}
			}
			cn.client.mu.Unlock()
			for _, id := range late {
				cn.reset(id, fmt.Errorf("h2get: no answer from %s in time", cn.client.addr))
			}
		}
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
