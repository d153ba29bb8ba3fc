// Package intern shares one copy of equal values among the many records
// of an answer: a service's instances usually carry the same tags, meta
// and upstreams, and each copy would otherwise stay in memory for as long
// as the service does.
package intern

// maxValues bounds the distinct values a Set compares with, so that a
// set of values that all differ costs linear time.
const maxValues = 4

// Set remembers up to maxValues distinct values.
type Set[T any] struct {
	values []T
	equal  func(a, b T) bool
}

// NewSet returns a Set comparing values with equal.
func NewSet[T any](equal func(a, b T) bool) *Set[T] { return &Set[T]{equal: equal} }

// Get returns the value of the set equal to v, or v itself (remembered
// while the set holds fewer than maxValues values). The values it returns
// are shared: nobody may modify them.
func (s *Set[T]) Get(v T) T {
	for _, x := range s.values {
		if s.equal(x, v) {
			return x
		}
	}
	if len(s.values) < maxValues {
		s.values = append(s.values, v)
	}
	return v
}

// Len is how many distinct values the set holds.
func (s *Set[T]) Len() int { return len(s.values) }
