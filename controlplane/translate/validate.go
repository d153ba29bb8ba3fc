package translate

import (
	"errors"
	"fmt"
	"strconv"
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

type validator interface{ ValidateAll() error }

// Validate runs the proto validation rules Envoy applies (ValidateAll) on
// a resource and, unlike ValidateAll alone, on every message packed in an
// Any inside it (HTTP connection managers, tracers, filters, protocol
// options), so a config Envoy would NACK is caught before it is sent.
func Validate(m proto.Message) error {
	return validateDeep(m.ProtoReflect(), string(m.ProtoReflect().Descriptor().FullName()), true)
}

// validateDeep validates m when root is set (ValidateAll covers nested
// messages itself, but stops at Any) and descends to find packed messages.
func validateDeep(m protoreflect.Message, path string, root bool) error {
	var errs []error
	if v, ok := m.Interface().(validator); ok && root {
		if err := v.ValidateAll(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
		}
	}
	if a, ok := m.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			return fmt.Errorf("%s: unpack %s: %w", path, a.GetTypeUrl(), err)
		}
		return validateDeep(inner.ProtoReflect(), path+"("+string(inner.ProtoReflect().Descriptor().FullName())+")", true)
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Message() == nil || (fd.IsMap() && fd.MapValue().Message() == nil) {
			return true
		}
		elem := fd.Message()
		if fd.IsMap() {
			elem = fd.MapValue().Message()
		}
		if !mayHoldAny(elem) {
			return true // ValidateAll at the root covered it; nothing packed below
		}
		p := path + "." + string(fd.Name())
		switch {
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				if err := validateDeep(l.Get(i).Message(), p+"["+strconv.Itoa(i)+"]", false); err != nil {
					errs = append(errs, err)
				}
			}
		case fd.IsMap():
			if fd.MapValue().Message() == nil {
				return true
			}
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				if err := validateDeep(mv.Message(), fmt.Sprintf("%s[%v]", p, k.Interface()), false); err != nil {
					errs = append(errs, err)
				}
				return true
			})
		default:
			if err := validateDeep(v.Message(), p, false); err != nil {
				errs = append(errs, err)
			}
		}
		return true
	})
	return errors.Join(errs...)
}

// anyReach memoizes, per message type, whether a message of that type can
// contain an Any at any depth.
var anyReach sync.Map // protoreflect.FullName → bool

var anyName = (&anypb.Any{}).ProtoReflect().Descriptor().FullName()

// mayHoldAny reports whether messages of type md can contain an Any. Most
// of a large resource (endpoints, addresses, metadata structs) cannot, and
// validateDeep skips it: that walk, not ValidateAll, was most of the cost
// of validating a load assignment.
func mayHoldAny(md protoreflect.MessageDescriptor) bool {
	if v, ok := anyReach.Load(md.FullName()); ok {
		return v.(bool)
	}
	// Every type reachable from md, then the least fixed point of
	// "is Any or has a field of a type that reaches Any" (recursive types
	// such as Struct ↔ Value are settled exactly).
	types := map[protoreflect.FullName]protoreflect.MessageDescriptor{}
	var collect func(d protoreflect.MessageDescriptor)
	collect = func(d protoreflect.MessageDescriptor) {
		if _, ok := types[d.FullName()]; ok {
			return
		}
		types[d.FullName()] = d
		fields := d.Fields()
		for i := range fields.Len() {
			if elem := elemMessage(fields.Get(i)); elem != nil {
				collect(elem)
			}
		}
	}
	collect(md)
	reach := map[protoreflect.FullName]bool{}
	for changed := true; changed; {
		changed = false
		for name, d := range types {
			if reach[name] {
				continue
			}
			r := name == anyName
			fields := d.Fields()
			for i := 0; !r && i < fields.Len(); i++ {
				if elem := elemMessage(fields.Get(i)); elem != nil && reach[elem.FullName()] {
					r = true
				}
			}
			if r {
				reach[name], changed = true, true
			}
		}
	}
	for name := range types {
		anyReach.Store(name, reach[name])
	}
	return reach[md.FullName()]
}

func elemMessage(fd protoreflect.FieldDescriptor) protoreflect.MessageDescriptor {
	if fd.IsMap() {
		return fd.MapValue().Message()
	}
	return fd.Message()
}
