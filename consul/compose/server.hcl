# The Consul server of docker compose (DESIGN §5, issue 11): one server
# agent, ACLs on with default deny, its HTTP API on the compose network
# over TLS only. compose/start.sh makes the certificates and passes the
# initial management token (.env's CONSUL_MANAGEMENT_TOKEN) on the
# command line, so no secret is in this file.
datacenter       = "dc1"
node_name        = "consul"
server           = true
bootstrap_expect = 1
log_level        = "warn"

ui_config { enabled = true }
connect { enabled = true }

# HTTPS (8501) for every client; plain HTTP (8500) on the container's
# loopback only, for its health check and `docker compose exec consul
# consul ...`. Consul's own gRPC (its xDS server) and DNS are off: the
# mesh's xDS is ours, and containers find each other by Docker's DNS.
client_addr = "0.0.0.0"
addresses {
  http = "127.0.0.1"
}
ports {
  http     = 8500
  https    = 8501
  grpc     = -1
  grpc_tls = -1
  dns      = -1
}

tls {
  defaults {
    ca_file         = "/consul/ca/consul-agent-ca.pem"
    cert_file       = "/consul/tls/server.pem"
    key_file        = "/consul/tls/server-key.pem"
    verify_outgoing = true
  }
  internal_rpc {
    verify_server_hostname = true
  }
}

acl {
  enabled        = true
  default_policy = "deny"
  # tokens { initial_management, agent }: from start.sh's command line.
}
