// Package poll waits for a condition in tests: it checks it on a short
// ticker until it holds or a deadline passes, so tests never sleep a fixed
// time hoping something happened.
package poll

import (
	"testing"
	"time"
)

// Until checks cond every 5ms until it returns true, failing t with cond's
// last message when within passes.
func Until(t testing.TB, within time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %s", within, msg)
		}
		<-tick.C
	}
}
