package deploy

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// dockerfileStage is one FROM … of a Dockerfile and what follows it.
type dockerfileStage struct {
	image, name string
	lines       []string
}

// parseDockerfile splits a Dockerfile into stages and resolves ${ARG}s in
// FROM lines from the ARG defaults declared before the first stage.
func parseDockerfile(t *testing.T, path string) []dockerfileStage {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	args := map[string]string{}
	var stages []dockerfileStage
	var logical string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if cont, ok := strings.CutSuffix(line, "\\"); ok {
			logical += cont + " "
			continue
		}
		line, logical = logical+line, ""
		word, rest, _ := strings.Cut(line, " ")
		switch strings.ToUpper(word) {
		case "ARG":
			if len(stages) == 0 {
				k, v, _ := strings.Cut(rest, "=")
				args[k] = v
			}
		case "FROM":
			fields := strings.Fields(os.Expand(rest, func(k string) string { return args[k] }))
			st := dockerfileStage{image: fields[0]}
			if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
				st.name = fields[2]
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) > 0 {
			stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return stages
}

func TestDockerfile(t *testing.T) {
	root := repoRoot(t)
	stages := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	if len(stages) < 2 {
		t.Fatalf("want a multi-stage build, got %d stage(s)", len(stages))
	}
	names := map[string]bool{}
	pinned := regexp.MustCompile(`^[a-z0-9./_-]+:[^:]*[0-9][^:]*$|@sha256:[0-9a-f]{64}$`)
	for _, st := range stages {
		switch {
		case st.image == "scratch" || names[st.image]:
		case !pinned.MatchString(st.image) || strings.HasSuffix(st.image, ":latest"):
			t.Errorf("FROM %s: base image not pinned to a version", st.image)
		}
		names[st.name] = true
	}
	raw, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(?m)^#\s*syntax=(\S+)`).FindStringSubmatch(string(raw)); m != nil && !pinned.MatchString(m[1]) {
		t.Errorf("# syntax=%s pulls an unpinned frontend image", m[1])
	}
	all := func(st dockerfileStage) string { return strings.Join(st.lines, "\n") }
	build := stages[0]
	if !strings.Contains(all(build), "CGO_ENABLED=0") {
		t.Error("the build stage does not set CGO_ENABLED=0: the binaries must be static for a scratch image")
	}
	final := stages[len(stages)-1]
	user := ""
	for _, l := range final.lines {
		if u, ok := strings.CutPrefix(l, "USER "); ok {
			user = strings.TrimSpace(u)
		}
	}
	if uid, _, _ := strings.Cut(user, ":"); uid == "" || uid == "0" || uid == "root" {
		t.Errorf("final stage runs as %q; want a non-root USER", user)
	}
	if !strings.Contains(all(final), "ENTRYPOINT") {
		t.Error("final stage has no ENTRYPOINT")
	}
}

// TestDockerignoreKeepsTheWorkspace: the build context must hold go.work
// and every module it uses, or `go build` refuses to load the workspace.
func TestDockerignoreKeepsTheWorkspace(t *testing.T) {
	root := repoRoot(t)
	raw, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, l := range strings.Split(string(raw), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, strings.TrimSuffix(strings.TrimPrefix(l, "/"), "/"))
		}
	}
	work, err := os.ReadFile(filepath.Join(root, "go.work"))
	if err != nil {
		t.Fatal(err)
	}
	needed := []string{"go.work", "go.work.sum", "Dockerfile", "deploy/cmd/launch", "deploy/cmd/probe"}
	for _, m := range regexp.MustCompile(`(?m)^\s*\./(\S+)\s*$`).FindAllStringSubmatch(string(work), -1) {
		needed = append(needed, m[1]+"/go.mod")
	}
	for _, path := range needed {
		for _, pat := range patterns {
			if ignored(pat, path) {
				t.Errorf(".dockerignore pattern %q leaves %s out of the build context", pat, path)
			}
		}
	}
}

// ignored reports whether a .dockerignore pattern covers path (a pattern
// matches the path or one of its parent directories).
func ignored(pattern, path string) bool {
	for p := path; p != "." && p != "/"; p = filepath.Dir(p) {
		if ok, _ := filepath.Match(strings.ReplaceAll(pattern, "**/", ""), filepath.Base(p)); ok && strings.HasPrefix(pattern, "**/") {
			return true
		}
		if ok, _ := filepath.Match(pattern, p); ok {
			return true
		}
	}
	return false
}
