# Every key of the agent configuration. @BIN@ and @DIR@ are replaced by the
# test (TestFullExample) with directories that exist.
node_name        = "node1"
data_dir         = "/var/lib/pgbattery"
bind_addr        = "127.0.0.2"
advertise_addr   = "127.0.0.2"
server           = true
bootstrap_expect = 3
join             = ["127.0.0.3"]
retry_join       = ["127.0.0.3", "127.0.0.4:8301", "[::1]:8301"]
retry_interval   = "2s"
retry_max        = 10
rejoin           = true
encrypt          = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
log_level        = "DEBUG"
log_json         = true
tags = {
  rack = "r1"
  dc   = "east"
}

ports {
  gateway           = 6432
  gateway_read_only = -1
  postgres          = 6433
  http              = 9432
  serf              = 9301
  raft              = 9300
}

postgres {
  enabled = true
  bin_dir = "@BIN@"
  os_user = "postgres"
  parameters = {
    shared_buffers             = "256MB"
    max_connections            = 200
    log_min_duration_statement = "250ms"
    "pg_stat_statements.max"   = 5000
  }
  hba = [
    "hostssl all all 10.0.0.0/8 scram-sha-256",
  ]
}

replication {
  mode                = "strict"
  max_lag_on_failover = "32MB"
}

gossip {
  profile         = "local"
  probe_interval  = "200ms"
  probe_timeout   = "100ms"
  suspicion_mult  = 3
  gossip_interval = "50ms"
  retransmit_mult = 4
}

raft {
  multiplier = 2
}

failover {
  lease                = "8s"
  lease_renew_interval = "2s"
  hold_down            = "10s"
  no_failover          = true
  failover_priority    = 5
  min_free_space       = "128MB"
}

gateway {
  max_connections   = 500
  hold_timeout      = "20s"
  idle_timeout      = "10m"
  auth              = "trust"
  read_only_max_lag = "1GB"
  read_only_balance = "least-connections"
}

switchover {
  drain_timeout = "15s"
}

telemetry {
  prometheus_retention_time = "2m"
  statsd_address            = "127.0.0.1:8125"
  statsite_address          = "127.0.0.1:8126"
  disable_hostname          = true
  metrics_prefix            = "pgb"
}

tls {
  ca_file         = "@DIR@/ca.pem"
  cert_file       = "@DIR@/cert.pem"
  key_file        = "@DIR@/key.pem"
  verify_incoming = true
  gateway {
    cert_file = "@DIR@/gw-cert.pem"
    key_file  = "@DIR@/gw-key.pem"
    required  = true
    client_ca_file = "@DIR@/ca.pem"
    client_cert    = "verify-full"
  }
  http {
    enabled = true
  }
}

limits {
  http_max_rps = 50.5
  http_burst   = 80
}

acl {
  token               = "s3cret"
  reads_require_token = true
}

debug {
  clock_control = false
}
