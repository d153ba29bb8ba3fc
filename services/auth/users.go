package auth

import (
	"context"
	"net/http"
	"net/url"
)

// Caller is the part of the mesh client the auth service uses.
type Caller interface {
	Call(ctx context.Context, service, method, path string, header http.Header, body, out any) error
}

// MeshUsers reaches the user service's internal API through the mesh.
type MeshUsers struct{ Mesh Caller }

// Create creates p's profile (POST /internal/users).
func (u MeshUsers) Create(ctx context.Context, p Profile) error {
	return u.Mesh.Call(ctx, "user", http.MethodPost, "/internal/users", nil, p, nil)
}

// Delete removes the profile id (DELETE /internal/users/{id}): the undo of
// Create when the credentials could not be stored.
func (u MeshUsers) Delete(ctx context.Context, id string) error {
	return u.Mesh.Call(ctx, "user", http.MethodDelete, "/internal/users/"+url.PathEscape(id), nil, nil, nil)
}

// Get returns the profile id (GET /internal/users/{id}), whose role goes
// into the token.
func (u MeshUsers) Get(ctx context.Context, id string) (Profile, error) {
	var p Profile
	err := u.Mesh.Call(ctx, "user", http.MethodGet, "/internal/users/"+url.PathEscape(id), nil, nil, &p)
	return p, err
}
