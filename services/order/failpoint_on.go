//go:build failpoints

package order

import (
	"fmt"
	"os"
)

// crashAt kills the process right after the saga step named in
// ORDER_CRASH_AT: the crash-point tests' failpoint. Only binaries built
// with -tags failpoints have it; release builds ignore the variable.
func crashAt(step string) {
	if step == os.Getenv("ORDER_CRASH_AT") {
		fmt.Fprintln(os.Stderr, "failpoint: crashing right after", step)
		os.Exit(86)
	}
}
