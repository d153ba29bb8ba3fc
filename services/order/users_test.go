package order

import (
	"context"
	"net/http"
	"testing"

	"github.com/meshop/meshop/services/kit/errs"
)

// recordingCaller answers one call and remembers it.
type recordingCaller struct {
	service, method, path string
	header                http.Header
	answer                Profile
	err                   error
}

func (c *recordingCaller) Call(_ context.Context, service, method, path string, header http.Header, _, out any) error {
	c.service, c.method, c.path, c.header = service, method, path, header
	if c.err != nil {
		return c.err
	}
	*(out.(*Profile)) = c.answer
	return nil
}

func TestMeshUsersGet(t *testing.T) {
	mesh := &recordingCaller{answer: Profile{ID: "u/1", Email: "ada@example.com"}}
	p, err := MeshUsers{Mesh: mesh}.Get(context.Background(), "u/1")
	if err != nil || p.Email != "ada@example.com" {
		t.Fatalf("Get = %+v, %v", p, err)
	}
	if mesh.service != "user" || mesh.method != "GET" || mesh.path != "/internal/users/u%2F1" || mesh.header != nil {
		t.Errorf("called %s %s %s (header %v), want user GET /internal/users/u%%2F1 without a token", mesh.service, mesh.method, mesh.path, mesh.header)
	}

	mesh.err = errs.New(errs.Unavailable, "upstream_timeout", "user did not answer in time")
	if _, err := (MeshUsers{Mesh: mesh}).Get(context.Background(), "u1"); !errs.Is(err, errs.Unavailable) {
		t.Errorf("user down: %v, want the mesh's Unavailable", err)
	}
}
