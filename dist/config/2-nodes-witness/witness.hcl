# pgbattery agent configuration: witness of a cluster of two database nodes
# (10.0.0.1, 10.0.0.2) and a witness (10.0.0.3). This node is the witness:
# it runs no PostgreSQL, only gossip and a raft vote, so that the two
# database nodes keep a majority (2 of 3) when either fails. It needs little
# CPU, memory or disk: a small VM or a spare machine will do.
# Copy to /etc/pgbattery/agent.hcl on 10.0.0.3. Every key is described in
# docs/config.md; check a file with
#   pgbattery agent -validate -config-file=/etc/pgbattery/agent.hcl

node_name = "witness"
# The agent's state (raft, gossip snapshot, secrets) lives here;
# dist/pgbattery.service creates it (StateDirectory).
data_dir = "/var/lib/pgbattery"

bind_addr = "10.0.0.3"

# All three agents are raft voters, the witness included.
server           = true
bootstrap_expect = 3
retry_join       = ["10.0.0.1", "10.0.0.2"]

# Gossip encryption: generate one key with `pgbattery keygen` and set the
# same value on every node.
# encrypt = "<output of pgbattery keygen>"

postgres {
  # No PostgreSQL on this node: it gossips and votes. Its gateway (port
  # 5432, like every agent's) still routes clients to the primary.
  enabled = false
}

# Protect the state-changing HTTP API (switchover, failover, leave...):
# acl {
#   token = "<a long random secret, the same on every node>"
# }
