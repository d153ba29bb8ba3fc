package localenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATSOptions configure an embedded NATS server.
type NATSOptions struct {
	// Dir holds the JetStream store (Dir/jetstream). Required: events must
	// survive a restart of a local run, as they do with a real server.
	Dir string
	// Port is the client port on 127.0.0.1; 0 lets the kernel pick a free
	// one (never NATS's default 4222, which a system server may own).
	Port int
}

// NATS is a nats-server with JetStream running inside this process: the
// events bus of local runs and tests, where no NATS_URL is given.
type NATS struct {
	srv *server.Server
}

// StartNATS starts an embedded NATS server with JetStream and waits until
// it accepts clients.
func StartNATS(opts NATSOptions) (*NATS, error) {
	if opts.Dir == "" {
		return nil, errors.New("localenv: StartNATS needs a Dir for the JetStream store")
	}
	storeDir := filepath.Join(opts.Dir, "jetstream")
	if err := os.MkdirAll(storeDir, 0o755); err != nil {
		return nil, fmt.Errorf("localenv: nats store: %w", err)
	}
	port := opts.Port
	if port == 0 {
		port = server.RANDOM_PORT // nats-server reads 0 as its default, 4222
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "meshop-local",
		Host:       "127.0.0.1",
		Port:       port,
		HTTPPort:   0, // no monitoring listener
		JetStream:  true,
		StoreDir:   storeDir,
		NoSigs:     true, // the embedding process owns its signals
		NoLog:      true,
	})
	if err != nil {
		return nil, fmt.Errorf("localenv: nats server: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("localenv: nats server on port %d not ready within 10s (port taken?)", opts.Port)
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		return nil, fmt.Errorf("localenv: nats server started without JetStream (store %s)", storeDir)
	}
	return &NATS{srv: srv}, nil
}

// URL is where clients connect, nats://127.0.0.1:<port>.
func (n *NATS) URL() string { return n.srv.ClientURL() }

// Shutdown stops the server and waits until it has stopped. The JetStream
// store stays in Dir.
func (n *NATS) Shutdown() {
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
}
