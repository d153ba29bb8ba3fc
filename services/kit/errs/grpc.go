package errs

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Domain is the google.rpc.ErrorInfo domain of every Meshop error.
const Domain = "meshop"

// ErrorInfo metadata keys: the kind (so a round trip keeps it exactly, even
// where two kinds share a gRPC code) and the JSON of Details.
const (
	metaKind    = "kind"
	metaDetails = "details"
)

// grpcCodes is the gRPC status code of each kind.
var grpcCodes = map[Kind]codes.Code{
	Internal:        codes.Internal,
	Invalid:         codes.InvalidArgument,
	Unauthenticated: codes.Unauthenticated,
	PaymentDeclined: codes.FailedPrecondition,
	Forbidden:       codes.PermissionDenied,
	NotFound:        codes.NotFound,
	Conflict:        codes.Aborted,
	TooLarge:        codes.ResourceExhausted,
	Validation:      codes.InvalidArgument,
	TooManyRequests: codes.ResourceExhausted,
	Unavailable:     codes.Unavailable,
}

// GRPCCode is the gRPC status code for a kind.
func (k Kind) GRPCCode() codes.Code { return grpcCodes[k] }

// Reason is the google.rpc.ErrorInfo reason of err: its Code in upper snake
// case ("out_of_stock" → "OUT_OF_STOCK"), as providers' client packages
// export them. Callers match it against those constants:
// errs.Reason(err) == client.ReasonOutOfStock.
func Reason(err error) string {
	e := As(err)
	if e.Code == "" {
		return strings.ToUpper(e.Kind.String())
	}
	return strings.ToUpper(e.Code)
}

// GRPCStatus makes an *Error a gRPC status (grpc-go calls it when a handler
// returns one): the kind's code, the message, and a google.rpc.ErrorInfo
// whose reason is Reason(e). Internal errors never leak their cause.
func (e *Error) GRPCStatus() *status.Status {
	_, body := ToBody(e)
	info := &errdetails.ErrorInfo{Reason: strings.ToUpper(body.Error.Code), Domain: Domain, Metadata: map[string]string{metaKind: e.Kind.String()}}
	if len(body.Error.Details) > 0 {
		if b, err := json.Marshal(body.Error.Details); err == nil {
			info.Metadata[metaDetails] = string(b)
		}
	}
	st := status.New(e.Kind.GRPCCode(), body.Error.Message)
	if withInfo, err := st.WithDetails(info); err == nil {
		return withInfo
	}
	return st
}

// FromGRPC turns an error from a gRPC call to another service back into an
// *Error with the kind, code (the ErrorInfo reason in lower case), message
// and details the provider sent. Only the provider's own answer (a status
// with a Meshop ErrorInfo) is a refusal: any status made by gRPC, the mesh
// or the network (no route, unavailable, deadline, denied by a proxy) is
// Unavailable, and so is a provider's internal error: to the caller, a
// failing dependency is an unavailable one.
func FromGRPC(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	st, ok := status.FromError(err)
	if !ok {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return Wrap(Unavailable, "upstream_timeout", "the upstream did not answer in time", err)
		}
		return Wrap(Unavailable, "upstream_unavailable", "the upstream could not be reached", err)
	}
	var info *errdetails.ErrorInfo
	for _, d := range st.Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok && i.GetDomain() == Domain {
			info = i
		}
	}
	if info == nil {
		return fromBareStatus(st, err)
	}
	kind, ok := kindNamed(info.GetMetadata()[metaKind])
	if !ok {
		kind = kindForCode(st.Code())
	}
	out := &Error{Kind: kind, Code: strings.ToLower(info.GetReason()), Message: st.Message(), Err: err}
	if kind == Internal {
		out.Kind = Unavailable
	}
	if d := info.GetMetadata()[metaDetails]; d != "" {
		_ = json.Unmarshal([]byte(d), &out.Details)
	}
	return out
}

// fromBareStatus handles a status without our ErrorInfo: one made by gRPC
// itself (no instance, deadline, reset) or by the mesh.
func fromBareStatus(st *status.Status, err error) *Error {
	details := map[string]any{"grpc_code": st.Code().String()}
	if st.Code() == codes.DeadlineExceeded || st.Code() == codes.Canceled {
		return Wrap(Unavailable, "upstream_timeout", "the upstream did not answer in time", err).WithDetails(details)
	}
	return Wrap(Unavailable, "upstream_unavailable", "the upstream could not be reached", err).WithDetails(details)
}

func kindNamed(name string) (Kind, bool) {
	for k, info := range kindInfo {
		if info.code == name {
			return k, true
		}
	}
	return Internal, false
}

// kindForCode maps a gRPC code to the first kind that uses it.
func kindForCode(c codes.Code) Kind {
	for _, k := range []Kind{Invalid, Unauthenticated, PaymentDeclined, Forbidden, NotFound, Conflict, TooManyRequests, Unavailable} {
		if grpcCodes[k] == c {
			return k
		}
	}
	return Unavailable
}
