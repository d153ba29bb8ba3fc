// Package redact removes private keys from xDS resources before they are
// shown to an operator: by the debug API's config dump and by CSDS. Both
// call it, so what one hides the other hides too.
package redact

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"
)

// Placeholder replaces a private key.
const Placeholder = "[redacted]"

// Secret is a copy of s without its private key, as Envoy's own config
// dump shows it; s itself is not changed (it is what the cache serves).
func Secret(s *tlsv3.Secret) *tlsv3.Secret {
	s = proto.Clone(s).(*tlsv3.Secret)
	if c := s.GetTlsCertificate(); c.GetPrivateKey() != nil {
		c.PrivateKey = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: Placeholder}}
	}
	return s
}

// Resource is r with its private key redacted: a redacted copy of a
// secret, any other resource as it is.
func Resource(r cachetypes.Resource) cachetypes.Resource {
	if s, ok := r.(*tlsv3.Secret); ok {
		return Secret(s)
	}
	return r
}
