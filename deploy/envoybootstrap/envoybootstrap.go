// Package envoybootstrap parses and checks Meshop's Envoy bootstraps
// strictly, the way Envoy reads them and more: YAML → JSON → proto with
// every field known, the proto's validation rules (also inside Any
// fields), no deprecated fields, and the rules every Meshop bootstrap
// follows (Check). The deploy tests run it on envoy/*.yaml, the chart's
// tests (deploy/k8s) on the bootstraps the Helm chart puts in ConfigMaps,
// so both deployments start Envoy from bootstraps held to one standard.
package envoybootstrap

import (
	"errors"
	"fmt"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	// Types the bootstraps pack in Any fields: protojson resolves them
	// from the global registry.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// Parse reads a rendered bootstrap (YAML) the way Envoy does, every field
// known (unknown ones fail), then runs the proto's own validation rules,
// including the messages packed in Any fields, and refuses deprecated
// fields (Envoy warns now and fails later).
func Parse(raw []byte) (*bootstrapv3.Bootstrap, error) {
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("not YAML: %w", err)
	}
	var b bootstrapv3.Bootstrap
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, &b); err != nil {
		return nil, fmt.Errorf("not an Envoy v3 Bootstrap: %w", err)
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("ValidateAll: %w", err)
	}
	if err := ValidateAnys(b.ProtoReflect()); err != nil {
		return nil, err
	}
	if dep := DeprecatedFields(b.ProtoReflect(), ""); len(dep) > 0 {
		return nil, errors.New("sets deprecated fields (Envoy warns now and fails later): " + strings.Join(dep, ", "))
	}
	return &b, nil
}

// ValidateAnys runs ValidateAll on every message packed in an Any, which
// the outer message's ValidateAll does not look into.
func ValidateAnys(m protoreflect.Message) error {
	var err error
	walk(m, func(_ string, fd protoreflect.FieldDescriptor, v protoreflect.Value) {
		if err != nil || fd.Kind() != protoreflect.MessageKind || fd.Message().FullName() != "google.protobuf.Any" {
			return
		}
		a := v.Message().Interface().(*anypb.Any)
		inner, uerr := a.UnmarshalNew()
		if uerr != nil {
			err = uerr
			return
		}
		if vv, ok := inner.(interface{ ValidateAll() error }); ok {
			if verr := vv.ValidateAll(); verr != nil {
				err = verr
				return
			}
		}
		err = ValidateAnys(inner.ProtoReflect())
	})
	return err
}

// DeprecatedFields lists the set fields and enum values marked deprecated,
// looking into Any fields too.
func DeprecatedFields(m protoreflect.Message, prefix string) []string {
	var out []string
	walk(m, func(path string, fd protoreflect.FieldDescriptor, v protoreflect.Value) {
		if opts, ok := fd.Options().(*descriptorpb.FieldOptions); ok && opts.GetDeprecated() {
			out = append(out, prefix+path)
		}
		if fd.Kind() == protoreflect.EnumKind && !fd.IsList() {
			if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
				if opts, ok := ev.Options().(*descriptorpb.EnumValueOptions); ok && opts.GetDeprecated() {
					out = append(out, prefix+path+"="+string(ev.Name()))
				}
			}
		}
		if fd.Kind() == protoreflect.MessageKind && fd.Message().FullName() == "google.protobuf.Any" {
			if inner, err := v.Message().Interface().(*anypb.Any).UnmarshalNew(); err == nil {
				out = append(out, DeprecatedFields(inner.ProtoReflect(), prefix+path+"/")...)
			}
		}
	})
	return out
}

// walk calls fn for every set field of m and its sub-messages (list and
// map elements included), with a dotted path.
func walk(m protoreflect.Message, fn func(path string, fd protoreflect.FieldDescriptor, v protoreflect.Value)) {
	var visit func(m protoreflect.Message, path string)
	visit = func(m protoreflect.Message, path string) {
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			p := path + string(fd.Name())
			switch {
			case fd.IsList():
				l := v.List()
				for i := range l.Len() {
					fn(p, fd, l.Get(i))
					if fd.Kind() == protoreflect.MessageKind {
						visit(l.Get(i).Message(), p+"[].")
					}
				}
			case fd.IsMap():
				v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
					if fd.MapValue().Kind() == protoreflect.MessageKind {
						fn(p+"["+k.String()+"]", fd.MapValue(), mv)
						visit(mv.Message(), p+"["+k.String()+"].")
					}
					return true
				})
			default:
				fn(p, fd, v)
				if fd.Kind() == protoreflect.MessageKind {
					visit(v.Message(), p+".")
				}
			}
			return true
		})
	}
	visit(m, "")
}
