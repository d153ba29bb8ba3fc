package localenv

import (
	"strings"
	"testing"
)

func TestNATSStartsOnAFreePort(t *testing.T) {
	n := NATST(t)
	if !strings.HasPrefix(n.URL(), "nats://127.0.0.1:") || strings.HasSuffix(n.URL(), ":4222") {
		t.Fatalf("URL = %q, want nats://127.0.0.1:<free port>", n.URL())
	}
	if _, err := StartNATS(NATSOptions{}); err == nil {
		t.Error("StartNATS without Dir succeeded")
	}
}
