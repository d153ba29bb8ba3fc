// Package errs is Meshop's one error type. An *Error carries a stable Kind
// (what went wrong, for the transport to turn into a status), a
// machine-readable Code, a human Message, optional Details and the wrapped
// cause. Only transports turn kinds into HTTP statuses (see Status); the
// JSON body is the one of DESIGN §2:
//
//	{"error":{"code":"out_of_stock","message":"...","details":{...}}}
//
// Code is lower snake case: it is what public error bodies show and what
// services store. Its upper-snake form is the error's Reason: the
// google.rpc.ErrorInfo reason on the gRPC wire (see GRPCStatus, FromGRPC)
// and the value of the Reason constants providers' client packages export.
// The constructors lower-case the code they are given, so a provider passes
// its client constant as is, and a caller matches a refusal by its reason:
//
//	errs.New(errs.Conflict, client.ReasonOutOfStock, "...") // Code "out_of_stock"
//	if errs.Reason(err) == client.ReasonOutOfStock { ... }  // "OUT_OF_STOCK"
package errs

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Kind classifies an error by what the caller can do about it.
type Kind int

// The kinds, each with the HTTP status it becomes.
const (
	Internal        Kind = iota // 500: a bug or an unexpected failure
	Invalid                     // 400: malformed request
	Unauthenticated             // 401: no or bad credentials
	PaymentDeclined             // 402: the payment was declined
	Forbidden                   // 403: authenticated but not allowed
	NotFound                    // 404: no such resource
	Conflict                    // 409: state conflict, idempotency mismatch
	TooLarge                    // 413: request body over the limit
	Validation                  // 422: well-formed but semantically wrong
	TooManyRequests             // 429: rate limited
	Unavailable                 // 503: a dependency is down or too slow
)

var kindInfo = map[Kind]struct {
	status int
	code   string
}{
	Internal:        {http.StatusInternalServerError, "internal"},
	Invalid:         {http.StatusBadRequest, "invalid_request"},
	Unauthenticated: {http.StatusUnauthorized, "unauthenticated"},
	PaymentDeclined: {http.StatusPaymentRequired, "payment_declined"},
	Forbidden:       {http.StatusForbidden, "forbidden"},
	NotFound:        {http.StatusNotFound, "not_found"},
	Conflict:        {http.StatusConflict, "conflict"},
	TooLarge:        {http.StatusRequestEntityTooLarge, "body_too_large"},
	Validation:      {http.StatusUnprocessableEntity, "validation_failed"},
	TooManyRequests: {http.StatusTooManyRequests, "rate_limited"},
	Unavailable:     {http.StatusServiceUnavailable, "unavailable"},
}

// Status is the HTTP status for a kind.
func (k Kind) Status() int { return kindInfo[k].status }

// String is the kind's default code.
func (k Kind) String() string { return kindInfo[k].code }

// KindForStatus maps an HTTP status received from another service back to a
// kind. Any 5xx becomes Unavailable: to the caller, a failing dependency is
// an unavailable one.
func KindForStatus(status int) Kind {
	if status >= 500 {
		return Unavailable
	}
	for k, info := range kindInfo {
		if info.status == status {
			return k
		}
	}
	return Invalid
}

// Error is the error type every layer returns.
type Error struct {
	Kind    Kind
	Code    string         // stable lower snake_case identifier, e.g. "out_of_stock"; Reason(err) is its upper form
	Message string         // safe to show to the client
	Details map[string]any // optional structured context for the client
	Err     error          // the cause; logged, never sent to the client
}

// New returns an error of kind with code and message. The code is stored
// lower-cased, so a client package's Reason constant ("OUT_OF_STOCK") and
// its snake_case code ("out_of_stock") make the same error.
func New(kind Kind, code, message string) *Error {
	return &Error{Kind: kind, Code: strings.ToLower(code), Message: message}
}

// Newf is New (code lower-cased) with a formatted message.
func Newf(kind Kind, code, format string, args ...any) *Error {
	return New(kind, code, fmt.Sprintf(format, args...))
}

// Wrap returns an error of kind with code (lower-cased, as in New) and
// message caused by err.
func Wrap(kind Kind, code, message string, err error) *Error {
	return &Error{Kind: kind, Code: strings.ToLower(code), Message: message, Err: err}
}

// WithDetails returns a copy of e with details added.
func (e *Error) WithDetails(details map[string]any) *Error {
	c := *e
	c.Details = make(map[string]any, len(e.Details)+len(details))
	for k, v := range e.Details {
		c.Details[k] = v
	}
	for k, v := range details {
		c.Details[k] = v
	}
	return &c
}

func (e *Error) Error() string {
	code := e.Code
	if code == "" {
		code = e.Kind.String()
	}
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// As returns the first *Error in err's chain. Errors that are not ours (a
// driver error escaping a store, say) become Internal, with err as cause.
func As(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return Wrap(Internal, "internal", "internal error", err)
}

// KindOf is the kind of err (Internal for foreign errors).
func KindOf(err error) Kind { return As(err).Kind }

// Is reports whether err is an *Error of kind.
func Is(err error, kind Kind) bool {
	var e *Error
	return errors.As(err, &e) && e.Kind == kind
}

// Body is the JSON error body of DESIGN §2.
type Body struct {
	Error BodyError `json:"error"`
}

// BodyError is the inside of Body.
type BodyError struct {
	Code    string         `json:"code"`
	Message string         `json:"message"`
	Details map[string]any `json:"details,omitempty"`
}

// ToBody renders err for a client. Internal errors never leak their cause.
func ToBody(err error) (int, Body) {
	e := As(err)
	code := e.Code
	if code == "" {
		code = e.Kind.String()
	}
	msg := e.Message
	if e.Kind == Internal {
		code, msg = "internal", "internal error"
	}
	return e.Kind.Status(), Body{Error: BodyError{Code: code, Message: msg, Details: e.Details}}
}

// FromBody turns an error response from another service back into an
// *Error, keeping its code, message and details.
func FromBody(status int, b Body) *Error {
	kind := KindForStatus(status)
	if b.Error.Code == "" {
		return Newf(kind, kind.String(), "upstream answered %d", status)
	}
	return &Error{Kind: kind, Code: b.Error.Code, Message: b.Error.Message, Details: b.Error.Details}
}
