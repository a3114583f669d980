# pgbattery agent configuration: node1 of a cluster of two database nodes
# (10.0.0.1, 10.0.0.2) and a witness (10.0.0.3). This node is a database
# node: it runs PostgreSQL and can become the primary.
# Copy to /etc/pgbattery/agent.hcl on 10.0.0.1. Every key is described in
# docs/config.md; check a file with
#   pgbattery agent -validate -config-file=/etc/pgbattery/agent.hcl

node_name = "node1"
# The agent's state (raft, gossip snapshot, secrets) and PostgreSQL's data
# directory live here; dist/pgbattery.service creates it (StateDirectory).
data_dir = "/var/lib/pgbattery"

bind_addr = "10.0.0.1"

# All three agents are raft voters, the witness included.
server           = true
bootstrap_expect = 3
retry_join       = ["10.0.0.2", "10.0.0.3"]

# Gossip encryption: generate one key with `pgbattery keygen` and set the
# same value on every node.
# encrypt = "<output of pgbattery keygen>"

postgres {
  # bin_dir is discovered (pg_config --bindir, else the newest
  # /usr/lib/postgresql/*/bin). PostgreSQL runs as the agent's OS user
  # (postgres under dist/pgbattery.service).
  parameters = {
    shared_buffers  = "1GB"
    max_connections = 200
  }
  # Client access for the application network; the agent adds the rules for
  # its own roles itself.
  hba = ["host all all 10.0.0.0/24 scram-sha-256"]
}

replication {
  # With one standby, quorum mode waits for it on every COMMIT while it is
  # up and lets the primary go on alone (with the witness's vote) while it
  # is not; "strict" would stop writes instead. See docs/config.md.
  mode = "quorum"
}

# Clients connect to port 5432 on any node (the witness too): the gateway
# routes them to the primary. PostgreSQL itself listens on 5433.

# Protect the state-changing HTTP API (switchover, failover, leave...):
# acl {
#   token = "<a long random secret, the same on every node>"
# }
