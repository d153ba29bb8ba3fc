// Package rpc is the kit's gRPC: the server every service runs beside its
// HTTP API, the go-kit glue its transports and client packages share, and
// the xDS bootstrap of proxyless mode (DESIGN §8).
//
//	server:  listener ──▶ grpc.Server (sidecar mode) or xds.GRPCServer
//	         (proxyless: serves once the control plane sent its inbound
//	         listener) ──▶ recovery ──▶ metrics ──▶ otelgrpc ──▶ go-kit handler
//	errors:  *errs.Error ──GRPCStatus──▶ code + google.rpc.ErrorInfo
//	         ──errs.FromGRPC──▶ *errs.Error at the caller
//
// Every server serves grpc.health.v1.Health: SERVING while it serves,
// NOT_SERVING once it drains.
package rpc
