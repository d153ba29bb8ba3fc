// Package localenv starts Meshop's real dependencies as local processes:
// Consul and Jaeger from the binaries `make tools` builds into ./bin, an
// embedded NATS server (nats-server as a library, JetStream on), and
// throwaway PostgreSQL databases. `make run` uses it with the fixed ports of
// the local port plan; tests use it with free ports, so any number of test
// runs can share a machine with `make run`.
//
//	repo/bin/consul ──StartConsul──▶ *Process (agent -server, own data dir)
//	repo/bin/jaeger ──StartJaeger──▶ *Process (OTLP in, query API out)
//	nats-server/v2  ──StartNATS────▶ *NATS in this process (JetStream store in Dir;
//	                                 no anonymous clients, a user per service)
//	TEST_POSTGRES_URL ──Postgres(t)──▶ fresh database, dropped after the test
//
// Functions whose name ends in T take a *testing.T, pick free ports, and
// stop what they started when the test ends. LogBuffer is where a test's
// logger writes while the test reads (every module's tests share it).
package localenv
