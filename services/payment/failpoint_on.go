//go:build failpoints

package payment

import (
	"context"
	"fmt"
	"os"
)

// failAt is the ambiguous-charge tests' failpoint (issue 12), named by
// PAYMENT_FAIL_AT: "<point>-crash" ends the process right at point,
// "<point>-stall" blocks the handler there until its caller has given up
// (the request's context ended: the answer is lost by timeout), and then
// for good, so the outcome is never recorded by this process. Only
// binaries built with -tags failpoints have it; release builds ignore the
// variable.
func failAt(ctx context.Context, point string) {
	switch os.Getenv("PAYMENT_FAIL_AT") {
	case point + "-crash":
		fmt.Fprintln(os.Stderr, "failpoint: crashing right after", point)
		os.Exit(86)
	case point + "-stall":
		fmt.Fprintln(os.Stderr, "failpoint: stalling right after", point)
		<-ctx.Done()
		fmt.Fprintln(os.Stderr, "failpoint: the caller gave up after", point, "("+ctx.Err().Error()+"); stalled for good")
		select {} // until the process is killed
	}
}
