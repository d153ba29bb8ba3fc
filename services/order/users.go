package order

import (
	"context"
	"net/http"
	"net/url"
)

// Caller is the part of the mesh client the order service uses.
type Caller interface {
	Call(ctx context.Context, service, method, path string, header http.Header, body, out any) error
}

// MeshUsers fetches profiles from the user service through the mesh, on
// its internal route GET /internal/users/{id}. That route needs no token:
// the public GET /users/{id} answers only the profile's owner or an admin,
// while order must read its owner's profile also where no caller's token
// is at hand (recovering checkouts, replays); the edge never routes
// /internal, so only services inside the mesh reach it.
type MeshUsers struct{ Mesh Caller }

// Get returns the profile of user id.
func (u MeshUsers) Get(ctx context.Context, id string) (Profile, error) {
	var p Profile
	err := u.Mesh.Call(ctx, "user", http.MethodGet, "/internal/users/"+url.PathEscape(id), nil, nil, &p)
	return p, err
}
