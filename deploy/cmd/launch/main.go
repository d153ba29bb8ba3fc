// Command launch starts a Meshop service inside a container. It exists for
// one reason: Consul must hold an IP address for every instance (the
// control plane turns instances into Envoy load assignments, which take
// IPs), while compose knows containers by name. So when ADVERTISE_ADDR is a
// name, launch resolves it, preferring an address of this container's own
// network namespace, puts the IP in ADVERTISE_ADDR and replaces itself with
// the service (exec), so the service is PID 1 and gets the signals.
//
//	launch /usr/local/bin/app [args...]
//
// ADVERTISE_ADDR unset or already an IP: launch changes nothing.
// LAUNCH_RESOLVE_TIMEOUT [30s]: how long the name lookup is retried (the
// container's DNS entry may appear a moment after it starts).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"syscall"
	"time"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("component", "launch")
	if err := run(log); err != nil {
		log.Error("cannot start the service", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	if len(os.Args) < 2 {
		return errors.New("usage: launch /path/to/service [args...]")
	}
	timeout := 30 * time.Second
	if v := os.Getenv("LAUNCH_RESOLVE_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("LAUNCH_RESOLVE_TIMEOUT: want a positive duration like 30s, got %q", v)
		}
		timeout = d
	}
	env := os.Environ()
	if name := os.Getenv("ADVERTISE_ADDR"); name != "" {
		if _, err := netip.ParseAddr(name); err != nil {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			ip, err := resolve(ctx, name, net.DefaultResolver.LookupNetIP, localAddrs(), 500*time.Millisecond)
			cancel()
			if err != nil {
				return err
			}
			log.Info("advertise address resolved", "name", name, "ip", ip.String())
			env = setEnv(env, "ADVERTISE_ADDR", ip.String())
		}
	}
	return syscall.Exec(os.Args[1], os.Args[1:], env)
}

// lookupFunc is net.Resolver.LookupNetIP.
type lookupFunc func(ctx context.Context, network, host string) ([]netip.Addr, error)

// resolve looks name up until it has an answer or ctx ends, and picks the
// address to advertise.
func resolve(ctx context.Context, name string, lookup lookupFunc, local []netip.Addr, every time.Duration) (netip.Addr, error) {
	for {
		addrs, err := lookup(ctx, "ip", name)
		if err == nil && len(addrs) > 0 {
			return pick(addrs, local), nil
		}
		if err == nil {
			err = errors.New("no addresses")
		}
		select {
		case <-ctx.Done():
			return netip.Addr{}, fmt.Errorf("ADVERTISE_ADDR %q: no IP address for it before the deadline: %w", name, err)
		case <-time.After(every):
		}
	}
}

// pick prefers an address of this network namespace (the name is the
// sidecar's, whose namespace the app shares), then IPv4, then the first.
func pick(addrs, local []netip.Addr) netip.Addr {
	for _, a := range addrs {
		if slices.Contains(local, a.Unmap()) {
			return a.Unmap()
		}
	}
	for _, a := range addrs {
		if a.Unmap().Is4() {
			return a.Unmap()
		}
	}
	return addrs[0]
}

// localAddrs are the addresses of this network namespace's interfaces.
func localAddrs() []netip.Addr {
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, ia := range ifaddrs {
		if p, err := netip.ParsePrefix(ia.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out
}

// setEnv returns env with key set to value.
func setEnv(env []string, key, value string) []string {
	out := slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		return len(kv) > len(key) && kv[:len(key)+1] == key+"="
	})
	return append(out, key+"="+value)
}
