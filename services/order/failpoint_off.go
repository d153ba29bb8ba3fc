//go:build !failpoints

package order

// crashAt is the crash-point tests' failpoint, compiled out of release
// builds (see failpoint_on.go).
func crashAt(string) {}
