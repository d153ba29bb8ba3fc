package auth

import (
	"context"

	userclient "github.com/meshop/meshop/services/user/client"
)

// NewUsers is Users over the user service's gRPC API (package userclient,
// on meshclient.Client.Conn("user")).
func NewUsers(c *userclient.Client) Users { return users{c} }

type users struct{ user *userclient.Client }

// Create creates p's profile, with the id auth gave the credentials.
func (u users) Create(ctx context.Context, p Profile) error {
	_, err := u.user.Create(ctx, userclient.NewProfile{ID: p.ID, Email: p.Email, Name: p.Name, Role: p.Role})
	return err
}

// Delete removes the profile id: the undo of Create when the credentials
// could not be stored.
func (u users) Delete(ctx context.Context, id string) error {
	return u.user.Delete(ctx, id)
}

// Get returns the profile id, whose role goes into the token.
func (u users) Get(ctx context.Context, id string) (Profile, error) {
	p, err := u.user.Lookup(ctx, id)
	if err != nil {
		return Profile{}, err
	}
	return Profile{ID: p.ID, Email: p.Email, Name: p.Name, Role: p.Role}, nil
}
