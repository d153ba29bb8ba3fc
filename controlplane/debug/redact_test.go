package debug

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

func TestConfigDumpRedactsPrivateKeys(t *testing.T) {
	inline := func(s string) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: s}}
	}
	secret := &tlsv3.Secret{Name: "mesh_identity", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: inline("THE-CERTIFICATE"), PrivateKey: inline("THE-PRIVATE-KEY")}}}
	dump, err := configDump(map[string][]cachetypes.Resource{resource.SecretType: {secret}}, map[string]string{resource.SecretType: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := protojson.Marshal(dump)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "THE-PRIVATE-KEY") || !strings.Contains(string(b), "[redacted]") || !strings.Contains(string(b), "THE-CERTIFICATE") {
		t.Errorf("config dump of a secret: %s", b)
	}
	if secret.GetTlsCertificate().GetPrivateKey().GetInlineString() != "THE-PRIVATE-KEY" {
		t.Error("redaction changed the served secret")
	}
}
