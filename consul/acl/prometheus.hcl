# Consul ACL policy of Prometheus in docker compose: it discovers the
# instances to scrape (consul_sd_configs), so it reads the catalog and
# nothing else.
service_prefix "" {
  policy = "read"
}

node_prefix "" {
  policy = "read"
}
