package xdsauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/hashicorp/consul/api"
)

// Consul is the Directory of a Consul agent.
type Consul struct {
	client *api.Client
}

// NewConsul asks Consul through c, whose token (the control plane's)
// reads every service.
func NewConsul(c *api.Client) *Consul { return &Consul{client: c} }

// TokenServices implements Directory: the token reads itself
// (/v1/acl/token/self).
func (c *Consul) TokenServices(ctx context.Context, token string) ([]string, error) {
	t, _, err := c.client.ACL().TokenReadSelf((&api.QueryOptions{Token: token}).WithContext(ctx))
	if err != nil {
		var se api.StatusError
		switch {
		case errors.As(err, &se) && se.Code == http.StatusUnauthorized && strings.Contains(se.Body, "ACL support disabled"):
			return nil, ErrACLsDisabled
		case errors.As(err, &se) && (se.Code == http.StatusForbidden || se.Code == http.StatusNotFound):
			return nil, ErrUnknownToken
		}
		return nil, fmt.Errorf("xdsauth: token lookup: %w", err)
	}
	var out []string
	for _, si := range t.ServiceIdentities {
		out = append(out, si.ServiceName)
	}
	return out, nil
}

// IsInstance implements Directory.
func (c *Consul) IsInstance(ctx context.Context, service, id string) (bool, error) {
	q := &api.QueryOptions{Filter: fmt.Sprintf("ServiceID == %q", id)}
	insts, _, err := c.client.Catalog().Service(service, "", q.WithContext(ctx))
	if err != nil {
		return false, fmt.Errorf("xdsauth: catalog: %w", err)
	}
	return len(insts) > 0, nil
}
