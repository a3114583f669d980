# pgbattery agent configuration: node3 of a 3-node cluster (10.0.0.1-10.0.0.3).
# Every node runs PostgreSQL; any of them can become the primary. Copy to
# /etc/pgbattery/agent.hcl on 10.0.0.3 and adjust the addresses. Every key is
# described in docs/config.md; check a file with
#   pgbattery agent -validate -config-file=/etc/pgbattery/agent.hcl

node_name = "node3"
# The agent's state (raft, gossip snapshot, secrets) and PostgreSQL's data
# directory live here; dist/pgbattery.service creates it (StateDirectory).
data_dir = "/var/lib/pgbattery"

# Listen on this node's private address only; the other nodes reach it there.
bind_addr = "10.0.0.3"

# All three are raft voters. bootstrap_expect: the raft group is created
# once three servers have found each other.
server           = true
bootstrap_expect = 3
# The other two nodes' gossip addresses, retried until one answers (so the
# nodes can boot in any order).
retry_join = ["10.0.0.1", "10.0.0.2"]

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
  # Client access for the application network, checked by PostgreSQL behind
  # the gateway; the agent adds the rules for its own roles itself.
  hba = ["host all all 10.0.0.0/24 scram-sha-256"]
}

replication {
  # An acknowledged COMMIT is on at least one standby that can be promoted.
  mode = "quorum"
}

# Clients connect to port 5432 on any node: the gateway routes them to the
# primary (5434: read-only, to a replica). PostgreSQL itself listens on 5433.
gateway {
  auth = "scram"
}

# Protect the state-changing HTTP API (switchover, failover, leave...):
# acl {
#   token = "<a long random secret, the same on every node>"
# }
