// Package paging is the one way Meshop's list endpoints page (DESIGN §2):
//
//	GET /things?limit=20&cursor=<opaque>  ──▶  {"items":[...], "next_cursor":"<opaque>"}
//
// limit is 1..MaxLimit (DefaultLimit when absent); the cursor is the last id
// of the previous page, versioned and base64url-encoded so clients treat it
// as opaque and its encoding can change; next_cursor is absent on the last
// page. Stores list by id (ids are time-ordered UUIDv7 or stable slugs),
// fetching Limit+1 rows so Build knows whether another page follows.
package paging

import (
	"encoding/base64"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/meshop/meshop/services/kit/errs"
)

// Limits of a page.
const (
	DefaultLimit = 20
	MaxLimit     = 100
)

// Request is a decoded page request.
type Request struct {
	Limit int    // 1..MaxLimit
	After string // the last id of the previous page; "" for the first page
}

// Page is a page of items in the DESIGN §2 list shape.
type Page[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor,omitempty"`
}

const cursorPrefix = "v1:"

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// FromQuery reads limit and cursor from a request's query; a bad value is
// a 400 naming it.
func FromQuery(q url.Values) (Request, error) {
	req := Request{Limit: DefaultLimit}
	if q.Has("limit") {
		n, err := strconv.Atoi(q.Get("limit"))
		if err != nil || n < 1 || n > MaxLimit {
			return Request{}, errs.Newf(errs.Invalid, "invalid_limit", "limit must be an integer between 1 and %d", MaxLimit)
		}
		req.Limit = n
	}
	if q.Has("cursor") {
		after, ok := decodeCursor(q.Get("cursor"))
		if !ok {
			return Request{}, errs.New(errs.Invalid, "invalid_cursor", "cursor is not one this API returned; omit it for the first page")
		}
		req.After = after
	}
	return req, nil
}

// Build makes the page from items fetched with limit Limit+1: a surplus
// item means another page follows, whose cursor is the last kept id.
func Build[T any](items []T, req Request, idOf func(T) string) Page[T] {
	if items == nil {
		items = []T{}
	}
	if len(items) <= req.Limit {
		return Page[T]{Items: items}
	}
	items = items[:req.Limit]
	return Page[T]{Items: items, NextCursor: encodeCursor(idOf(items[req.Limit-1]))}
}

func encodeCursor(lastID string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorPrefix + lastID))
}

func decodeCursor(cursor string) (string, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil {
		return "", false
	}
	id, ok := strings.CutPrefix(string(raw), cursorPrefix)
	return id, ok && idPattern.MatchString(id)
}
