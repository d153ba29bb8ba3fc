//go:build !failpoints

package payment

import "context"

// failAt is the ambiguous-charge tests' failpoint, compiled out of release
// builds (see failpoint_on.go).
func failAt(context.Context, string) {}
