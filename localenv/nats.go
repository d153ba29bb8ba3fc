package localenv

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATSServices are the services that get NATS credentials when
// NATSOptions.Services is empty: every Meshop service.
var NATSServices = []string{"auth", "user", "product", "order", "payment", "notification"}

// NATSAdminUser is the user with every permission, for tests and operators
// (the nats CLI); never give it to an app.
const NATSAdminUser = "admin"

// NATSOptions configure an embedded NATS server.
type NATSOptions struct {
	// Dir holds the JetStream store (Dir/jetstream). Required: events must
	// survive a restart of a local run, as they do with a real server.
	Dir string
	// Port is the client port on 127.0.0.1; 0 lets the kernel pick a free
	// one (never NATS's default 4222, which a system server may own).
	Port int
	// Services [NATSServices] get a user each, named after the service,
	// with NATSServicePermissions.
	Services []string
}

// NATS is a nats-server with JetStream running inside this process: the
// events bus of local runs and tests, where no NATS_URL is given.
//
// It refuses anonymous clients. Each service has its own user (ServiceURL)
// allowed only its own event subjects (NATSServicePermissions); the admin
// user (AdminURL) may do anything. Passwords are random per start.
type NATS struct {
	srv       *server.Server
	opts      *server.Options   // what Restart starts again
	passwords map[string]string // user → password
}

// NATSServicePermissions is what service svc's NATS user may do: publish
// its own events (events.<svc>.>) and its consumer's dead letters
// (events.dlq.<svc>: a service's consumer is named after it), create or
// update the EVENTS stream, create, read and pull from its own durable
// consumer EVENTS/<svc> and ack what it delivers, and receive replies on
// _INBOX.>. Anything else, such as publishing another service's events,
// subscribing to events directly, or deleting streams and consumers, is
// refused by the server.
func NATSServicePermissions(svc string) *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			"events." + svc + ".>",
			"events.dlq." + svc,
			"$JS.API.INFO",
			"$JS.API.STREAM.CREATE.EVENTS",
			"$JS.API.STREAM.UPDATE.EVENTS",
			"$JS.API.STREAM.INFO.EVENTS",
			"$JS.API.CONSUMER.CREATE.EVENTS." + svc,
			"$JS.API.CONSUMER.CREATE.EVENTS." + svc + ".>",
			"$JS.API.CONSUMER.DURABLE.CREATE.EVENTS." + svc,
			"$JS.API.CONSUMER.INFO.EVENTS." + svc,
			"$JS.API.CONSUMER.MSG.NEXT.EVENTS." + svc,
			"$JS.ACK.EVENTS." + svc + ".>",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
	}
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
	services := opts.Services
	if len(services) == 0 {
		services = NATSServices
	}
	n := &NATS{passwords: map[string]string{}}
	users := make([]*server.User, 0, len(services)+1)
	for _, name := range append([]string{NATSAdminUser}, services...) {
		if _, dup := n.passwords[name]; dup || name == "" {
			return nil, fmt.Errorf("localenv: nats user %q empty or given twice", name)
		}
		pw, err := randomPassword()
		if err != nil {
			return nil, err
		}
		n.passwords[name] = pw
		u := &server.User{Username: name, Password: pw}
		if name != NATSAdminUser {
			u.Permissions = NATSServicePermissions(name)
		}
		users = append(users, u)
	}
	n.opts = &server.Options{
		ServerName: "meshop-local",
		Host:       "127.0.0.1",
		Port:       port,
		HTTPPort:   0, // no monitoring listener
		JetStream:  true,
		StoreDir:   storeDir,
		NoSigs:     true, // the embedding process owns its signals
		NoLog:      true,
		// Users set and no NoAuthUser: a client without credentials is
		// refused (Authorization Violation).
		Users: users,
	}
	if err := n.start(); err != nil {
		return nil, err
	}
	// A restart listens where the clients were told to connect.
	n.opts.Port = n.srv.Addr().(*net.TCPAddr).Port
	return n, nil
}

// start starts a server of n.opts and waits until it accepts clients.
func (n *NATS) start() error {
	srv, err := server.NewServer(n.opts)
	if err != nil {
		return fmt.Errorf("localenv: nats server: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return fmt.Errorf("localenv: nats server on port %d not ready within 10s (port taken?)", n.opts.Port)
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		return fmt.Errorf("localenv: nats server started without JetStream (store %s)", n.opts.StoreDir)
	}
	n.srv = srv
	return nil
}

// Restart starts a stopped server again (after Shutdown) on the same port
// with the same users and JetStream store: an outage, as clients see it.
func (n *NATS) Restart() error { return n.start() }

func randomPassword() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("localenv: nats password: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// Addr is the server's URL without credentials, nats://127.0.0.1:<port>:
// for display; a client connecting with it alone is refused.
func (n *NATS) Addr() string { return n.srv.ClientURL() }

// ServiceURL is where service svc connects, with its own credentials:
// nats://<svc>:<password>@127.0.0.1:<port>. It panics if svc has no user
// (not in NATSOptions.Services).
func (n *NATS) ServiceURL(svc string) string {
	if svc == NATSAdminUser {
		panic("localenv: NATS.ServiceURL(" + svc + "): not a service; use AdminURL")
	}
	return n.userURL(svc)
}

// AdminURL carries the admin user's credentials, which may do anything:
// for tests and operators, never for an app.
func (n *NATS) AdminURL() string { return n.userURL(NATSAdminUser) }

// Services are the services with a user, sorted.
func (n *NATS) Services() []string {
	var out []string
	for u := range n.passwords {
		if u != NATSAdminUser {
			out = append(out, u)
		}
	}
	slices.Sort(out)
	return out
}

func (n *NATS) userURL(user string) string {
	pw, ok := n.passwords[user]
	if !ok {
		panic(fmt.Sprintf("localenv: NATS has no user %q (users: %s and %v; see NATSOptions.Services)", user, NATSAdminUser, n.Services()))
	}
	u, err := url.Parse(n.srv.ClientURL())
	if err != nil {
		panic(fmt.Sprintf("localenv: nats client URL %q: %v", n.srv.ClientURL(), err))
	}
	u.User = url.UserPassword(user, pw)
	return u.String()
}

// Shutdown stops the server and waits until it has stopped. The JetStream
// store stays in Dir.
func (n *NATS) Shutdown() {
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
}
