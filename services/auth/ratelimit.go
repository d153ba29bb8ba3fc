package auth

import (
	"math"
	"sync"
	"time"
)

// Rate is a token bucket's shape: Burst attempts at once, refilled at
// Burst per Per.
type Rate struct {
	Burst int
	Per   time.Duration
}

// Limiter keeps one token bucket per key (an email, a client address) in
// memory. Each auth instance limits on its own; with n instances a client
// gets at most n times the rate, which still defeats online guessing.
type Limiter struct {
	rate    Rate
	now     func() time.Time
	maxKeys int

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// NewLimiter returns a limiter allowing rate per key. now is the clock
// (time.Now when nil).
func NewLimiter(rate Rate, now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	return &Limiter{rate: rate, now: now, maxKeys: 100_000, buckets: map[string]*bucket{}}
}

// Allow takes a token from key's bucket. When it is empty it reports false
// and how long until the next token.
func (l *Limiter) Allow(key string) (bool, time.Duration) {
	if l.rate.Burst <= 0 {
		return true, 0 // limiting disabled
	}
	perToken := l.rate.Per / time.Duration(l.rate.Burst)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.maxKeys {
			l.sweep(now)
		}
		b = &bucket{tokens: float64(l.rate.Burst), at: now}
		l.buckets[key] = b
	}
	b.tokens = math.Min(float64(l.rate.Burst), b.tokens+float64(now.Sub(b.at))/float64(perToken))
	b.at = now
	if b.tokens < 1 {
		return false, time.Duration((1 - b.tokens) * float64(perToken))
	}
	b.tokens--
	return true, 0
}

// sweep forgets buckets that have refilled (they equal a new bucket), so
// a stream of distinct keys cannot grow the map without bound.
func (l *Limiter) sweep(now time.Time) {
	for k, b := range l.buckets {
		if now.Sub(b.at) >= l.rate.Per {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= l.maxKeys { // all busy: drop everything rather than grow
		clear(l.buckets)
	}
}
