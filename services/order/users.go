package order

import (
	"context"

	userclient "github.com/meshop/meshop/services/user/client"
)

// NewUsers is Users over the user service's gRPC API (package userclient,
// on meshclient.Client.Conn("user")). Its Lookup needs no token: the public
// GET /users/{id} answers only the profile's owner or an admin, while order
// must read its owner's profile also where no caller's token is at hand
// (recovering checkouts, replays); the edge never routes the gRPC API, so
// only services inside the mesh reach it.
func NewUsers(c *userclient.Client) Users { return users{c} }

type users struct{ user *userclient.Client }

func (u users) Get(ctx context.Context, id string) (Profile, error) {
	p, err := u.user.Lookup(ctx, id)
	if err != nil {
		return Profile{}, err
	}
	return Profile{ID: p.ID, Email: p.Email, Name: p.Name, Role: p.Role, CreatedAt: p.CreatedAt}, nil
}
