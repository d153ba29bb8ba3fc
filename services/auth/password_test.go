package auth

import (
	"strings"
	"testing"
	"time"
)

func TestHasher(t *testing.T) {
	h := testHasher
	enc := h.Hash("correct horse")
	if !strings.HasPrefix(enc, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Errorf("hash = %q, want a PHC argon2id string", enc)
	}
	if enc == h.Hash("correct horse") {
		t.Error("two hashes of one password are equal: no salt")
	}
	for _, tt := range []struct {
		password string
		want     bool
	}{{"correct horse", true}, {"correct horsE", false}, {"", false}} {
		if got, err := h.Check(tt.password, enc); err != nil || got != tt.want {
			t.Errorf("Check(%q) = %v, %v; want %v", tt.password, got, err, tt.want)
		}
	}
	// Hashes carry their parameters: a hasher of another cost still checks.
	if ok, err := NewHasher(128, 2, 1).Check("correct horse", enc); err != nil || !ok {
		t.Errorf("check with other parameters: %v, %v", ok, err)
	}
	for _, bad := range []string{"", "plain", "$argon2i$v=19$m=64,t=1,p=1$c2FsdA$a2V5", "$argon2id$v=18$m=64,t=1,p=1$c2FsdA$a2V5", "$argon2id$v=19$m=64,t=1,p=1$!!$a2V5", "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$"} {
		if ok, err := h.Check("x", bad); ok || err == nil {
			t.Errorf("Check against %q = %v, %v; want an error", bad, ok, err)
		}
	}
}

func TestLimiter(t *testing.T) {
	c := newClock()
	l := NewLimiter(Rate{Burst: 2, Per: time.Minute}, c.Now)
	for i := range 2 {
		if ok, _ := l.Allow("k"); !ok {
			t.Fatalf("attempt %d refused", i+1)
		}
	}
	if ok, wait := l.Allow("k"); ok || wait != 30*time.Second {
		t.Errorf("3rd attempt: %v, wait %v; want refused, 30s", ok, wait)
	}
	if ok, _ := l.Allow("other"); !ok {
		t.Error("keys share a bucket")
	}
	c.Advance(30 * time.Second)
	if ok, _ := l.Allow("k"); !ok {
		t.Error("not refilled after 30s")
	}
	if ok, _ := NewLimiter(Rate{}, c.Now).Allow("k"); !ok {
		t.Error("a zero rate must not limit")
	}

	// Many distinct keys do not grow the map without bound.
	l.maxKeys = 10
	for i := range 100 {
		c.Advance(time.Minute)
		l.Allow(strings.Repeat("x", i))
	}
	if n := len(l.buckets); n > 10 {
		t.Errorf("buckets = %d, want at most 10", n)
	}
}
