package deploy

import (
	stdflag "flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/meshop/meshop/localenv"
)

var update = stdflag.Bool("update", false, "rewrite nats/nats.conf from localenv.NATSServicePermissions")

// natsConfigFile is compose's NATS configuration, relative to the root.
const natsConfigFile = "nats/nats.conf"

// natsPasswordVar is the .env variable holding user's NATS password.
func natsPasswordVar(user string) string {
	if user == localenv.NATSAdminUser {
		return "NATS_ADMIN_PASSWORD"
	}
	return strings.ToUpper(user) + "_NATS_PASSWORD"
}

// natsConfig renders compose's NATS configuration: the users and
// permissions of localenv's embedded server (one source of truth), with
// passwords from the environment.
func natsConfig(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(`# NATS server of docker compose (DESIGN §3, issue 11): JetStream, and no
# anonymous clients. Each service connects as its own user with the same
# permissions as make run's embedded server (localenv.NATSServicePermissions):
# it publishes only its own events, events.<service>.>, and subscribes only
# to reply inboxes. The admin user may do anything: operators and tests
# only, never an app. Passwords come from the environment, which compose
# fills from .env (make up generates it).
#
# Generated from localenv.NATSServicePermissions; do not edit. After
# changing them: cd deploy && go test -run TestNATSConfig -update
server_name: meshop
port: 4222
# Monitoring (the health check) on the container's loopback only.
http: "127.0.0.1:8222"
jetstream {
  store_dir: "/data"
}
authorization {
  users: [
`)
	fmt.Fprintf(&b, "    {user: %q, password: $%s}\n", localenv.NATSAdminUser, natsPasswordVar(localenv.NATSAdminUser))
	for _, svc := range localenv.NATSServices {
		p := localenv.NATSServicePermissions(svc)
		if p.Response != nil {
			t.Fatalf("NATSServicePermissions(%s) sets response permissions, which natsConfig does not render", svc)
		}
		fmt.Fprintf(&b, "    {\n      user: %q\n      password: $%s\n      permissions: {\n", svc, natsPasswordVar(svc))
		for _, sp := range []struct {
			name string
			perm *server.SubjectPermission
		}{{"publish", p.Publish}, {"subscribe", p.Subscribe}} {
			if sp.perm == nil {
				continue
			}
			fmt.Fprintf(&b, "        %s: {\n", sp.name)
			for _, list := range []struct {
				name     string
				subjects []string
			}{{"allow", sp.perm.Allow}, {"deny", sp.perm.Deny}} {
				if len(list.subjects) == 0 {
					continue
				}
				fmt.Fprintf(&b, "          %s: [\n", list.name)
				for _, s := range list.subjects {
					// Quoted: NATS reads an unquoted $NAME as a variable.
					fmt.Fprintf(&b, "            %q\n", s)
				}
				b.WriteString("          ]\n")
			}
			b.WriteString("        }\n")
		}
		b.WriteString("      }\n    }\n")
	}
	b.WriteString("  ]\n}\n")
	return b.String()
}

// TestNATSConfig: nats/nats.conf is what localenv's permissions render to
// (-update rewrites it), and nats-server, reading it as the container
// does, gives every service exactly NATSServicePermissions.
func TestNATSConfig(t *testing.T) {
	path := filepath.Join(repoRoot(t), natsConfigFile)
	want := natsConfig(t)
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("%s is not what localenv.NATSServicePermissions renders to; run: cd deploy && go test -run TestNATSConfig -update", natsConfigFile)
	}

	passwords := map[string]string{}
	for _, user := range append([]string{localenv.NATSAdminUser}, localenv.NATSServices...) {
		passwords[user] = "test-" + user + "-secret"
		t.Setenv(natsPasswordVar(user), passwords[user])
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-server does not take %s: %v", natsConfigFile, err)
	}
	if !opts.JetStream || opts.NoAuthUser != "" || len(opts.Nkeys) > 0 || opts.Username != "" {
		t.Errorf("jetstream %v, no_auth_user %q, nkeys %d, single user %q: want JetStream and only the users", opts.JetStream, opts.NoAuthUser, len(opts.Nkeys), opts.Username)
	}
	if len(opts.Users) != len(passwords) {
		t.Errorf("%d users, want %d (admin and every service)", len(opts.Users), len(passwords))
	}
	for _, u := range opts.Users {
		if u.Password != passwords[u.Username] {
			t.Errorf("user %s: password %q, want $%s", u.Username, u.Password, natsPasswordVar(u.Username))
		}
		var want *server.Permissions
		if u.Username != localenv.NATSAdminUser {
			want = localenv.NATSServicePermissions(u.Username)
		}
		if !reflect.DeepEqual(u.Permissions, want) {
			t.Errorf("user %s: permissions %+v, want %+v", u.Username, u.Permissions, want)
		}
	}
}

// TestComposeNATSUsers: each app connects as its service's user with its
// .env password, and the NATS container gets every password nats.conf
// names.
func TestComposeNATSUsers(t *testing.T) {
	p := loadCompose(t, nil, allProfiles)
	nats := p.Services["nats"]
	if host := hostPath(t, nats, flag([]string(nats.Command), "--config")); host != natsConfigFile {
		t.Errorf("nats runs with --config %q (host %q), want %s", flag([]string(nats.Command), "--config"), host, natsConfigFile)
	}
	for _, user := range append([]string{localenv.NATSAdminUser}, localenv.NATSServices...) {
		v := natsPasswordVar(user)
		if got := env(nats, v); got == "" || got != testSecrets[v] {
			t.Errorf("nats: %s = %q, want ${%s} from .env", v, got, v)
		}
	}
	for _, a := range apps(t, p) {
		u, err := url.Parse(env(a.svc, "NATS_URL"))
		if err != nil || u.Scheme != "nats" || u.Host != "nats:4222" {
			t.Errorf("%s: NATS_URL %q, want nats://<user>:<password>@nats:4222", a.name, env(a.svc, "NATS_URL"))
			continue
		}
		pw, _ := u.User.Password()
		if u.User.Username() != a.service || pw != testSecrets[natsPasswordVar(a.service)] {
			t.Errorf("%s: NATS_URL connects as %q with password %q, want %s with ${%s}", a.name, u.User.Username(), pw, a.service, natsPasswordVar(a.service))
		}
	}
}
