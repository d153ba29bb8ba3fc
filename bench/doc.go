// Package bench holds Meshop's benchmark suite (make bench): the kit HTTP
// stack against bare net/http (kithttp), the kit gRPC stack against bare
// grpc-go (kitgrpc), the checkout path of the whole local system
// (servicepath), and the driver that runs everything, including the
// control plane's xdsload, and writes BENCHMARKS.md (cmd/benchsuite).
package bench
