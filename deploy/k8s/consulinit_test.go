package k8s

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
)

// fakeCurl records each call as <n>.method, <n>.url and <n>.body in
// $CALLS and answers: 404 (exit 22) to the lookups of a policy, a role or
// the auth method by name, one old binding rule to the list, {} otherwise.
const fakeCurl = `#!/bin/sh
n=$(ls "$CALLS" | grep -c '\.method$')
method=GET body= url=
while [ $# -gt 0 ]; do
  case $1 in
    -X) method=$2; shift ;;
    -d) body=$2; shift ;;
    -H|--cacert) shift ;;
    -*) ;;
    *) url=$1 ;;
  esac
  shift
done
printf '%s' "$method" >"$CALLS/$n.method"
printf '%s' "$url" >"$CALLS/$n.url"
printf '%s' "$body" >"$CALLS/$n.body"
case "$method $url" in
  "GET "*/v1/acl/policy/name/*|"GET "*/v1/acl/role/name/*|"GET "*/v1/acl/auth-method/*) exit 22 ;;
  "GET "*/v1/acl/binding-rules*) echo '[{"ID": "old-rule"}]' ;;
  *) echo '{}' ;;
esac
`

// consulCall is one recorded call of consul-init.sh to Consul's API.
type consulCall struct {
	method, path string
	body         map[string]any
}

// TestConsulInitPreparesConsul runs the Job's script from the ConfigMap
// with a stand-in curl (and consul) on PATH and the ConfigMaps' files as
// the Job mounts them: it writes the control plane's policy and role,
// the Kubernetes auth method with the reviewer's token, replaces the
// binding rules with one per ServiceAccount the chart makes (the service
// identity of its name; controlplane: the role), and writes every config
// entry.
func TestConsulInitPreparesConsul(t *testing.T) {
	r := render(t, nil)
	scripts := writeConfigMap(t, r.configMaps["meshop-scripts"].Data)

	// The consul files as the Job's volume items lay them out.
	if len(r.jobs) != 1 {
		t.Fatalf("%d Jobs, want consul-init", len(r.jobs))
	}
	var job *batchv1.Job
	for _, j := range r.jobs {
		job = j
	}
	files := t.TempDir()
	consulData := r.configMaps["meshop-consul"].Data
	var entries []string
	for _, v := range job.Spec.Template.Spec.Volumes {
		if v.ConfigMap == nil || v.ConfigMap.Name != "meshop-consul" {
			continue
		}
		for _, item := range v.ConfigMap.Items {
			data, ok := consulData[item.Key]
			if !ok {
				t.Fatalf("the Job mounts key %s, which meshop-consul lacks", item.Key)
			}
			path := filepath.Join(files, item.Path)
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(item.Path, "config/") {
				entries = append(entries, item.Path)
			}
		}
	}
	if len(entries) != len(consulData)-1 {
		t.Errorf("the Job mounts %d config entries of meshop-consul's %d files (one is the policy)", len(entries), len(consulData))
	}

	work, bin, calls := t.TempDir(), t.TempDir(), t.TempDir()
	for name, body := range map[string]string{"curl": fakeCurl, "consul": "#!/bin/sh\necho \"$@\" >>\"$CALLS/consul.log\"\n"} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	reviewer := filepath.Join(work, "reviewer")
	if err := os.MkdirAll(reviewer, 0o755); err != nil {
		t.Fatal(err)
	}
	for path, data := range map[string]string{"token": "bootstrap-token\n", "reviewer/ca.crt": "REVIEWER CA\n", "reviewer/token": "reviewer.jwt"} {
		if err := os.WriteFile(filepath.Join(work, path), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("sh", filepath.Join(scripts, "consul-init.sh"))
	cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"), "CALLS="+calls,
		"CONSUL_HTTP_ADDR=https://192.0.2.1:8501", "CONSUL_CACERT=/dev/null", "CONSUL_HTTP_TOKEN_FILE="+filepath.Join(work, "token"),
		"CONSUL_AUTH_METHOD=meshop-k8s", "NAMESPACE=shop", "KUBERNETES_HOST=https://kubernetes.default.svc",
		"MESHOP_CONSUL_FILES="+files, "REVIEWER_DIR="+reviewer)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("consul-init.sh: %v\n%s", err, out)
	}
	recorded := readCalls(t, calls)

	find := func(method, path string) []consulCall {
		var out []consulCall
		for _, c := range recorded {
			if c.method == method && c.path == path {
				out = append(out, c)
			}
		}
		return out
	}
	if p := find("PUT", "/v1/acl/policy"); len(p) != 1 || p[0].body["Name"] != "meshop-controlplane" || p[0].body["Rules"] != consulData["controlplane.hcl"] {
		t.Errorf("policy meshop-controlplane not written with consul/acl/controlplane.hcl: %+v", p)
	}
	if p := find("PUT", "/v1/acl/role"); len(p) != 1 || p[0].body["Name"] != "meshop-controlplane" {
		t.Errorf("role meshop-controlplane not written: %+v", p)
	}
	method := find("PUT", "/v1/acl/auth-method")
	if len(method) != 1 {
		t.Fatalf("auth method not created: %+v", recorded)
	}
	config, _ := method[0].body["Config"].(map[string]any)
	if method[0].body["Name"] != "meshop-k8s" || method[0].body["Type"] != "kubernetes" || config["ServiceAccountJWT"] != "reviewer.jwt" || config["CACert"] != "REVIEWER CA\n" || config["Host"] != "https://kubernetes.default.svc" {
		t.Errorf("auth method %+v", method[0].body)
	}
	if d := find("DELETE", "/v1/acl/binding-rule/old-rule"); len(d) != 1 {
		t.Errorf("the old binding rule was not replaced")
	}
	bound := map[string]string{}
	for _, c := range find("PUT", "/v1/acl/binding-rule") {
		sel, _ := c.body["Selector"].(string)
		name := strings.TrimSuffix(sel[strings.LastIndex(sel, `serviceaccount.name=="`)+len(`serviceaccount.name=="`):], `"`)
		if !strings.Contains(sel, `serviceaccount.namespace=="shop"`) || c.body["AuthMethod"] != "meshop-k8s" {
			t.Errorf("binding rule %+v: not limited to the release's namespace", c.body)
		}
		bound[name] = c.body["BindType"].(string) + " " + c.body["BindName"].(string)
	}
	want := map[string]string{"controlplane": "role meshop-controlplane", "edge": "service edge"}
	for _, svc := range services {
		want[svc] = "service " + svc
	}
	for sa, binding := range want {
		if bound[sa] != binding {
			t.Errorf("ServiceAccount %s logs in as %q, want %q", sa, bound[sa], binding)
		}
		if r.serviceAccounts[sa] == nil {
			t.Errorf("the binding rule names ServiceAccount %s, which the chart does not make", sa)
		}
	}
	if len(bound) != len(want) {
		t.Errorf("binding rules for %v, want exactly %v", bound, want)
	}
	log, _ := os.ReadFile(filepath.Join(calls, "consul.log"))
	for _, e := range entries {
		if !strings.Contains(string(log), "config write "+filepath.Join(files, e)) {
			t.Errorf("config entry %s not written (consul ran: %s)", e, log)
		}
	}
}

// readCalls reads the calls fakeCurl recorded, in order.
func readCalls(t *testing.T, dir string) []consulCall {
	t.Helper()
	var out []consulCall
	for n := 0; ; n++ {
		method, err := os.ReadFile(filepath.Join(dir, strconv.Itoa(n)+".method"))
		if err != nil {
			break
		}
		url, _ := os.ReadFile(filepath.Join(dir, strconv.Itoa(n)+".url"))
		body, _ := os.ReadFile(filepath.Join(dir, strconv.Itoa(n)+".body"))
		c := consulCall{method: string(method), path: strings.TrimPrefix(string(url), "https://192.0.2.1:8501")}
		if len(body) > 0 {
			if err := json.Unmarshal(body, &c.body); err != nil {
				t.Fatalf("call %d %s %s: body not JSON: %v", n, c.method, c.path, err)
			}
		}
		out = append(out, c)
	}
	if !slices.ContainsFunc(out, func(c consulCall) bool { return c.method == "PUT" }) {
		t.Fatalf("consul-init.sh made no PUT (%d calls)", len(out))
	}
	return out
}
