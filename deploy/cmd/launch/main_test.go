package main

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestPick(t *testing.T) {
	tests := []struct {
		name         string
		found, local []netip.Addr
		want         string
	}{
		{"the namespace's own address wins", addrs("172.18.0.4", "172.19.0.7"), addrs("127.0.0.1", "172.19.0.7"), "172.19.0.7"},
		{"IPv4 before IPv6", addrs("fd00::4", "172.18.0.4"), addrs("127.0.0.1"), "172.18.0.4"},
		{"IPv4-mapped addresses are unmapped", addrs("::ffff:172.18.0.4"), nil, "172.18.0.4"},
		{"only IPv6", addrs("fd00::4"), nil, "fd00::4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := pick(tt.found, tt.local).String(); got != tt.want {
				t.Errorf("pick = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestResolveRetriesUntilTheNameExists(t *testing.T) {
	calls := 0
	lookup := func(context.Context, string, string) ([]netip.Addr, error) {
		calls++
		if calls < 3 {
			return nil, errors.New("no such host")
		}
		return addrs("172.18.0.9"), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := resolve(ctx, "order-sidecar", lookup, nil, time.Millisecond)
	if err != nil || got.String() != "172.18.0.9" || calls != 3 {
		t.Fatalf("resolve = %v, %v after %d lookups; want 172.18.0.9 after 3", got, err, calls)
	}
}

func TestResolveGivesUpAtTheDeadline(t *testing.T) {
	lookup := func(context.Context, string, string) ([]netip.Addr, error) { return nil, errors.New("no such host") }
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := resolve(ctx, "gone", lookup, nil, time.Millisecond); err == nil {
		t.Fatal("resolve succeeded for a name that never resolves")
	}
}

func TestSetEnv(t *testing.T) {
	got := setEnv([]string{"A=1", "ADVERTISE_ADDR=order-sidecar", "ADVERTISE_ADDRX=keep"}, "ADVERTISE_ADDR", "172.18.0.9")
	want := []string{"A=1", "ADVERTISE_ADDRX=keep", "ADVERTISE_ADDR=172.18.0.9"}
	if !slices.Equal(got, want) {
		t.Errorf("setEnv = %v, want %v", got, want)
	}
}
