package httpserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/go-kit/kit/endpoint"

	"github.com/meshop/meshop/services/kit/errs"
)

// MaxBodyBytes caps every JSON request body.
const MaxBodyBytes = 64 << 10

// DecodeJSON strictly decodes r's body into v: one JSON value, no unknown
// fields, at most MaxBodyBytes. Each failure is an *errs.Error saying what
// was wrong and where, so the client gets a precise 400 (413 when too big).
func DecodeJSON(r *http.Request, v any) error {
	b := bodyBuffers.Get().(*bodyBuffer)
	defer b.release()
	body, err := b.read(r.Body)
	if err != nil {
		return errs.Wrap(errs.Invalid, "unreadable_body", "could not read the request body", err)
	}
	if len(body) > MaxBodyBytes {
		return errs.Newf(errs.TooLarge, "body_too_large", "request body is over %d bytes", MaxBodyBytes)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return errs.New(errs.Invalid, "empty_body", "request body is empty; a JSON object is required")
	}
	b.reader.Reset(body)
	dec := json.NewDecoder(&b.reader)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if dec.More() {
		return errs.New(errs.Invalid, "malformed_json", "request body has data after the JSON value")
	}
	return nil
}

// bodyBuffers recycles DecodeJSON's read buffers: a body is read without
// allocating. Decoded values never alias the buffer (encoding/json copies
// what it stores), so it is reused as soon as DecodeJSON returns.
var bodyBuffers = sync.Pool{New: func() any { return new(bodyBuffer) }}

// bodyBuffer is one request body in memory, with the readers around it.
type bodyBuffer struct {
	buf    bytes.Buffer
	limit  io.LimitedReader
	reader bytes.Reader
}

// read reads body into the buffer, up to MaxBodyBytes+1 bytes so that an
// oversized body shows as one.
func (b *bodyBuffer) read(body io.Reader) ([]byte, error) {
	b.limit = io.LimitedReader{R: body, N: MaxBodyBytes + 1}
	_, err := b.buf.ReadFrom(&b.limit)
	return b.buf.Bytes(), err
}

// release empties b and returns it to the pool.
func (b *bodyBuffer) release() {
	b.limit.R = nil
	b.reader.Reset(nil)
	b.buf.Reset()
	bodyBuffers.Put(b)
}

func jsonError(err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return errs.Newf(errs.Invalid, "malformed_json", "malformed JSON at byte %d: %v", syntax.Offset, err).
			WithDetails(map[string]any{"offset": syntax.Offset})
	case errors.As(err, &typ):
		return errs.Newf(errs.Invalid, "wrong_type", "field %q must be %s, got %s", typ.Field, typ.Type, typ.Value).
			WithDetails(map[string]any{"field": typ.Field})
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errs.New(errs.Invalid, "malformed_json", "request body ends in the middle of a JSON value")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return errs.Newf(errs.Invalid, "unknown_field", "unknown field %q", field).
			WithDetails(map[string]any{"field": field})
	default:
		return errs.Wrap(errs.Invalid, "malformed_json", "request body is not valid JSON", err)
	}
}

// StatusCoder is a response that chooses its own success status (201).
type StatusCoder interface{ StatusCode() int }

// HeaderSetter is a response that adds headers (Location, Idempotent-Replayed).
type HeaderSetter interface{ Headers() http.Header }

// EncodeJSON is the go-kit response encoder shared by every service: a
// response whose Failed() error is non-nil is written as an error;
// otherwise it is written as JSON with its StatusCode (default 200).
func EncodeJSON(ctx context.Context, w http.ResponseWriter, response any) error {
	if f, ok := response.(endpoint.Failer); ok && f.Failed() != nil {
		EncodeError(ctx, f.Failed(), w)
		return nil
	}
	if h, ok := response.(HeaderSetter); ok {
		for k, vs := range h.Headers() {
			for _, v := range vs {
				w.Header().Add(k, v)
			}
		}
	}
	status := http.StatusOK
	if sc, ok := response.(StatusCoder); ok {
		status = sc.StatusCode()
	}
	writeJSON(w, status, response)
	return nil
}

// EncodeError writes err as the JSON error body of DESIGN §2 with its
// status. It is the go-kit ServerErrorEncoder of every service.
func EncodeError(_ context.Context, err error, w http.ResponseWriter) {
	status, body := errs.ToBody(err)
	writeJSON(w, status, body)
}

// NotFound answers unmatched app paths with the JSON error body.
func NotFound(w http.ResponseWriter, r *http.Request) {
	EncodeError(r.Context(), errs.Newf(errs.NotFound, "no_route", "no route for %s %s", r.Method, r.URL.Path), w)
}
