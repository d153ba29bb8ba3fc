# Consul ACL policy of the Meshop control plane (DESIGN §5, issue 11).
# It reads what it translates (the catalog and health of every service,
# their intentions, the mesh's KV under mesh/) and writes only its own
# state under mesh/state/. It may write its own service, controlplane: a
# leaf certificate of Consul's Connect CA (its xDS server's TLS) needs
# service:write. Services get no policy file: their tokens carry Consul's
# service identity of their own service.
service_prefix "" {
  policy     = "read"
  intentions = "read"
}

service "controlplane" {
  policy = "write"
}

node_prefix "" {
  policy = "read"
}

key_prefix "mesh/" {
  policy = "read"
}

key_prefix "mesh/state/" {
  policy = "write"
}
