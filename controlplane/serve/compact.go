package serve

import (
	"fmt"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// A compact resource is what the cache holds instead of the proto tree
// translate built: a message of the same type whose name (field 1 of
// every resource type the control plane serves: a load assignment's
// cluster name too), which the cache and the translator read, is set,
// and whose every other field is kept as its encoded bytes, in the
// message's unknown fields. Marshalling it writes those bytes back
// verbatim, so Envoy receives the same fields (in another order, which
// protobuf parsers accept), and proto.Unmarshal of its encoding gives
// back the full tree (expand).
//
// A load assignment's tree of ten endpoints is about 8 KiB of small
// objects; its encoding is about 600 bytes. Compacting every resource once
// per change, after it was validated and hashed, is what keeps the
// control plane's memory per endpoint low, and it makes the cache's
// per-response marshal a copy.

// compact returns the compact form of m, whose deterministic encoding is
// wire. The compact message shares no memory with wire.
func compact(m proto.Message, wire []byte) (proto.Message, error) {
	src := m.ProtoReflect()
	desc := src.Descriptor()
	name := desc.Fields().ByNumber(1)
	rest := make([]byte, 0, len(wire)) // scratch: what is kept is a clone of the right size
	for b := wire; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("compact %s: %w", desc.FullName(), protowire.ParseError(n))
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, fmt.Errorf("compact %s: %w", desc.FullName(), protowire.ParseError(m))
		}
		if name == nil || num != name.Number() {
			rest = append(rest, b[:n+m]...)
		}
		b = b[n+m:]
	}
	dst := src.New()
	if name != nil && src.Has(name) {
		dst.Set(name, src.Get(name))
	}
	if len(rest) > 0 {
		dst.SetUnknown(slices.Clone(rest))
	}
	return dst.Interface(), nil
}

// expand returns the full tree of a compact message (any other message
// comes back as an equal copy): what the debug endpoints render.
func expand(m proto.Message) (proto.Message, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, err
	}
	out := m.ProtoReflect().New().Interface()
	if err := proto.Unmarshal(b, out); err != nil {
		return nil, err
	}
	return out, nil
}
