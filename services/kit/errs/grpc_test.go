package errs

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestGRPCRoundTripKeepsKindReasonMessageAndDetails(t *testing.T) {
	for kind := range kindInfo {
		if kind == Internal {
			continue
		}
		sent := New(kind, "out_of_stock", "only 2 left").WithDetails(map[string]any{"available": 2.0})
		st := sent.GRPCStatus()
		if st.Code() != kind.GRPCCode() {
			t.Errorf("%v: code %v, want %v", kind, st.Code(), kind.GRPCCode())
		}
		got := As(FromGRPC(st.Err()))
		if got.Kind != kind || got.Code != "out_of_stock" || got.Message != "only 2 left" || got.Details["available"] != 2.0 {
			t.Errorf("%v: round trip gave %+v", kind, got)
		}
		if Reason(got) != "OUT_OF_STOCK" {
			t.Errorf("%v: Reason = %q", kind, Reason(got))
		}
	}
}

func TestInternalErrorsDoNotLeakAndAreUnavailableToTheCaller(t *testing.T) {
	st := Wrap(Internal, "db_broken", "secret detail", errors.New("pq: password=x")).GRPCStatus()
	if st.Code() != codes.Internal || st.Message() != "internal error" {
		t.Fatalf("status = %v", st)
	}
	if got := As(FromGRPC(st.Err())); got.Kind != Unavailable {
		t.Errorf("caller sees %v, want Unavailable", got.Kind)
	}
}

func TestStatusesNotFromAProviderAreNeverARefusal(t *testing.T) {
	for _, err := range []error{
		status.Error(codes.PermissionDenied, "RBAC: access denied"), // the mesh said no
		status.Error(codes.InvalidArgument, "no reason attached"),
		status.Error(codes.Unavailable, "no healthy upstream"),
		status.Error(codes.DeadlineExceeded, "deadline"),
		context.DeadlineExceeded,
		errors.New("connection refused"),
	} {
		if got := As(FromGRPC(err)); got.Kind != Unavailable {
			t.Errorf("FromGRPC(%v) kind = %v, want Unavailable", err, got.Kind)
		}
	}
	if FromGRPC(nil) != nil {
		t.Error("FromGRPC(nil) != nil")
	}
}
