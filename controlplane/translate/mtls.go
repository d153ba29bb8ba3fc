package translate

import (
	"regexp"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshop/meshop/controlplane/model"
)

// Mutual TLS between the mesh's nodes (Config.MTLS, once Consul's
// Connect CA has a trust domain). Every node presents its service's leaf
// certificate from Consul's CA, whose URI SAN is
// spiffe://<trust domain>/ns/default/dc/<dc>/svc/<service>, and checks
// the peer's against the CA's roots:
//
//   - Envoys get both as SDS secrets over ADS: SecretIdentity (a
//     TlsCertificate: the node's own leaf and key; the edge's is the edge
//     service's) and SecretRoots (a validation context: the CA's roots).
//   - gRPC clients and servers cannot take SDS: both come from the
//     certificate provider instance CertificateProviderInstance of their
//     bootstrap (a file_watcher holding leaf, key and roots).
//
// A caller checks that the callee's leaf names the service it meant to
// call (the SAN pattern below, as Consul's own xDS does); the callee
// requires a client certificate and leaves who may call to its RBAC
// filter (rbac.go).
const (
	SecretIdentity              = "mesh_identity"
	SecretRoots                 = "mesh_roots"
	CertificateProviderInstance = "mesh"
)

const tlsTransportSocket = "envoy.transport_sockets.tls"

// SPIFFEPattern matches the URI SAN of every leaf Consul's CA in
// trustDomain issues to service, in any datacenter; service "*" matches
// every service.
func SPIFFEPattern(trustDomain, service string) string {
	svc := regexp.QuoteMeta(service)
	if service == model.Wildcard {
		svc = "[^/]+"
	}
	return "^spiffe://" + regexp.QuoteMeta(trustDomain) + "/ns/default/dc/[^/]+/svc/" + svc + "$"
}

func safeRegex(pattern string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: pattern}}}
}

func sdsSecret(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: adsSource()}
}

func providerInstance() *tlsv3.CertificateProviderPluginInstance {
	return &tlsv3.CertificateProviderPluginInstance{InstanceName: CertificateProviderInstance}
}

// transportSocket wraps a TLS context (Upstream or Downstream).
func transportSocket(tlsContext proto.Message) *corev3.TransportSocket {
	return &corev3.TransportSocket{
		Name:       tlsTransportSocket,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(tlsContext)},
	}
}

// envoyUpstreamTLS is how an Envoy calls service: it presents
// SecretIdentity and accepts only a leaf of service signed by SecretRoots.
func envoyUpstreamTLS(trustDomain, service string) *corev3.TransportSocket {
	return transportSocket(&tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsSecret(SecretIdentity)},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext: &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
				SanType: tlsv3.SubjectAltNameMatcher_URI,
				Matcher: safeRegex(SPIFFEPattern(trustDomain, service)),
			}}},
			ValidationContextSdsSecretConfig: sdsSecret(SecretRoots),
		}},
	}})
}

// envoyDownstreamTLS is how a sidecar's inbound listener accepts: it
// presents SecretIdentity and requires a client leaf signed by
// SecretRoots (which caller may call is the RBAC filter's to decide).
func envoyDownstreamTLS() *corev3.TransportSocket {
	return transportSocket(&tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsSecret(SecretIdentity)},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
				ValidationContextSdsSecretConfig: sdsSecret(SecretRoots),
			},
		},
	})
}

// grpcUpstreamTLS is envoyUpstreamTLS for a gRPC client: identity and
// roots from the bootstrap's certificate provider, the SAN pattern in
// match_subject_alt_names (grpc-go reads no typed SAN matchers).
func grpcUpstreamTLS(trustDomain, service string) *corev3.TransportSocket {
	return transportSocket(&tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateProviderInstance: providerInstance(),
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			CaCertificateProviderInstance: providerInstance(),
			MatchSubjectAltNames:          []*matcherv3.StringMatcher{safeRegex(SPIFFEPattern(trustDomain, service))},
		}},
	}})
}

// grpcDownstreamTLS is envoyDownstreamTLS for an xDS gRPC server (which
// refuses SAN matchers: callers are the RBAC filter's to decide).
func grpcDownstreamTLS() *corev3.TransportSocket {
	return transportSocket(&tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateProviderInstance: providerInstance(),
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				CaCertificateProviderInstance: providerInstance(),
			}},
		},
	})
}

// filters are the HTTP filters authorizing inbound calls (none when
// a is nil).
func (a *InboundAuthz) filters() []*hcmv3.HttpFilter {
	if a == nil {
		return nil
	}
	return []*hcmv3.HttpFilter{rbacFilter(a.TrustDomain, a.Sources)}
}

// envoyTLS is the inbound listener's TLS (nil when a is nil).
func (a *InboundAuthz) envoyTLS() *corev3.TransportSocket {
	if a == nil {
		return nil
	}
	return envoyDownstreamTLS()
}
