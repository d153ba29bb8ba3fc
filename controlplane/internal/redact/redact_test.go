package redact

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

func TestResource(t *testing.T) {
	inline := func(s string) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: s}}
	}
	secret := &tlsv3.Secret{Name: "mesh_identity", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: inline("THE-CERTIFICATE"), PrivateKey: inline("THE-PRIVATE-KEY")}}}
	got := Resource(secret).(*tlsv3.Secret).GetTlsCertificate()
	if got.GetPrivateKey().GetInlineString() != Placeholder || got.GetCertificateChain().GetInlineString() != "THE-CERTIFICATE" {
		t.Errorf("redacted secret = %v", got)
	}
	if secret.GetTlsCertificate().GetPrivateKey().GetInlineString() != "THE-PRIVATE-KEY" {
		t.Error("redaction changed the served secret")
	}
	roots := &tlsv3.Secret{Name: "mesh_roots", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: inline("ROOTS")}}}
	if Resource(roots).(*tlsv3.Secret).GetValidationContext().GetTrustedCa().GetInlineString() != "ROOTS" {
		t.Error("a validation context changed")
	}
	c := &clusterv3.Cluster{Name: "svc_user"}
	if Resource(c) != c {
		t.Error("a cluster was copied or changed")
	}
}
