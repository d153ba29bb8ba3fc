package localenv

import (
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestNATSStartsOnAFreePort(t *testing.T) {
	n := NATST(t)
	if !strings.HasPrefix(n.Addr(), "nats://127.0.0.1:") || strings.HasSuffix(n.Addr(), ":4222") {
		t.Fatalf("Addr = %q, want nats://127.0.0.1:<free port>", n.Addr())
	}
	if _, err := StartNATS(NATSOptions{}); err == nil {
		t.Error("StartNATS without Dir succeeded")
	}
}

// The permissions themselves are tested against a real client in
// services/kit/events (permissions_test.go); here, the URLs.
func TestNATSHandsOutOneUserPerService(t *testing.T) {
	n := NATST(t)
	host := strings.TrimPrefix(n.Addr(), "nats://")
	passwords := map[string]bool{}
	for _, user := range append([]string{NATSAdminUser}, NATSServices...) {
		raw := n.AdminURL()
		if user != NATSAdminUser {
			raw = n.ServiceURL(user)
		}
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		pw, _ := u.User.Password()
		if u.Scheme != "nats" || u.Host != host || u.User.Username() != user || len(pw) < 32 || passwords[pw] {
			t.Errorf("URL of %s = %s, want nats://%s:<own password>@%s", user, u.Redacted(), user, host)
		}
		passwords[pw] = true
	}
	for _, user := range []string{NATSAdminUser, "nobody"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("ServiceURL(%q) did not panic", user)
				}
			}()
			n.ServiceURL(user)
		}()
	}
}

// TestNATSRestartsWhereClientsConnect: after a Shutdown, Restart listens
// on the same port with the same users, so clients reconnect by
// themselves.
func TestNATSRestartsWhereClientsConnect(t *testing.T) {
	n := NATST(t)
	url := n.ServiceURL("order")
	n.Shutdown()
	if err := n.Restart(); err != nil {
		t.Fatal(err)
	}
	if n.Addr() == "" || n.ServiceURL("order") != url {
		t.Errorf("after a restart the URL is %q, want %q", n.ServiceURL("order"), url)
	}
	if !n.srv.ReadyForConnections(time.Second) || !n.srv.JetStreamEnabled() {
		t.Error("the restarted server does not accept clients with JetStream")
	}
}
