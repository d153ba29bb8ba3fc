// Package config reads settings from the environment (12-factor) and
// validates them at start. A Reader collects every problem, each naming its
// variable, so a misconfigured process prints all of them at once:
//
//	r := config.FromEnv()
//	addr := r.String("HTTP_ADDR", "127.0.0.1:8080")
//	timeout := r.Duration("MESH_CALL_TIMEOUT", 2*time.Second)
//	if err := r.Err(); err != nil { ... }
package config

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Reader reads typed settings and remembers what was wrong with them.
type Reader struct {
	lookup func(string) (string, bool)
	errs   []error
}

// FromEnv reads from the process environment.
func FromEnv() *Reader { return &Reader{lookup: os.LookupEnv} }

// FromMap reads from m (for tests).
func FromMap(m map[string]string) *Reader {
	return &Reader{lookup: func(k string) (string, bool) { v, ok := m[k]; return v, ok }}
}

// Fail records a problem with key found by the caller's own validation.
func (r *Reader) Fail(key, format string, args ...any) { r.fail(key, format, args...) }

func (r *Reader) fail(key, format string, args ...any) {
	r.errs = append(r.errs, fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, args...)))
}

func (r *Reader) get(key string) (string, bool) {
	v, ok := r.lookup(key)
	v = strings.TrimSpace(v)
	return v, ok && v != ""
}

// String returns the variable, or def when it is unset or empty.
func (r *Reader) String(key, def string) string {
	if v, ok := r.get(key); ok {
		return v
	}
	return def
}

// Required returns the variable and records an error when it is missing.
func (r *Reader) Required(key string) string {
	v, ok := r.get(key)
	if !ok {
		r.fail(key, "required but not set")
	}
	return v
}

// Int returns the variable as an integer within [min, max].
func (r *Reader) Int(key string, def, min, max int) int {
	v, ok := r.get(key)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		r.fail(key, "must be an integer, got %q", v)
		return def
	}
	if n < min || n > max {
		r.fail(key, "must be between %d and %d, got %d", min, max, n)
		return def
	}
	return n
}

// Float returns the variable as a number within [min, max].
func (r *Reader) Float(key string, def, min, max float64) float64 {
	v, ok := r.get(key)
	if !ok {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		r.fail(key, "must be a number, got %q", v)
		return def
	}
	if f < min || f > max {
		r.fail(key, "must be between %g and %g, got %g", min, max, f)
		return def
	}
	return f
}

// Duration returns the variable as a positive Go duration ("250ms", "5s").
func (r *Reader) Duration(key string, def time.Duration) time.Duration {
	v, ok := r.get(key)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		r.fail(key, "must be a duration like 500ms or 5s, got %q", v)
		return def
	}
	if d <= 0 {
		r.fail(key, "must be positive, got %s", v)
		return def
	}
	return d
}

// OneOf returns the variable, which must be one of allowed.
func (r *Reader) OneOf(key, def string, allowed ...string) string {
	v, ok := r.get(key)
	if !ok {
		v = def
	}
	if !slices.Contains(allowed, v) {
		if v == "" {
			r.fail(key, "required, one of %s", strings.Join(allowed, ", "))
		} else {
			r.fail(key, "must be one of %s, got %q", strings.Join(allowed, ", "), v)
		}
	}
	return v
}

// Err is every problem found so far, or nil.
func (r *Reader) Err() error { return errors.Join(r.errs...) }
