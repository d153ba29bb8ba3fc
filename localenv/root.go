package localenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
)

// RepoRoot returns the directory that holds go.work, searching upwards from
// the working directory (tests run inside their package directory).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("localenv: no go.work above the working directory")
		}
		dir = parent
	}
}

var buildTools sync.Mutex

// Binary returns the path of a tool in ./bin (consul, jaeger), running
// `make tools` first when it is missing. `make tools` skips what is built.
func Binary(name string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	path := filepath.Join(root, "bin", name)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	buildTools.Lock()
	defer buildTools.Unlock()
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	cmd := exec.Command("make", "-C", root, "tools")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("localenv: make tools: %w\n%s", err, out)
	}
	return path, nil
}
