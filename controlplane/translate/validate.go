package translate

import (
	"errors"
	"fmt"

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
		if fd.Message() == nil {
			return true
		}
		p := path + "." + string(fd.Name())
		switch {
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				if err := validateDeep(l.Get(i).Message(), fmt.Sprintf("%s[%d]", p, i), false); err != nil {
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
